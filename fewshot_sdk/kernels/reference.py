"""Plain-torch reference implementations of the kernels.

The CPU path of ``backend="auto"`` and the ground truth the Triton kernels are tested against,
so clarity and numerical safety (they work in float64) come before speed. They are differentiable
through ordinary torch autograd, which is also how the Triton path gets its backward
(``autograd.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: Floor on vector norms for the cosine metric, so a zero vector scores 0, not NaN.
COSINE_EPS = 1e-8

#: Upper bound on the elements of the [chunk, N, D] difference tensor the L1 metric
#: builds, so large inputs are processed in row chunks instead of exhausting memory.
_L1_CHUNK_ELEMS = 1 << 24
#: Up to this many [M, N, D] elements squared euclidean distances are computed from the
#: differences (exact, 64 MB at most in float32); above it, from the one-matmul expansion.
_DIRECT_SQEUCLIDEAN_ELEMS = 1 << 24


def exporting() -> bool:
    """Whether this call is being recorded for export: by ``torch.export``, or by the TorchScript tracer.

    An exported graph keeps one path through the Python code (:mod:`fewshot_sdk.export.onnx`), so
    the branches below take their one size- and value-independent form there.
    """
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def pairwise_scores(q: Tensor, s: Tensor, metric: str, weights: Tensor | None = None) -> Tensor:
    """Return the [M, N] score matrix (higher means more similar).

    ``sqeuclidean`` sums squared differences for small inputs and uses the
    ``|q|^2 + |s|^2 - 2 q.s`` expansion (one matmul, so it scales to large M, N, D), clamped
    at zero, above ``_DIRECT_SQEUCLIDEAN_ELEMS`` and under export (:func:`exporting`); ``cosine``
    normalises each row first; ``l1`` is ``-sum_d w_d |q_d - s_d|`` (see :func:`_l1_distance`).
    """
    if metric == "sqeuclidean":
        if not exporting() and q.shape[0] * s.shape[0] * q.shape[1] <= _DIRECT_SQEUCLIDEAN_ELEMS:
            # small problems: the difference itself, exact (a point is at distance 0 from itself);
            # the expansion below cancels catastrophically for large norms (|x|^2 ~ 1e6 in float32)
            return -(q[:, None, :] - s[None, :, :]).square().sum(-1)
        q2 = (q * q).sum(-1, keepdim=True)
        s2 = (s * s).sum(-1)
        return -(q2 + s2 - 2.0 * (q @ s.T)).clamp_min(0.0)
    if metric == "cosine":
        qn = q / q.norm(dim=-1, keepdim=True).clamp_min(COSINE_EPS)
        sn = s / s.norm(dim=-1, keepdim=True).clamp_min(COSINE_EPS)
        return qn @ sn.T
    if metric == "l1":
        return -_l1_distance(q, s, weights)
    raise ValueError(f"metric must be 'sqeuclidean', 'cosine' or 'l1', got {metric!r}")


def _l1_distance(q: Tensor, s: Tensor, weights: Tensor | None) -> Tensor:
    """``sum_d w_d |q_d - s_d|`` as [M, N].

    Without autograd (inference, the common CPU case) and with positive weights, this is
    ``cdist(q * w, s * w, p=1)``, whose kernel never materialises [M, N, D] (much faster on CPU:
    ``benchmarks/results/kernels_cpu.md``). cdist has no double backward, so while a graph is
    recorded the difference is built explicitly, in row chunks to bound memory: differentiable to
    any order and right for weights of any sign. Under export it is built in one piece (below).
    """
    if exporting():
        # ONNX: no value-dependent branch (a trace would keep the branch that the example's
        # weights took, whatever the weights), no cdist (no ONNX op), no Python loop that
        # would freeze the batch size; the graph holds [M, N, D] once.
        diff = (q[:, None, :] - s[None, :, :]).abs()
        return diff @ weights if weights is not None else diff.sum(-1)
    tracking = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, s, weights))
    if not tracking and (weights is None or bool((weights > 0).all())):
        if weights is not None:
            q, s = q * weights, s * weights
        return torch.cdist(q, s, p=1)
    m, n, d = q.shape[0], s.shape[0], q.shape[1]
    rows = max(1, _L1_CHUNK_ELEMS // max(1, n * d))
    chunks = []
    for start in range(0, m, rows):
        diff = (q[start : start + rows, None, :] - s[None, :, :]).abs()
        chunks.append(diff @ weights if weights is not None else diff.sum(-1))
    return torch.cat(chunks, 0) if chunks else q.new_zeros((0, n))


def pairwise_logits(
    q: Tensor, s: Tensor, metric: str, temperature: float = 1.0, weights: Tensor | None = None
) -> Tensor:
    """Return ``score / temperature`` ([M, N])."""
    return pairwise_scores(q, s, metric, weights) / temperature


def pairwise_softmax(
    q: Tensor,
    s: Tensor,
    metric: str,
    values: Tensor | None = None,
    temperature: float = 1.0,
    weights: Tensor | None = None,
) -> Tensor:
    """Return ``softmax_j(score / temperature)`` ([M, N]), or that times ``values`` ([M, V])."""
    probs = torch.softmax(pairwise_logits(q, s, metric, temperature, weights), dim=-1)
    return probs if values is None else probs @ values


def sgd_step(params: Sequence[Tensor], grads: Sequence[Tensor], lr: float | Sequence[Tensor]) -> list[Tensor]:
    """Return new tensors ``p - lr * g``; differentiable w.r.t. params, grads and lr tensors.

    Under ``no_grad`` (test-time adaptation), a float ``lr`` is one foreach call instead of one launch
    per tensor. Otherwise the per-tensor ops stay: second-order MAML's meta-iteration was slower
    through the foreach op's backward (``benchmarks/results/maml_adapt_cpu.md``), and
    ``torch.func.vmap`` has no batching rule for it.
    """
    if isinstance(lr, (int, float)):
        if not torch.is_grad_enabled():
            return list(torch._foreach_add(list(params), list(grads), alpha=-lr))
        return [p - lr * g for p, g in zip(params, grads, strict=True)]
    return [p - r * g for p, g, r in zip(params, grads, lr, strict=True)]


@torch.no_grad()
def sgd_step_(params: Sequence[Tensor], grads: Sequence[Tensor], lr: float | Sequence[Tensor]) -> None:
    """Update ``params`` in place with ``p -= lr * g`` (one foreach call for a float lr)."""
    if isinstance(lr, (int, float)):
        torch._foreach_add_(list(params), list(grads), alpha=-lr)
        return
    for p, g, r in zip(params, grads, lr, strict=True):
        p.sub_(r * g)
