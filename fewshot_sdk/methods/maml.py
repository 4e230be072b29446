"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine 2017), and its first-order approximation.

MAML meta-learns an initialisation theta from which a few gradient steps on a
task's support set give a good model for that task:

- inner loop (eq. 1): theta'_i = theta - alpha grad_theta L_Ti^support(f_theta), k times;
- outer loop (eq. 2-3): theta <- theta - beta grad_theta sum_i L_Ti^query(f_theta'_i),
  differentiating *through* the inner loop (second-order: Hessian-vector products).

First-order MAML (sec. 5.2) drops the second derivatives: the inner gradients
are treated as constants, so the meta-gradient is the query-loss gradient at
theta'_i. Both share the functional inner loop of :mod:`._functional` and the
network, head and batch-norm choices of :mod:`._gradient_learner`; they differ
only in how much graph the inner loop keeps.

Classification uses cross-entropy, regression (the sinusoid family, sec. 5.1)
mean squared error, chosen by ``task``.
"""

from __future__ import annotations

from pydantic import Field

from fewshot_sdk.methods._functional import Order
from fewshot_sdk.methods._gradient_learner import GradientConfig, GradientLearner
from fewshot_sdk.registry import register_method


class MAMLConfig(GradientConfig):
    first_order: bool = Field(False, description="drop second derivatives (first-order MAML)")


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


@register_method
class FOMAML(MAML):
    """First-order MAML: the meta-gradient is the query gradient at the adapted parameters."""

    method = "fomaml"
    aliases = ("first-order-maml",)
    Config = FOMAMLConfig
    config: FOMAMLConfig
