"""Helpers shared by the metric-based methods (Siamese, Matching, Relation).

They all store per-support or per-class tensors, compare queries against them,
and (Siamese, Relation) turn independent sigmoid scores into one distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    """sigmoid(l_c) / sum_c' sigmoid(l_c'), computed as softmax(log sigmoid(l)) so it never divides 0 by 0."""
    return log_sigmoid(logits).softmax(dim=-1)


def log_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """log sigmoid(l) = min(l, 0) - log(1 + exp(-|l|)).

    Spelt out rather than ``F.logsigmoid``: exported to ONNX, the latter goes through onnxruntime's
    approximate Sigmoid, whose absolute error swamps sigmoid scores near 1e-7 (a 2.5e-4 probability
    error on a relation task).
    """
    return torch.clamp(logits, max=0.0) - torch.log1p(torch.exp(-logits.abs()))
