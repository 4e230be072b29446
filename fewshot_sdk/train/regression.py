"""Meta-training and evaluation on MAML's sinusoid regression family (Finn et al. 2017, sec. 5.1).

The same ``train_step`` as classification, fed :class:`SinusoidTasks` episodes;
validation and evaluation report the mean squared error on the query points
after a given number of adaptation steps, mean ± 95% CI over seeded tasks, as
the paper's Figure 2 and Table of K-shot MSE do.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import torch

from fewshot_sdk.config import TrainingInfo
from fewshot_sdk.data.sinusoid import SinusoidTasks
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.train.evaluate import mean_ci95
from fewshot_sdk.train.loop import TrainConfig, TrainResult, make_optimizer, resolve_device, seed_everything

SINUSOID = "sinusoid"


def is_sinusoid(data: object) -> bool:
    return str(data) == SINUSOID


def check_regressor(learner: Learner) -> None:
    if getattr(getattr(learner, "config", None), "task", None) != "regression":
        raise InputError(
            f"the sinusoid tasks need a regression learner: create it with task='regression' and the mlp backbone "
            f"(e.g. --set task=regression --backbone mlp); {learner.method!r} is configured for classification"
        )


def sinusoid_mse(
    learner: Learner, k_shot: int = 5, steps: int = 10, tasks: int = 600, q_queries: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Query MSE after ``steps`` adaptation steps on K points, mean ± 95% CI over ``tasks`` tasks."""
    check_regressor(learner)
    was_training = learner.training
    learner.eval()
    sampler = SinusoidTasks(k_shot, q_queries, seed=seed)
    errors = []
    try:
        for episode in sampler.episodes(tasks):
            state = learner.adapt_tensors(episode.support_x, episode.support_y, 1, steps=steps)
            with torch.inference_mode():
                prediction = learner.score(state, episode.query_x.to(learner.device)).cpu()
            errors.append(float(((prediction - episode.query_y) ** 2).mean()))
    finally:
        learner.train(was_training)
    return mean_ci95(errors)


def evaluate_sinusoid(
    learner: Learner, k_shot: int = 5, steps: Sequence[int] = (1, 5, 10), tasks: int = 600, seed: int = 0
) -> dict[str, dict[str, float]]:
    """The paper's report: K-shot MSE after each number of steps (same tasks for every step count)."""
    results = {}
    for count in steps:
        mse, ci = sinusoid_mse(learner, k_shot, count, tasks, seed=seed)
        results[f"{k_shot}-shot {count}-step"] = {"mse": mse, "ci95": ci, "tasks": tasks}
    return results


def train_sinusoid(
    learner: Learner,
    config: TrainConfig,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
    on_new_best: Callable[[Learner], None] | None = None,
) -> TrainResult:
    """Meta-train on sinusoid tasks (``k_shot`` support and ``q_queries`` query points per task).

    Keeps the weights with the lowest validation MSE (after the learner's
    ``test_steps``) on a fixed set of validation tasks; with the training K.
    """
    check_regressor(learner)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    learner.to(device)
    sampler = SinusoidTasks(config.k_shot, config.q_queries, seed=config.seed)
    optimizer = make_optimizer(learner, config)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_decay_every, gamma=config.lr_decay)
    best_mse, best_episode, best_state = float("inf"), 0, copy.deepcopy(learner.state_dict())
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    running = 0.0
    for index in range(1, config.episodes + 1):
        learner.train()
        batch = [episode.to(device) for episode in sampler.episodes(config.meta_batch)]
        loss = learner.train_step(batch, optimizer)["loss"]
        scheduler.step()
        running = loss if index == 1 else 0.95 * running + 0.05 * loss
        if index % config.val_every == 0 or index == config.episodes:
            val_mse, val_ci = sinusoid_mse(
                learner, config.k_shot, learner.config.test_steps, config.val_episodes, seed=config.seed + 1
            )
            record = {"episode": index, "loss": running, "val_mse": val_mse, "val_ci95": val_ci}
            record["seconds"] = time.perf_counter() - start
            history.append(record)
            if val_mse < best_mse:
                best_mse, best_episode, best_state = val_mse, index, copy.deepcopy(learner.state_dict())
                if on_new_best is not None:
                    on_new_best(learner)
            if on_progress is not None:
                on_progress(index, {**record, "val_accuracy": -val_mse})
        elif on_progress is not None:
            on_progress(index, {"loss": running})
    learner.load_state_dict(best_state)
    learner.eval()
    seconds = time.perf_counter() - start
    learner.provenance.training = TrainingInfo(
        dataset="sinusoid: A~U[0.1,5], phase~U[0,pi], x~U[-5,5]",
        episodes=config.episodes,
        n_way=1,
        k_shot=config.k_shot,
        q_queries=config.q_queries,
        seed=config.seed,
        best_val_accuracy=None,
        extra={
            "train_config": config.model_dump(mode="json"),
            "best_episode": best_episode,
            "best_val_mse": best_mse,
            "seconds": round(seconds, 1),
        },
        init_training=learner.provenance.training,
    )
    return TrainResult(-best_mse, best_episode, history, seconds)
