"""torch.autograd.Function wrappers that give the Triton forward kernels a backward.

The backward differentiates the plain-torch reference, recomputed on the saved inputs: one
reference forward+backward per call, but exact (the formulas the kernels are tested against), for
every input (q, s, values, weights), and itself differentiable while a graph is being built, so a
second-order method (MAML through a metric head) can take a gradient of a gradient.

``SgdStep`` has an analytic backward (``dp = dout``, ``dg = -lr dout``, ``dlr = -sum(g dout)``)
in torch ops, so it is twice differentiable too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import reference
from .triton_pairwise import MODE_LOGITS, pairwise_forward
from .triton_sgd import multi_sgd


def _reference(
    mode: int, q: Tensor, s: Tensor, values: Tensor | None, weights: Tensor | None, metric: str, temperature: float
) -> Tensor:
    if mode == MODE_LOGITS:
        return reference.pairwise_logits(q, s, metric, temperature, weights)
    return reference.pairwise_softmax(q, s, metric, values, temperature, weights)


class PairwiseFunction(torch.autograd.Function):
    """Triton forward, torch-recompute backward, for all three kernel modes."""

    @staticmethod
    def forward(
        ctx: Any,
        q: Tensor,
        s: Tensor,
        values: Tensor | None,
        weights: Tensor | None,
        metric: str,
        mode: int,
        temperature: float,
    ) -> Tensor:
        ctx.save_for_backward(q, s, values, weights)
        ctx.config = (metric, mode, temperature)
        return pairwise_forward(q, s, metric, mode, values, temperature, weights)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        metric, mode, temperature = ctx.config
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad[:4]
        create_graph = torch.is_grad_enabled()  # True only under backward(create_graph=True)
        if create_graph:
            # Fresh views stay linked to the caller's graph (for double backward) yet are
            # distinct autograd inputs, so pairwise(x, x) gets separate q and s gradients.
            inputs = [None if t is None else t.view_as(t) for t in saved]
        else:
            inputs = [
                None if t is None else t.detach().requires_grad_(bool(need))
                for t, need in zip(saved, needs, strict=True)
            ]
        wanted = [t for t, need in zip(inputs, needs, strict=True) if need and t is not None]
        with torch.enable_grad():
            out = _reference(mode, inputs[0], inputs[1], inputs[2], inputs[3], metric, temperature)
            grads = iter(torch.autograd.grad(out, wanted, grad_out, create_graph=create_graph, allow_unused=True))
        result = [next(grads) if need and t is not None else None for t, need in zip(inputs, needs, strict=True)]
        return (*result, None, None, None)


def pairwise(
    q: Tensor, s: Tensor, metric: str, mode: int, values: Tensor | None, temperature: float, weights: Tensor | None
) -> Tensor:
    """Apply :class:`PairwiseFunction` (positional arguments, as autograd requires)."""
    return PairwiseFunction.apply(q, s, values, weights, metric, mode, temperature)


def launch_sgd(params: list[Tensor], grads: list[Tensor], outs: list[Tensor], lr: float | list[Tensor]) -> None:
    """Group by (device, dtype) and launch one multi-tensor kernel per group.

    ``lr`` is a Python float or one tensor per param.
    ``outs[i]`` must be contiguous with ``params[i]``'s dtype; grads and lr tensors
    are converted to that dtype and made contiguous here (a no-op in the usual case).
    """
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    for (_, dtype), idx in groups.items():
        g_list = [grads[i].to(dtype).contiguous() for i in idx]
        lr_arg = lr if isinstance(lr, float) else [lr[i].detach().to(dtype).contiguous() for i in idx]
        multi_sgd([params[i].detach().contiguous() for i in idx], g_list, [outs[i] for i in idx], lr_arg)


class SgdStep(torch.autograd.Function):
    """``[p - lr * g for ...]`` in one Triton launch, with a differentiable backward."""

    @staticmethod
    def forward(ctx: Any, n: int, lr_value: float | None, *tensors: Tensor) -> tuple[Tensor, ...]:
        params, grads, lrs = list(tensors[:n]), list(tensors[n : 2 * n]), list(tensors[2 * n :])
        outs = [torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in params]
        with torch.no_grad():
            launch_sgd(params, grads, outs, lrs if lr_value is None else lr_value)
        ctx.n, ctx.lr_value = n, lr_value
        ctx.save_for_backward(*grads, *lrs)
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *douts: Tensor) -> tuple[Tensor | None, ...]:
        n, lr_value = ctx.n, ctx.lr_value
        grads, lrs = ctx.saved_tensors[:n], ctx.saved_tensors[n:]
        needs = ctx.needs_input_grad[2:]
        d_params = [d if needs[i] else None for i, d in enumerate(douts)]
        d_grads: list[Tensor | None] = []
        d_lrs: list[Tensor | None] = []  # stays empty for a float lr, which has no gradient slot
        for i, (g, d) in enumerate(zip(grads, douts, strict=True)):
            rate = lrs[i] if lr_value is None else lr_value
            d_grads.append(-(rate * d) if needs[n + i] else None)
            if lr_value is None and needs[2 * n + i]:
                r = lrs[i]
                d_lrs.append((-(g * d).sum() if r.numel() == 1 else -(g * d)).reshape(r.shape))
            elif lr_value is None:
                d_lrs.append(None)
        return (None, None, *d_params, *d_grads, *d_lrs)
