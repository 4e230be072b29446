"""Meta-training and evaluation on MAML's sinusoid regression family (Finn et al. 2017, sec. 5.1).

The same training loop as classification (:func:`run_training`), fed :class:`SinusoidTasks` episodes; validation
and evaluation report the mean squared error on the query points after a given number of adaptation steps,
mean ± 95% CI over seeded tasks, as the paper's Figure 2 and Table of K-shot MSE do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

import fewshot_sdk.train.distributed as distributed
from fewshot_sdk.config import TrainingInfo
from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.data.sinusoid import SinusoidTasks
from fewshot_sdk.errors import InputError
from fewshot_sdk.methods.base import Learner
from fewshot_sdk.train.evaluate import in_eval_mode, mean_ci95
from fewshot_sdk.train.loop import TrainConfig, TrainResult, prepare, run_training

SINUSOID = "sinusoid"


def is_sinusoid(data: object) -> bool:
    return str(data) == SINUSOID


def check_regressor(learner: Learner) -> None:
    if learner.kind.classifies:
        raise InputError(
            f"the sinusoid tasks need a regression learner: create it with task='regression' and the mlp backbone "
            f"(e.g. --set task=regression --backbone mlp); {learner.method!r} is configured for classification"
        )


def sinusoid_mse(
    learner: Learner, k_shot: int = 5, steps: int = 10, tasks: int = 600, q_queries: int = 100, seed: int = 0
) -> tuple[float, float]:
    """Query MSE after ``steps`` adaptation steps on K points, mean ± 95% CI over ``tasks`` tasks."""
    check_regressor(learner)
    errors = []
    with in_eval_mode(learner):
        for episode in SinusoidTasks(k_shot, q_queries, seed=seed).episodes(tasks):
            state = learner.adapt_tensors(episode.support_x, episode.support_y, 1, steps=steps)
            with torch.inference_mode():
                prediction = learner.score(state, episode.query_x.to(learner.device)).cpu()
            errors.append(float(((prediction - episode.query_y) ** 2).mean()))
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


class SinusoidObjective:
    """Sinusoid tasks with the run's K; validation MSE after the learner's ``test_steps``, lower is better."""

    metric = "mse"
    higher_is_better = False

    def __init__(self, config: TrainConfig) -> None:
        self.tasks = SinusoidTasks(config.k_shot, config.q_queries, seed=distributed.rank_seed(config.seed))
        self.config = config

    def sample(self) -> Episode:
        return self.tasks.sample()

    def validate(self, learner: Learner) -> tuple[float, float]:
        steps = learner.config.test_steps  # type: ignore[attr-defined]
        return sinusoid_mse(learner, self.config.k_shot, steps, self.config.val_episodes, seed=self.config.seed + 1)


def train_sinusoid(
    learner: Learner,
    config: TrainConfig,
    on_progress: Callable[[int, dict[str, float]], None] | None = None,
    on_new_best: Callable[[Learner], None] | None = None,
) -> TrainResult:
    """Meta-train on sinusoid tasks (``k_shot`` support and ``q_queries`` query points per task).

    The classification loop, with sinusoid tasks for episodes: it keeps the weights with the lowest validation MSE
    (after the learner's ``test_steps``) on a fixed set of validation tasks with the training K.
    """
    check_regressor(learner)
    if config.frozen_stages:
        raise InputError("frozen_stages applies to image backbones; the sinusoid regressor trains every layer")
    prepare(learner, config)
    result = run_training(learner, SinusoidObjective(config), config, on_progress, on_new_best)
    learner.provenance.training = TrainingInfo(
        dataset="sinusoid: A~U[0.1,5], phase~U[0,pi], x~U[-5,5]",
        **config.model_dump(include={"episodes", "k_shot", "q_queries", "seed"}),
        n_way=1,
        best_val_accuracy=None,
        extra={
            "train_config": config.model_dump(mode="json"),
            "best_episode": result.best_episode,
            "best_val_mse": result.best_value,
            "seconds": round(result.seconds, 1),
        },
        init_training=learner.provenance.training,
    )
    return result
