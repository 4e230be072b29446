"""Episodic meta-training: sample episodes, take a method's meta-update, validate, keep the best.

One loop serves every method and every task family. A method changes how one meta-update learns
(``episode_loss`` / ``meta_gradients`` / ``outer_update``), never the loop; a task family (classification episodes
from labelled images, MAML's sinusoids) is an :class:`Objective`: where episodes come from, and the validation figure
that decides which weights are kept (accuracy, higher is better; MSE, lower is better). Validation uses a fixed set
of held-out episodes, so "best" compares like with like.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch
from pydantic import Field
from torch.optim.lr_scheduler import StepLR

import fewshot_sdk.train.distributed as distributed
from fewshot_sdk.config import StrictModel
from fewshot_sdk.data.episodes import Episode, EpisodeSampler
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.errors import InputError
from fewshot_sdk.io.zoo import check_device
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.train.evaluate import evaluate_episodes, in_eval_mode


class TrainConfig(StrictModel):
    """Meta-training settings (printed into every checkpoint trained with them)."""

    episodes: int = Field(5000, ge=1, description="meta-updates")
    n_way: int = Field(60, ge=2)
    k_shot: int = Field(
        1, ge=1, description="support examples per class (1: the shipped Omniglot models, Snell et al.)"
    )
    q_queries: int = Field(5, ge=1)
    meta_batch: int = Field(1, ge=1, description="episodes per meta-update")
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0)
    lr_decay_every: int = Field(2000, ge=1, description="episodes between LR halvings (StepLR)")
    lr_decay: float = Field(0.5, gt=0, le=1)
    val_every: int = Field(500, ge=1)
    val_episodes: int = Field(200, ge=1)
    val_n_way: int = Field(5, ge=2)
    val_k_shot: int = Field(1, ge=1)
    val_q_queries: int = Field(15, ge=1)
    val_within_group: bool = Field(
        False,
        description="each validation episode draws its classes from one group (the class name's part before '/': "
        "an Omniglot alphabet), as Lake's one-shot runs do",
    )
    seed: int = Field(0, ge=0, lt=2**63, description="torch takes seeds below 2**63")
    device: str = "auto"
    frozen_stages: int = Field(
        0,
        ge=0,
        description="backbone stages from the input kept at their starting weights; their outputs are computed "
        "once per image and cached, so only the rest is run in each episode (fine-tuning a pretrained backbone)",
    )
    batchnorm: Literal["train", "frozen"] = Field(
        "train",
        description="frozen: batch norm keeps its running statistics during training (small episodes of a "
        "pretrained backbone would otherwise re-estimate them badly); its scale and shift still learn",
    )


@dataclass
class TrainResult:
    metric: str  # the validation figure: "accuracy" or "mse"
    best_value: float
    best_episode: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class Objective(Protocol):
    """A task family to meta-train on: its training episodes and its validation figure."""

    #: the figure ``validate`` returns, as it appears in logs and history ("accuracy", "mse")
    metric: str
    higher_is_better: bool

    def sample(self) -> Episode:
        """The next training episode (seeded: a run is reproducible)."""
        ...

    def validate(self, learner: Learner) -> tuple[float, float]:
        """The validation figure of the learner's current weights, mean and 95% CI, on fixed episodes."""
        ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; one line when the device does not exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(name, "auto, cpu, cuda or cuda:N")


def make_optimizer(learner: Learner, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in learner.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def prepare(learner: Learner, config: TrainConfig) -> None:
    """Seed every generator (per rank) and move the learner to the run's device."""
    ranks = distributed.current()
    seed_everything(distributed.rank_seed(config.seed, ranks))
    learner.to(resolve_device(distributed.rank_device(config.device, ranks)))


class EpisodeObjective:
    """N-way K-shot classification episodes from labelled images; validation accuracy on held-out classes."""

    metric = "accuracy"
    higher_is_better = True

    def __init__(self, train_data: LabelledImages, val_data: LabelledImages, config: TrainConfig) -> None:
        try:
            self.sampler = EpisodeSampler(
                train_data, config.n_way, config.k_shot, config.q_queries, seed=distributed.rank_seed(config.seed)
            )
        except InputError as exc:
            raise InputError(
                f"training episodes (--n-way {config.n_way} --k-shot {config.k_shot} --q-queries "
                f"{config.q_queries}) do not fit the {train_data.num_classes} training classes: {exc}; "
                "lower those flags"
            ) from None
        try:  # refuse a small validation split now, not at the first validation
            EpisodeSampler(
                val_data,
                config.val_n_way,
                config.val_k_shot,
                config.val_q_queries,
                within_group=config.val_within_group,
            )
        except InputError as exc:
            raise InputError(
                f"validation episodes (--val-n-way {config.val_n_way} --val-k-shot {config.val_k_shot}, "
                f"{config.val_q_queries} queries per class) do not fit the {val_data.num_classes} validation "
                f"classes: {exc}; lower those flags or add classes"
            ) from None
        self.train_data, self.val_data, self.config = train_data, val_data, config

    def check_fits(self, learner: Learner) -> None:
        """Adapt to one validation support set now: a model that refuses its shape fails before training."""
        config = self.config
        episode = EpisodeSampler(self.val_data, config.val_n_way, config.val_k_shot, 1).sample()
        try:
            with in_eval_mode(learner):
                learner.adapt_tensors(episode.support_x, episode.support_y, episode.n_way)
        except InputError as exc:
            raise InputError(
                f"validation episodes (--val-n-way {config.val_n_way} --val-k-shot {config.val_k_shot}) do not fit "
                f"this model: {exc}; lower --val-n-way"
            ) from None

    def sample(self) -> Episode:
        return self.sampler.sample()

    def validate(self, learner: Learner) -> tuple[float, float]:
        learner.calibrate(self.train_data)  # statistics the method keeps of its training data, for these weights
        config = self.config
        score = evaluate_episodes(
            learner,
            self.val_data,
            config.val_n_way,
            config.val_k_shot,
            config.val_q_queries,
            config.val_episodes,
            seed=config.seed + 1,
            split="val",
            within_group=config.val_within_group,
        )
        return score.accuracy, score.ci95


def meta_train(
    learner: Learner,
    train_data: LabelledImages,
    val_data: LabelledImages,
    config: TrainConfig,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
    on_new_best: Callable[[Learner], None] | None = None,
    validate_initial: bool = False,
) -> TrainResult:
    """Meta-train a classifier on labelled images; at the end it holds the weights of the best validation score.

    ``on_new_best`` is called with the learner each time validation improves (the CLI writes the checkpoint then, so
    an interrupted run keeps its best weights). ``validate_initial`` scores the starting weights as episode 0, so
    continuing from a trained checkpoint can never end worse than it started (on validation).
    """
    prepare(learner, config)
    stages = learner.backbone.stages
    if config.frozen_stages > len(stages):
        raise InputError(
            f"frozen_stages={config.frozen_stages} but the {learner.backbone_config.name} backbone has "
            f"{len(stages)} stages"
        )
    frozen = [p for stage in stages[: config.frozen_stages] for p in stage.parameters() if p.requires_grad]
    if config.frozen_stages:  # the frozen prefix is a fixed function of each image: run it once
        train_data, val_data = (
            LabelledImages(learner.backbone.stage_outputs(d.images, config.frozen_stages), d.labels, d.class_names)
            for d in (train_data, val_data)
        )
    objective = EpisodeObjective(train_data, val_data, config)
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        with learner.backbone.starting_at(config.frozen_stages):
            objective.check_fits(learner)
            return run_training(learner, objective, config, on_progress, on_new_best, validate_initial)
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


def set_training_mode(learner: Learner, config: TrainConfig) -> None:
    learner.train()
    if config.batchnorm == "frozen":
        for module in learner.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


class RunningMetrics:
    """Exponential moving averages of what meta-updates report (the first update sets them)."""

    def __init__(self, decay: float = 0.95) -> None:
        self.decay = decay
        self.values: dict[str, float] = {}

    def update(self, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            old = self.values.get(key)
            self.values[key] = value if old is None else self.decay * old + (1 - self.decay) * value

    def as_record(self) -> dict[str, float]:
        """``loss`` and, where the objective has one, ``train_accuracy``."""
        return {("train_" + k if k != "loss" else k): v for k, v in self.values.items()}


def run_training(
    learner: Learner,
    objective: Objective,
    config: TrainConfig,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
    on_new_best: Callable[[Learner], None] | None = None,
    validate_initial: bool = False,
) -> TrainResult:
    """The one meta-training loop: ``config.episodes`` meta-updates, validating every ``val_every``.

    The learner ends with the weights of the best validation figure (``higher_is_better`` says which way is best).
    """
    device = learner.device
    ranks = distributed.current()
    per_rank = distributed.check_world(config.meta_batch, ranks)
    learner.check_can_train(config.episodes)
    distributed.broadcast_state(learner)  # every rank starts from rank 0's weights
    optimizer = make_optimizer(learner, config) if learner.uses_outer_optimizer else None
    scheduler = StepLR(optimizer, config.lr_decay_every, gamma=config.lr_decay) if optimizer is not None else None
    key = f"val_{objective.metric}"
    worst = -math.inf if objective.higher_is_better else math.inf
    best_value, best_episode, best_state = worst, 0, copy.deepcopy(learner.state_dict())
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    running = RunningMetrics()

    def validate(episode_index: int) -> None:
        nonlocal best_value, best_episode, best_state
        if not ranks.is_main:  # rank 0 validates and keeps the best; the others go on to the next update
            return
        value, ci95 = objective.validate(learner)
        record = {
            "episode": episode_index,
            **(running.as_record() if episode_index else {}),  # nothing to report before the first update
            key: value,
            "val_ci95": ci95,
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        improved = value > best_value if objective.higher_is_better else value < best_value
        if improved:
            best_value, best_episode = value, episode_index
            best_state = copy.deepcopy(learner.state_dict())
        if on_progress is not None:  # before on_new_best, so what it writes can include this validation
            on_progress(episode_index, {**record, f"best_{key}": best_value})
        if improved and on_new_best is not None and episode_index > 0:
            on_new_best(learner)

    if validate_initial:  # a warm start keeps its starting weights unless training beats them
        validate(0)
        distributed.broadcast_buffers(learner)
    for episode_index in range(1, config.episodes + 1):
        set_training_mode(learner, config)
        batch = [objective.sample().to(device) for _ in range(per_rank)]
        running.update(learner.train_step(batch, optimizer, reduce_gradients=distributed.average_gradients))
        if scheduler is not None:
            scheduler.step()
        if episode_index % config.val_every == 0 or episode_index == config.episodes:
            validate(episode_index)
            distributed.broadcast_buffers(learner)  # statistics rank 0's validation computed, on every rank
        elif on_progress is not None and ranks.is_main:
            on_progress(episode_index, running.as_record())
    if ranks.is_main:
        learner.load_state_dict(best_state)
    distributed.broadcast_state(learner)  # the kept weights, on every rank
    best_value, best_episode, history = distributed.broadcast_object((best_value, best_episode, history))
    learner.eval()
    return TrainResult(objective.metric, best_value, best_episode, history, time.perf_counter() - start)
