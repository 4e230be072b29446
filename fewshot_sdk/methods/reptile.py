"""Reptile (Nichol, Achiam & Schulman 2018): move the initialisation towards task-adapted weights.

For each task, k steps of SGD or Adam on the task's data from theta give W
(Algorithm 1); the outer update is theta <- theta + epsilon (W - theta), and with
a meta-batch of n tasks (Algorithm 2, "batched") theta <- theta + epsilon/n
sum_i (W_i - theta). epsilon is annealed linearly to 0 over ``anneal_episodes``
meta-iterations (sec. 6). No second derivatives, no query loss: in meta-training
the inner loop runs on minibatches of the whole episode (support and queries),
at test time the same optimiser runs on the support set.

``meta_batch=1`` in the training loop is the serial version. Transduction
(query batch-norm statistics) is off by default; ``bn="transductive"`` turns it on.

In the training loop's terms: ``meta_gradients`` writes the Reptile direction
-(mean_i W_i - theta) into ``.grad`` (so averaging ``.grad`` across processes averages
the tasks of every process), and ``outer_update`` applies the paper's interpolation
theta <- theta - epsilon .grad; no optimiser or learning-rate schedule is involved
(``uses_outer_optimizer`` is False). ``meta_iteration`` is a buffer, saved with the
weights, so continuing a run (``fewshot train --init``) continues the epsilon schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from fewshot_sdk.data.episodes import Episode
from fewshot_sdk.errors import InputError
from fewshot_sdk.kernels import sgd_step_
from fewshot_sdk.methods._gradient_learner import GradientConfig, GradientLearner
from fewshot_sdk.methods.base import TaskState
from fewshot_sdk.methods.functional_call import Params
from fewshot_sdk.methods.inner_loop import AdamDirections, Order, inner_loop
from fewshot_sdk.methods.step_metrics import StepMetrics
from fewshot_sdk.registry import register_method


class ReptileConfig(GradientConfig):
    inner_optimizer: Literal["adam", "sgd"] = "adam"
    inner_lr: float = Field(1e-3, gt=0, description="inner step size (Adam's, as in the paper's Omniglot runs)")
    inner_steps: int = Field(5, ge=0)
    test_steps: int = Field(20, ge=0)
    inner_batch: int = Field(10, ge=1, description="examples per inner step (minibatches of the task's data)")
    adam_beta1: float = Field(0.0, ge=0, lt=1, description="the paper sets Adam's beta1 to 0")
    outer_lr: float = Field(1.0, gt=0, description="epsilon at the first meta-iteration")
    anneal_episodes: int = Field(2000, ge=1, description="epsilon decays linearly to 0 over these meta-iterations")


@register_method
class Reptile(GradientLearner):
    """Reptile: first-order meta-learning by interpolating towards adapted weights."""

    method = "reptile"
    Config = ReptileConfig
    config: ReptileConfig

    uses_outer_optimizer = False

    def build(self) -> None:
        super().build()
        #: meta-iterations taken so far: where the run is in its epsilon schedule
        self.register_buffer("meta_iteration", torch.zeros((), dtype=torch.int64))

    def train_task(
        self, x: Tensor, y: Tensor, n_way: int, steps: int, lr: float, generator: torch.Generator | None = None
    ) -> Params:
        """W: ``steps`` steps of the inner optimiser on minibatches of (x, y) from theta (no graph).

        ``generator`` orders the minibatches; meta-training draws from the global (seeded) RNG. No
        backtracking: each step draws a new minibatch, so the losses of two steps do not compare.
        """
        order = torch.randperm(len(x), generator=generator).to(x.device)
        batch = min(self.config.inner_batch, len(x))
        calls = 0

        def loss_fn(params: Params) -> Tensor:
            nonlocal calls
            start, calls = calls * batch, calls + 1
            idx = order[torch.arange(start, start + batch, device=x.device) % len(x)]
            return self.task_loss(self.score(params, x[idx]), y[idx])

        directions = AdamDirections((self.config.adam_beta1, 0.999)) if self.config.inner_optimizer == "adam" else None
        return inner_loop(loss_fn, self.initial_params(n_way), steps, lr, "none", directions=directions)

    def inner_adapt(
        self, support_x: Tensor, support_y: Tensor, n_way: int, steps: int, lr: float, order: Order
    ) -> TaskState:
        """Test time: the same inner optimiser on the support set (no graph whatever ``order``)."""
        self.check_task(support_x, n_way)
        # a fixed minibatch order: adapting to a support set gives the same task every time, in any
        # thread, whatever else consumed the global random numbers
        adapted = self.train_task(support_x, support_y, n_way, steps, lr, torch.Generator().manual_seed(0))
        return self.with_support_stats({k: v.detach() for k, v in adapted.items()}, support_x)

    def epsilon(self) -> float:
        """The linearly annealed outer step size."""
        return self.config.outer_lr * max(0.0, 1.0 - int(self.meta_iteration) / self.config.anneal_episodes)

    def check_can_train(self, episodes: int) -> None:
        if self.epsilon() == 0.0:
            raise InputError(
                f"this reptile model has taken {int(self.meta_iteration)} meta-iterations, the end of its epsilon "
                f"schedule (anneal_episodes={self.config.anneal_episodes}), so training would not move it; continue "
                f"with --set anneal_episodes={int(self.meta_iteration) + episodes}"
            )

    def meta_gradients(self, episodes: Sequence[Episode], metrics: StepMetrics) -> None:
        """.grad = -mean_i (W_i - theta) (Algorithm 2; n=1 is Algorithm 1), W_i from the whole episode's data."""
        theta = self.network_params()
        for parameter in theta.values():
            parameter.grad = torch.zeros_like(parameter)
        for episode in episodes:
            x = torch.cat([episode.support_x, episode.query_x])
            y = torch.cat([episode.support_y, episode.query_y])
            weights = self.train_task(x, y, episode.n_way, self.config.inner_steps, self.config.inner_lr)
            for name, parameter in theta.items():  # a sliced head moves only its used rows
                rows = len(weights[name])
                parameter.grad[:rows] -= (weights[name].detach() - parameter.detach()[:rows]) / len(episodes)
            with torch.no_grad():
                outputs = self.score(self.with_support_stats(weights, episode.support_x), episode.query_x)
                metrics.add(self.task_loss(outputs, episode.query_y), outputs, episode.query_y)

    def outer_update(self, optimizer: torch.optim.Optimizer | None) -> None:
        """theta <- theta + epsilon * mean_i (W_i - theta): the shared SGD kernel on .grad, in place."""
        theta = list(self.network_params().values())
        with torch.no_grad():  # on the parameters themselves, not .data: their version counters must move
            sgd_step_(theta, [p.grad for p in theta], self.epsilon())
        self.meta_iteration += 1
