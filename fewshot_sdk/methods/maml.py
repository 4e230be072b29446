"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine 2017), and its first-order approximation.

MAML meta-learns an initialisation theta from which a few gradient steps on a task's support set
give a good model for that task:

- inner loop (eq. 1): theta'_i = theta - alpha grad_theta L_Ti^support(f_theta), k times;
- outer loop (eq. 2-3): theta <- theta - beta grad_theta sum_i L_Ti^query(f_theta'_i),
  differentiating *through* the inner loop (second-order: Hessian-vector products).

First-order MAML (sec. 5.2) drops the second derivatives: the inner gradients are treated as
constants, so the meta-gradient is the query-loss gradient at theta'_i. Both share the inner loop of
:mod:`.inner_loop` and the network, head and batch-norm choices of :mod:`._gradient_learner`; they
differ only in how much graph the inner loop keeps. Classification uses cross-entropy, regression
(the sinusoid family, sec. 5.1) mean squared error, chosen by ``task``.

``head_init="zero"`` is the zeroing trick (Kao et al. 2022, "MAML is a noisy contrastive learner in
classification"; Triantafillou et al. 2020 zero their proto-MAML head the same way): every task
starts from a zero head, so the head is not meta-learned. It matters for first-order MAML. A learned
head's rows can drift apart along the mean feature direction, the direction in which a softmax over
post-ReLU features is shifted for every input at once. The inner loop erases such an offset in one
or two steps, so the first-order meta-gradient, which takes d theta'/d theta = I, has nothing that
holds it back. Our first ``fomaml-omniglot`` drifted until one row won every 20-way prediction before
adaptation (support loss 53.6, against ln 20 = 3.0): after one inner step its 20-way accuracy was
still chance (5.0%), and only the second step undid the offset. A zero head starts every task at
loss ln N, with rows that are equal by construction (benchmarks/results/fomaml.md).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fewshot_sdk.methods._gradient_learner import GradientConfig, GradientLearner
from fewshot_sdk.methods.functional_call import Params
from fewshot_sdk.methods.inner_loop import Order
from fewshot_sdk.registry import register_method


class MAMLConfig(GradientConfig):
    first_order: bool = Field(False, description="drop second derivatives (first-order MAML)")
    head_init: Literal["learned", "zero"] = Field(
        "learned", description="each task's head: the meta-learned one (the paper), or zeros (the zeroing trick)"
    )


class FOMAMLConfig(MAMLConfig):
    first_order: bool = True


@register_method
class MAML(GradientLearner):
    """MAML: meta-gradient through k inner SGD steps (second-order unless ``first_order``)."""

    method = "maml"
    Config = MAMLConfig
    config: MAMLConfig
    vmap_tasks = True

    @property
    def meta_order(self) -> Order:
        return "first" if self.config.first_order else "second"

    def initial_params(self, n_way: int) -> Params:
        """theta; with ``head_init="zero"`` the head starts at zero for every task (the stored head is unused)."""
        params = super().initial_params(n_way)
        if self.config.head_init == "zero" and self.config.task == "classification":
            for name in ("head.weight", "head.bias"):
                params[name] = torch.zeros_like(params[name]).requires_grad_()
        return params


@register_method
class FOMAML(MAML):
    """First-order MAML: the meta-gradient is the query gradient at the adapted parameters."""

    method = "fomaml"
    aliases = ("first-order-maml",)
    Config = FOMAMLConfig
    config: FOMAMLConfig
