"""External-memory primitives of the Memory-Augmented Neural Network (Santoro et al. 2016).

Batched over episodes: ``memory`` is [B, S, W] (S slots of width W), ``usage`` is
[B, S], read/write weights are [B, H, S] for H heads. Each function is one
equation of the paper's Least Recently Used Access (LRUA) module, so the tests can
check them one by one against a direct float64 implementation.

- content read (eqs. 2-4): w^r_t(i) = softmax_i(K(k_t, M_t(i))), K = cosine;
  r_t = sum_i w^r_t(i) M_t(i). The softmax over cosine scores is the kernel
  ``pairwise_softmax(..., metric="cosine")``.
- least-used weights (eq. 6): w^lu_t(i) = 1 if w^u_t(i) <= m(w^u_t, n) else 0, with
  m(v, n) the n-th smallest element of v and n the number of read heads; ties are
  broken by slot index (stable sort), so exactly n slots are chosen.
- write weights (eq. 7): w^w_t = sigma(alpha) w^r_{t-1} + (1 - sigma(alpha)) w^lu_{t-1}.
- write (eq. 8): the least-used slot is zeroed, then M_t(i) = M_{t-1}(i) + sum_h w^w_{h,t}(i) a_{h,t}.
- usage (eq. 5): w^u_t = gamma w^u_{t-1} + sum_h w^r_{h,t} + sum_h w^w_{h,t}.
"""

from __future__ import annotations

import torch

from fewshot_sdk.kernels import pairwise_softmax


def least_used_weights(usage: torch.Tensor, n: int) -> torch.Tensor:
    """Multi-hot [B, S] of the ``n`` least-used slots (eq. 6; ties go to the lower slot index)."""
    order = usage.argsort(dim=-1, stable=True)[:, :n]
    return torch.zeros_like(usage).scatter(-1, order, 1.0)


def write_weights(gate_logits: torch.Tensor, prev_read: torch.Tensor, prev_usage: torch.Tensor) -> torch.Tensor:
    """w^w_t [B, H, S] = sigma(alpha) w^r_{t-1} + (1 - sigma(alpha)) w^lu_{t-1} (eq. 7); gate_logits is [B, H]."""
    least_used = least_used_weights(prev_usage, prev_read.shape[1])
    sigma = torch.sigmoid(gate_logits).unsqueeze(-1)
    return sigma * prev_read + (1 - sigma) * least_used.unsqueeze(1)


def write(memory: torch.Tensor, prev_usage: torch.Tensor, weights: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """M_t: zero the least-used slot of M_{t-1}, then add sum_h w^w_h(i) a_h (eq. 8); ``add`` is [B, H, W]."""
    keep = torch.ones_like(prev_usage).scatter(-1, prev_usage.argmin(dim=-1, keepdim=True), 0.0)
    return memory * keep.unsqueeze(-1) + weights.transpose(1, 2) @ add


def read_weights(keys: torch.Tensor, memory: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """w^r_t [B, H, S]: softmax over slots of cosine(k_h, M(i)) / temperature (eqs. 2-3), via the kernel."""
    return torch.stack(
        [pairwise_softmax(k, m, "cosine", temperature=temperature) for k, m in zip(keys, memory, strict=True)]
    )


def update_usage(prev_usage: torch.Tensor, read: torch.Tensor, written: torch.Tensor, gamma: float) -> torch.Tensor:
    """w^u_t = gamma w^u_{t-1} + sum_h w^r_h + sum_h w^w_h (eq. 5)."""
    return gamma * prev_usage + read.sum(1) + written.sum(1)
