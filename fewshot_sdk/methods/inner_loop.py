"""The inner loop of the gradient-based methods: k steps of theta <- theta - alpha d on a task's loss.

MAML (Finn et al. 2017) adapts the initialisation theta to a task T_i by gradient descent on the
task's support loss, eq. 1 applied k times:

    theta_0 = theta,    theta_{j+1} = theta_j - alpha grad L_Ti(f_theta_j),    theta'_i = theta_k.

MAML, first-order MAML, Reptile, test-time adaptation and the vmapped meta-batch all run the one
loop below, :func:`inner_loop`. They differ in three things, each a named piece here:

- **order**: how much of the loop the meta-gradient differentiates through. ``"second"`` keeps
  the graph of every gradient (``create_graph=True``), so d theta'/d theta carries the
  Hessian-vector products of MAML's full meta-gradient (eq. 2-3). ``"first"`` treats the
  gradients as constants: d theta'/d theta = I and the meta-gradient is the query gradient at
  theta' (first-order MAML, sec. 5.2). ``"none"`` keeps no graph at all (test time, Reptile).
- **gradient**: :func:`autograd_gradient` differentiates the loss's graph;
  :func:`vmappable_gradient` is ``torch.func``'s, which composes with ``vmap``, so the tasks
  of a meta-batch run as one batch, and with the outer backward, so second order comes free.
- **step**: ``theta - alpha d`` is always :func:`fewshot_sdk.kernels.sgd_step`; d is the gradient
  or an optimiser's direction (:class:`AdamDirections`, Reptile's inner optimiser); at test time
  a step that would explode the support loss is retried smaller (:func:`backtracked_step`).

The parameters are plain dicts ``name -> Tensor`` (:data:`Params`), run through the network with
:func:`fewshot_sdk.methods.functional_call.call`: no module is patched, so the loop is ordinary
autograd. ``lr`` is a float or a per-parameter dict of rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Protocol

import torch
from torch import Tensor

from fewshot_sdk.errors import AdaptationError
from fewshot_sdk.kernels import sgd_step
from fewshot_sdk.methods.functional_call import Params

Order = Literal["second", "first", "none"]


class SupportLoss(Protocol):
    """The support loss at ``params``; with ``stats``, its forward records the batch-norm statistics there."""

    def __call__(self, params: Params, stats: dict[str, Tensor] | None = None) -> Tensor: ...


LossFn = Callable[[Params], Tensor] | SupportLoss
#: ``(loss_fn, params, order, loss)`` -> the loss at ``params`` and its gradient, one tensor per parameter
Gradient = Callable[[LossFn, Params, Order, Tensor | None], tuple[Tensor, list[Tensor]]]
#: ``(values, grads, step)`` -> update directions for step ``step`` (an optimiser's, e.g. Adam's)
Directions = Callable[[list[Tensor], list[Tensor], int], list[Tensor]]


def autograd_gradient(
    loss_fn: LossFn, params: Params, order: Order, loss: Tensor | None = None
) -> tuple[Tensor, list[Tensor]]:
    """grad L(theta_j) by ``torch.autograd.grad``; a parameter the loss does not use gets zeros.

    ``loss``: the loss at ``params`` when the caller already has it with its graph (a backtracked
    step's), so that the forward does not run again.
    """
    values = list(params.values())
    with torch.enable_grad():
        if loss is None:
            loss = loss_fn(params)
        grads = list(torch.autograd.grad(loss, values, create_graph=order == "second", allow_unused=True))
    grads = [torch.zeros_like(v) if g is None else g for v, g in zip(values, grads, strict=True)]
    if order != "second":
        grads = [g.detach() for g in grads]
    return loss, grads


def vmappable_gradient(
    loss_fn: LossFn, params: Params, order: Order, loss: Tensor | None = None
) -> tuple[Tensor, list[Tensor]]:
    """grad L(theta_j) by ``torch.func.grad_and_value``, which works under ``torch.func.vmap``.

    Its result stays differentiable w.r.t. theta for the outer backward (second order);
    ``order="first"`` detaches it. Meant for meta-training only: under vmap a loss has no
    single value to test, so no ``order="none"`` or backtracking. ``loss`` is unused: the
    gradient and the loss come from one forward.
    """
    grads, value = torch.func.grad_and_value(loss_fn)(params)
    flat = [grads[name] for name in params]
    return value, [g.detach() for g in flat] if order == "first" else flat


def inner_loop(
    loss_fn: LossFn,
    params: Params,
    steps: int,
    lr: float | Params,
    order: Order,
    *,
    gradient: Gradient = autograd_gradient,
    directions: Directions | None = None,
    backtrack: bool = False,
    stats: dict[str, Tensor] | None = None,
) -> Params:
    """theta' after ``steps`` steps theta_{j+1} = theta_j - alpha d_j on ``loss_fn`` from ``params``.

    - ``order``, ``gradient``, ``directions``: see the module docstring. With ``order="none"`` the
      parameters restart as leaves after each step, and a non-finite support loss raises
      :class:`AdaptationError`, unless ``backtrack`` avoids the step that made it.
    - ``backtrack`` (test time, ``order="none"``): each step is :func:`backtracked_step`; when no
      step size passes, adaptation stops at the current weights. A step is judged by the loss it
      gives, so ``loss_fn`` must be deterministic (the whole support set, not Reptile's changing
      minibatches). The loss that accepts a step is the one the next step differentiates, so
      backtracking costs no forward pass of its own on a task that adapts normally.
    - ``stats`` (a :class:`SupportLoss`): filled with the support batch-norm statistics under the
      returned parameters. With ``backtrack`` they are recorded by the forward that accepted the
      last step; otherwise by one more forward, which keeps the graph of ``order`` (the statistics
      are part of MAML's meta-gradient).
    """
    names = list(params)
    values = [params[n] if order != "none" else params[n].detach().requires_grad_() for n in names]
    rates = lr if isinstance(lr, (int, float)) else [lr[n] for n in names]
    loss: Tensor | None = None
    recorded: dict[str, Tensor] | None = None
    for step in range(steps):
        loss, grads = gradient(loss_fn, dict(zip(names, values, strict=True)), order, loss)
        if order == "none" and not bool(torch.isfinite(loss)):
            raise AdaptationError(
                f"the support loss is {float(loss.detach()):.3g} at adaptation step {step}: "
                "adapt with fewer steps or a smaller lr"
            )
        if directions is not None:
            grads = directions(values, grads, step)
        if backtrack:
            last = step == steps - 1
            accepted = backtracked_step(
                loss_fn, names, values, grads, rates, float(loss.detach()), not last, last and stats is not None
            )
            if accepted is None:
                break
            values, loss, recorded = accepted
        else:
            values, loss = descend(values, grads, rates, order), None
    adapted = dict(zip(names, values, strict=True))
    if stats is not None:
        if recorded is None:
            recorded = support_statistics(loss_fn, adapted, order)
        stats.update({k: v.detach() for k, v in recorded.items()} if order == "none" else recorded)
    return adapted


def descend(values: list[Tensor], directions: list[Tensor], rates: float | list[Tensor], order: Order) -> list[Tensor]:
    """theta - alpha d (MAML eq. 1); with ``order="none"`` outside autograd, the results fresh leaves."""
    if order != "none":
        return sgd_step(values, directions, rates)
    with torch.no_grad():  # no graph through the step: the values restart as leaves
        return [v.requires_grad_() for v in sgd_step(values, directions, rates)]


def support_statistics(loss_fn: LossFn, params: Params, order: Order) -> dict[str, Tensor]:
    """The support batch-norm statistics under ``params``, by one forward of ``loss_fn`` (a SupportLoss)."""
    recorded: dict[str, Tensor] = {}
    if order == "none":
        with torch.no_grad():
            loss_fn({name: value.detach() for name, value in params.items()}, stats=recorded)
    else:
        loss_fn(params, stats=recorded)
    return recorded


#: How many times an exploding test-time step is halved before giving up.
MAX_HALVINGS = 10
#: A step "explodes" when it multiplies the support loss by more than this. Milder rises are
#: kept: a meta-learned initialisation may be trained for a large first step that overshoots
#: the support loss a little (rejecting those costs FOMAML accuracy), never for a blow-up.
EXPLODED = 2.0


def backtracked_step(
    loss_fn: LossFn,
    names: list[str],
    values: list[Tensor],
    grads: list[Tensor],
    rates: float | list[Tensor],
    loss: float,
    need_grad: bool = False,
    stats: bool = False,
) -> tuple[list[Tensor], Tensor, dict[str, Tensor] | None] | None:
    """The first of step, step/2, step/4, ... that does not explode the support loss; None if none passes.

    A fixed step size suits most tasks, but a task with clustered support points can make it
    overshoot and diverge (MAML's sinusoids: support loss 0.12 -> 4.3 -> 4e10). A step that would
    more than double the support loss (:data:`EXPLODED`), or make it NaN/inf, is retried at half
    the size, up to :data:`MAX_HALVINGS` times; a well-behaved task takes its full steps unchanged.

    Returns the accepted parameters (fresh leaves), their support loss (with its graph when
    ``need_grad``, so the next step differentiates it instead of running the forward again),
    and, with ``stats``, the batch-norm statistics that forward recorded.
    """
    scale = 1.0
    for _ in range(MAX_HALVINGS + 1):
        scaled = rates * scale if isinstance(rates, (int, float)) else [r * scale for r in rates]
        with torch.no_grad():  # the candidate starts a graph of its own (fresh leaves)
            candidate = [v.requires_grad_(need_grad) for v in sgd_step(values, grads, scaled)]
        recorded: dict[str, Tensor] | None = {} if stats else None
        with torch.set_grad_enabled(need_grad):
            params = dict(zip(names, candidate, strict=True))
            new_loss = loss_fn(params, stats=recorded) if stats else loss_fn(params)
        value = float(new_loss.detach())
        if math.isfinite(value) and value <= EXPLODED * loss:
            return candidate, new_loss, recorded
        scale /= 2
    return None


class AdamDirections:
    """Adam's update direction m_hat / (sqrt(v_hat) + eps) (Kingma & Ba 2015), for Reptile's inner loop.

    m_t = b1 m_{t-1} + (1 - b1) g_t, v_t = b2 v_{t-1} + (1 - b2) g_t^2, bias-corrected by 1 - b^t;
    the step alpha * m_hat / (sqrt(v_hat) + eps) is then :func:`descend`'s, as for plain SGD.
    Its moments restart at step 0, so one instance may serve several loops in turn.
    """

    def __init__(self, betas: tuple[float, float] = (0.0, 0.999), eps: float = 1e-8) -> None:
        self.betas, self.eps = betas, eps
        self.m: list[Tensor] = []
        self.v: list[Tensor] = []

    def __call__(self, values: list[Tensor], grads: list[Tensor], step: int) -> list[Tensor]:
        b1, b2 = self.betas
        if step == 0 or not self.m:
            self.m = [torch.zeros_like(g) for g in grads]
            self.v = [torch.zeros_like(g) for g in grads]
        self.m = [b1 * m + (1 - b1) * g for m, g in zip(self.m, grads, strict=True)]
        self.v = [b2 * v + (1 - b2) * g * g for v, g in zip(self.v, grads, strict=True)]
        c1, c2 = 1 - b1 ** (step + 1), 1 - b2 ** (step + 1)
        return [(m / c1) / ((v / c2).sqrt() + self.eps) for m, v in zip(self.m, self.v, strict=True)]
