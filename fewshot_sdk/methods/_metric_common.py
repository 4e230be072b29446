"""Helpers shared by the metric-based methods (Siamese, Matching, Relation).

They all store per-support or per-class tensors, compare queries against them,
and (Siamese, Relation) turn independent sigmoid scores into one distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fewshot_sdk.errors import InputError


def check_support(support_x: torch.Tensor, support_y: torch.Tensor, n_way: int) -> None:
    """Refuse a support set these methods cannot adapt to, with one line naming the problem.

    ``fs.SupportSet`` already validates what users build; this guards the tensor path
    (``adapt_tensors`` / ``fit_task``) against the same mistakes.
    """
    if n_way < 2:
        raise InputError(f"a support set needs at least 2 classes; got n_way={n_way}")
    if support_x.ndim < 2:  # [N, C, H, W] images, or [N, ...] backbone outputs cached by evaluation
        raise InputError(f"support images must be [N, C, H, W]; got shape {tuple(support_x.shape)}")
    if support_y.ndim != 1 or len(support_y) != len(support_x):
        raise InputError(
            f"support has {len(support_x)} images but {tuple(support_y.shape)} labels: give one label per image"
        )
    if support_y.is_floating_point() or support_y.is_complex():
        raise InputError(f"support labels must be integer class indices, got {support_y.dtype}")
    if len(support_y) == 0 or int(support_y.min()) < 0 or int(support_y.max()) >= n_way:
        raise InputError(f"support labels must lie in 0..{n_way - 1}")
    counts = torch.bincount(support_y, minlength=n_way)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise InputError(f"classes {missing} have no support example; every class 0..{n_way - 1} needs one")


def one_hot(labels: torch.Tensor, n_way: int, like: torch.Tensor) -> torch.Tensor:
    """[N, n_way] one-hot labels in ``like``'s dtype and device (the values read by attention)."""
    return F.one_hot(labels, n_way).to(dtype=like.dtype, device=like.device)


def per_class_max(pair_logits: torch.Tensor, support_classes: torch.Tensor) -> torch.Tensor:
    """For each query, the best score among each class's support examples: [B, N] x [N, C] -> [B, C].

    Written with ``where``/``amax`` on finite fillers (no boolean indexing, no infinities)
    so it traces to ONNX.
    """
    lowest = torch.finfo(pair_logits.dtype).min
    member = support_classes.t()[None] > 0.5  # [1, C, N]
    scores = torch.where(member, pair_logits[:, None, :], torch.full_like(pair_logits[:, None, :], lowest))
    return scores.amax(dim=-1)


def normalised_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """sigmoid(l_c) / sum_c' sigmoid(l_c'), computed as softmax(log sigmoid(l)) so it never divides 0 by 0.

    log sigmoid(l) = min(l, 0) - log(1 + exp(-|l|)) is spelt out rather than ``F.logsigmoid``:
    exported to ONNX, the latter goes through onnxruntime's approximate Sigmoid, whose absolute
    error swamps sigmoid scores near 1e-7 (a 2.5e-4 probability error on a relation task).
    """
    log_sigmoid = torch.clamp(logits, max=0.0) - torch.log1p(torch.exp(-logits.abs()))
    return log_sigmoid.softmax(dim=-1)
