"""Public entry points: argument checking and backend selection.

``backend="auto"`` runs Triton on CUDA tensors and the torch reference elsewhere; ``"torch"``
forces the reference; ``"triton"`` the kernels, on CPU only through Triton's interpreter
(``TRITON_INTERPRET=1`` set before this package is imported: Triton decides how to run a kernel
when it is defined). Every argument error is a ``ValueError`` naming the argument, so SDK
methods can surface it to users unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import Literal

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from . import reference

_TRITON_NAMES = ("_tri", "_tp", "_TRITON_DTYPES", "_TRITON_IMPORT_ERROR")
_triton_tried = False


def _load_triton() -> Exception | None:
    """Import the Triton modules on first need (CUDA tensors, or ``backend="triton"``); return the error.

    Triton is optional (the base install has none; the ``gpu`` and ``test`` extras and CUDA builds
    of torch bring it), and importing it costs time, so ``backend="auto"`` on CPU never does.
    """
    global _tri, _tp, _TRITON_DTYPES, _TRITON_IMPORT_ERROR, _triton_tried
    if not _triton_tried:
        try:
            from . import autograd as _tri
            from . import triton_pairwise as _tp
            from .triton_sgd import SUPPORTED_DTYPES as _TRITON_DTYPES

            _TRITON_IMPORT_ERROR = None
        except ImportError as exc:
            _TRITON_IMPORT_ERROR = exc
        _triton_tried = True
    return _TRITON_IMPORT_ERROR


def __getattr__(name: str) -> object:
    """``dispatch._tri`` and the other Triton names (tests patch them) import Triton on first access."""
    if name in _TRITON_NAMES:
        _load_triton()
        if name in globals():  # absent where Triton failed to import
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Metric = Literal["sqeuclidean", "cosine", "l1"]
Backend = Literal["auto", "triton", "torch"]
LearningRate = float | Sequence[Tensor]

METRICS: tuple[str, ...] = ("sqeuclidean", "cosine", "l1")
BACKENDS: tuple[str, ...] = ("auto", "triton", "torch")


def _use_triton(backend: str, device: torch.device) -> bool:
    """Resolve ``backend`` for tensors on ``device``; raise ValueError if impossible."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch" or (backend == "auto" and device.type != "cuda"):
        return False
    error = _load_triton()
    if backend == "auto":
        return error is None
    if error is not None:
        raise ValueError(f"backend='triton' requested but Triton could not be imported: {error}")
    if device.type == "cuda" or (device.type == "cpu" and _tp.INTERPRET):
        return True
    if device.type == "cpu":
        raise ValueError(
            "backend='triton' on CPU tensors needs Triton's interpreter, which works only if the "
            "environment variable TRITON_INTERPRET=1 was set before fewshot_sdk.kernels was imported; "
            "set it (or use backend='torch' / 'auto', or move the tensors to CUDA)"
        )
    raise ValueError(f"backend='triton' does not support tensors on device {device}")


def _check_matrix(name: str, t: object) -> Tensor:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D tensor, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must have a floating dtype, got {t.dtype}")
    return t


def _check_pairwise(
    q: Tensor, s: Tensor, metric: str, values: Tensor | None, temperature: float, weights: Tensor | None
) -> None:
    _check_matrix("q", q)
    _check_matrix("s", s)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    # Under the tracer (ONNX export) sizes are tensors: comparing them would put a Python bool in the
    # trace (a TracerWarning, so the slow torch.export fallback). The export's eager parity calls
    # check the sizes, and a mismatch while tracing fails in the ops themselves.
    sizes = not torch.jit.is_tracing()
    if sizes and s.shape[1] != q.shape[1]:
        raise ValueError(f"s must have the same feature size D as q: q is {tuple(q.shape)}, s is {tuple(s.shape)}")
    others = [("s", s)]
    if values is not None:
        _check_matrix("values", values)
        if sizes and values.shape[0] != s.shape[0]:
            raise ValueError(f"values must have one row per support (N={s.shape[0]}), got {tuple(values.shape)}")
        others.append(("values", values))
    if weights is not None:
        if metric != "l1":
            raise ValueError(f"weights are only used by metric='l1', got metric={metric!r}")
        if not isinstance(weights, Tensor) or weights.dim() != 1 or (sizes and weights.shape[0] != q.shape[1]):
            shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
            raise ValueError(f"weights must be a 1-D tensor of length D={q.shape[1]}, got {shape}")
        others.append(("weights", weights))
    for name, t in others:
        if t.dtype != q.dtype:
            raise ValueError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
    if isinstance(temperature, bool) or not isinstance(temperature, Real):
        raise ValueError(f"temperature must be a positive float, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite float, got {temperature}")


def pairwise_logits(
    q: Tensor,
    s: Tensor,
    metric: Metric = "sqeuclidean",
    temperature: float = 1.0,
    weights: Tensor | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Return raw scores ``score(q_i, s_j) / temperature`` as an [M, N] matrix.

    For methods that post-process scores themselves (e.g. a cross-entropy on logits).
    Scores: ``-|q - s|^2`` (sqeuclidean), cosine similarity, or ``-sum_d w_d |q_d - s_d|``
    (l1; ``weights`` [D], default ones).  Differentiable w.r.t. q, s and weights.
    """
    _check_pairwise(q, s, metric, None, temperature, weights)
    if _use_triton(backend, q.device) and _check_triton_dtype(q):
        return _tri.pairwise(q, s, metric, _tp.MODE_LOGITS, None, float(temperature), weights)
    return reference.pairwise_logits(q, s, metric, float(temperature), weights)


def pairwise_softmax(
    q: Tensor,
    s: Tensor,
    metric: Metric = "sqeuclidean",
    values: Tensor | None = None,
    temperature: float = 1.0,
    weights: Tensor | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Return ``softmax_j(score(q_i, s_j) / temperature)`` ([M, N]), or that @ ``values``.

    With ``values`` [N, V] the product ([M, V]) is fused on the Triton path: the
    probabilities exist one tile at a time (online softmax), so memory does not grow
    with N.  This is the soft nearest-neighbour / attention readout of metric-based
    few-shot methods.  Differentiable w.r.t. q, s, values and weights.
    """
    _check_pairwise(q, s, metric, values, temperature, weights)
    if _use_triton(backend, q.device) and _check_triton_dtype(q):
        mode = _tp.MODE_SOFTMAX if values is None else _tp.MODE_VALUES
        return _tri.pairwise(q, s, metric, mode, values, float(temperature), weights)
    return reference.pairwise_softmax(q, s, metric, values, float(temperature), weights)


def _check_triton_dtype(t: Tensor) -> bool:
    if t.dtype not in _TRITON_DTYPES:
        supported = sorted(map(str, _TRITON_DTYPES))
        raise ValueError(f"backend 'triton' supports q dtypes {supported}, got {t.dtype}")
    return True


def _check_sgd(
    params: Sequence[Tensor], grads: Sequence[Tensor], lr: object
) -> tuple[list[Tensor], list[Tensor], float | list[Tensor]]:
    """Validate the SGD arguments; return them as lists, with ``lr`` as a float or a list."""
    params, grads = list(params), list(grads)
    if len(grads) != len(params):
        raise ValueError(f"grads must have one tensor per param: {len(params)} params, {len(grads)} grads")
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if not isinstance(p, Tensor) or not p.is_floating_point():
            raise ValueError(f"params[{i}] must be a floating-point tensor")
        if not isinstance(g, Tensor) or g.shape != p.shape:
            shape = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
            raise ValueError(f"grads[{i}] must have params[{i}]'s shape {tuple(p.shape)}, got {shape}")
        if g.device != p.device:
            raise ValueError(f"grads[{i}] must be on params[{i}]'s device {p.device}, got {g.device}")
    if isinstance(lr, (Tensor, bool)):
        raise ValueError("lr must be a float or a list of per-parameter tensors, got a single tensor/bool")
    if isinstance(lr, Real):
        if not math.isfinite(lr):
            raise ValueError(f"lr must be finite, got {lr}")
        return params, grads, float(lr)
    if not isinstance(lr, Sequence) or len(lr) != len(params):
        raise ValueError("lr must be a float or a sequence with one tensor per param")
    for i, (p, r) in enumerate(zip(params, lr, strict=True)):
        if not isinstance(r, Tensor) or not (r.numel() == 1 or r.shape == p.shape):
            shape = tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__
            raise ValueError(
                f"lr[{i}] must be a one-element tensor or have params[{i}]'s shape {tuple(p.shape)}, got {shape}"
            )
        if r.device != p.device:
            raise ValueError(f"lr[{i}] must be on params[{i}]'s device {p.device}, got {r.device}")
    return params, grads, list(lr)


def _device_of(params: list[Tensor]) -> torch.device:
    return params[0].device if params else torch.device("cpu")


def sgd_step_(params: Sequence[Tensor], grads: Sequence[Tensor], lr: LearningRate, backend: Backend = "auto") -> None:
    """In place ``p -= lr * g`` for every param, in one kernel launch on the Triton path.

    ``lr`` is a float, or one tensor per param (one element, or the param's shape) for
    learned per-parameter rates (Meta-SGD, meta-learner LSTM).  Not tracked by autograd
    (use :func:`sgd_step` for that).  Non-contiguous params are updated with torch.
    """
    params, grads, rates = _check_sgd(params, grads, lr)
    if not _use_triton(backend, _device_of(params)):
        reference.sgd_step_(params, grads, rates)
        return
    fast = [i for i, p in enumerate(params) if p.is_contiguous() and p.dtype in _TRITON_DTYPES]
    slow = sorted(set(range(len(params))) - set(fast))
    with torch.no_grad():
        if fast:
            sub_lr = rates if isinstance(rates, float) else [rates[i] for i in fast]
            updated = [params[i] for i in fast]
            _tri.launch_sgd(updated, [grads[i] for i in fast], updated, sub_lr)
            # The kernel writes through raw pointers; bump the version counters as an
            # in-place torch op would, so autograd still detects use-after-modification.
            for t in updated:
                increment_version(t)
        if slow:
            sub_lr = rates if isinstance(rates, float) else [rates[i] for i in slow]
            reference.sgd_step_([params[i] for i in slow], [grads[i] for i in slow], sub_lr)


def sgd_step(
    params: Sequence[Tensor], grads: Sequence[Tensor], lr: LearningRate, backend: Backend = "auto"
) -> list[Tensor]:
    """Return new tensors ``p - lr * g`` (one launch on the Triton path), differentiable.

    Gradients flow to params, grads and lr tensors, and the backward is itself
    differentiable, so second-order MAML can backpropagate through the inner step.
    """
    params, grads, rates = _check_sgd(params, grads, lr)
    if not params:
        return []
    if not _use_triton(backend, _device_of(params)) or not all(p.dtype in _TRITON_DTYPES for p in params):
        return reference.sgd_step(params, grads, rates)
    if isinstance(rates, float):
        return list(_tri.SgdStep.apply(len(params), rates, *params, *grads))
    return list(_tri.SgdStep.apply(len(params), None, *params, *grads, *rates))
