"""Episodic meta-training: sample episodes, take a method's ``train_step``, validate, keep the best.

The loop is the same for every method; a method changes how one step learns
(``episode_loss`` / ``train_step``), never the loop. Validation uses a fixed set
of episodes from held-out classes, so "best" compares like with like.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from fewshot_sdk.config import StrictModel
from fewshot_sdk.data.episodes import EpisodeSampler
from fewshot_sdk.data.labelled import LabelledImages
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.train.evaluate import evaluate_episodes


class TrainConfig(StrictModel):
    """Meta-training settings (printed into every checkpoint trained with them)."""

    episodes: int = Field(5000, ge=1, description="meta-updates")
    n_way: int = Field(60, ge=2)
    k_shot: int = Field(5, ge=1)
    q_queries: int = Field(5, ge=1)
    meta_batch: int = Field(1, ge=1, description="episodes per meta-update")
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_decay_every: int = Field(2000, ge=1, description="episodes between LR halvings (StepLR)")
    lr_decay: float = Field(0.5, gt=0, le=1)
    val_every: int = Field(500, ge=1)
    val_episodes: int = Field(200, ge=1)
    val_n_way: int = Field(5, ge=2)
    val_k_shot: int = Field(1, ge=1)
    val_q_queries: int = Field(15, ge=1)
    seed: int = 0
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
    best_val_accuracy: float
    best_episode: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; one line when the device does not exist here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} asked for, but this torch build or machine has no usable CUDA: use cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA devices exist")
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"device {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device


def make_optimizer(learner: Learner, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in learner.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def meta_train(
    learner: Learner,
    train_data: LabelledImages,
    val_data: LabelledImages,
    config: TrainConfig,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
    on_new_best: Callable[[Learner], None] | None = None,
    validate_initial: bool = False,
) -> TrainResult:
    """Train ``learner`` in place; at the end it holds the weights of the best validation score.

    ``on_new_best`` is called with the learner each time validation improves (the CLI
    writes the checkpoint then, so an interrupted run keeps its best weights).
    ``validate_initial`` scores the starting weights as episode 0, so continuing from a
    trained checkpoint can never end worse than it started (on validation).
    """
    seed_everything(config.seed)
    device = resolve_device(config.device)
    learner.to(device)
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
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        with learner.backbone.starting_at(config.frozen_stages):
            return _meta_train(
                learner, train_data, val_data, config, device, on_progress, on_new_best, validate_initial
            )
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


def set_training_mode(learner: Learner, config: TrainConfig) -> None:
    learner.train()
    if config.batchnorm == "frozen":
        for module in learner.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _meta_train(
    learner: Learner,
    train_data: LabelledImages,
    val_data: LabelledImages,
    config: TrainConfig,
    device: torch.device,
    on_progress: Callable[[int, dict[str, float]], None] | None,
    on_new_best: Callable[[Learner], None] | None,
    validate_initial: bool,
) -> TrainResult:
    try:
        sampler = EpisodeSampler(train_data, config.n_way, config.k_shot, config.q_queries, seed=config.seed)
    except InputError as exc:
        raise InputError(
            f"training episodes (--n-way {config.n_way} --k-shot {config.k_shot} --q-queries {config.q_queries}) "
            f"do not fit the {train_data.num_classes} training classes: {exc}; lower those flags"
        ) from None
    try:  # refuse a small validation split now, not at the first validation
        EpisodeSampler(val_data, config.val_n_way, config.val_k_shot, config.val_q_queries)
    except InputError as exc:
        raise InputError(
            f"validation episodes (--val-n-way {config.val_n_way} --val-k-shot {config.val_k_shot}, "
            f"{config.val_q_queries} queries per class) do not fit the {val_data.num_classes} validation classes: "
            f"{exc}; lower those flags or add classes"
        ) from None
    optimizer = make_optimizer(learner, config)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_decay_every, gamma=config.lr_decay)

    best_accuracy, best_episode, best_state = -1.0, 0, copy.deepcopy(learner.state_dict())
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    running = {"loss": 0.0, "accuracy": 0.0}

    def validate(episode_index: int) -> None:
        nonlocal best_accuracy, best_episode, best_state
        learner.calibrate(train_data)  # statistics the method keeps of its training data, for these weights
        score = evaluate_episodes(
            learner,
            val_data,
            config.val_n_way,
            config.val_k_shot,
            config.val_q_queries,
            config.val_episodes,
            seed=config.seed + 1,
            split="val",
        )
        val_accuracy, val_ci = score.accuracy, score.ci95
        trained = {"loss": running["loss"], "train_accuracy": running["accuracy"]} if episode_index else {}
        record = {
            "episode": episode_index,
            **trained,  # nothing to report before the first update
            "val_accuracy": val_accuracy,
            "val_ci95": val_ci,
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        if val_accuracy > best_accuracy:
            best_accuracy, best_episode = val_accuracy, episode_index
            best_state = copy.deepcopy(learner.state_dict())
            if on_new_best is not None and episode_index > 0:
                on_new_best(learner)
        if on_progress is not None:
            on_progress(episode_index, {**record, "best_val_accuracy": best_accuracy})

    if validate_initial:  # a warm start keeps its starting weights unless training beats them
        validate(0)
    for episode_index in range(1, config.episodes + 1):
        set_training_mode(learner, config)
        batch = [sampler.sample().to(device) for _ in range(config.meta_batch)]
        metrics = learner.train_step(batch, optimizer)
        scheduler.step()
        for key in running:
            running[key] = 0.95 * running[key] + 0.05 * metrics[key] if episode_index > 1 else metrics[key]
        if episode_index % config.val_every == 0 or episode_index == config.episodes:
            validate(episode_index)
        elif on_progress is not None:
            on_progress(episode_index, {"loss": running["loss"], "train_accuracy": running["accuracy"]})
    learner.load_state_dict(best_state)
    learner.eval()
    return TrainResult(best_accuracy, best_episode, history, time.perf_counter() - start)
