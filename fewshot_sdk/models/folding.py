"""Batch norm folded into the convolution before it, for inference.

In eval mode a batch norm with fixed statistics (a network's running averages, a MAML task's
support statistics) is a per-channel affine map, ``(x - mean) * gamma / sqrt(var + eps) + beta``.
Right after a convolution it folds into that convolution's weights and bias, and the network runs
one pass over each activation fewer. On CPU that is worth more than the pass: each removed pass is
one activation-sized tensor fewer to allocate, and glibc gives large freed blocks back to the
kernel, which zero-fills them again on the next call (``benchmarks/results/batchnorm_folding_cpu.md``).

Folding is exact in real arithmetic; in float32 the folded weights (computed in float64, rounded
once) move outputs by about 1e-6 of their scale. Only pairs that are certainly a convolution
feeding a batch norm are folded: adjacent children of a plain ``nn.Sequential`` (a subclass may
run its children in another order, unless it says ``runs_children_in_order = True``), a batch norm
in eval mode with statistics of its own.
"""

from __future__ import annotations

import copy
from itertools import pairwise

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def foldable_pairs(network: nn.Module) -> list[tuple[nn.Sequential, str, str]]:
    """(container, convolution's name, batch norm's name) for every pair :func:`fold_batchnorm_` folds."""
    pairs = []
    for container in network.modules():
        if type(container) is not nn.Sequential and not getattr(container, "runs_children_in_order", False):
            continue
        names = list(container._modules)
        for first, second in pairwise(names):
            convolution, norm = container._modules[first], container._modules[second]
            if isinstance(convolution, CONVOLUTIONS) and _folds_into(norm, convolution):
                pairs.append((container, first, second))
    return pairs


def _folds_into(norm: nn.Module | None, convolution: nn.Module) -> bool:
    return (
        isinstance(norm, _BatchNorm)
        and not norm.training
        and norm.running_mean is not None
        and norm.running_var is not None
        and norm.num_features == convolution.out_channels
    )


def fold_batchnorm_(network: nn.Module) -> int:
    """Fold every foldable batch norm of ``network`` into its convolution, in place; how many were folded.

    Each folded convolution gets new weight and bias parameters (without gradients) and its batch
    norm becomes an ``nn.Identity``: call it on a network of your own (a copy), never on a learner's.
    """
    pairs = foldable_pairs(network)
    with torch.no_grad():
        for container, first, second in pairs:
            convolution, norm = container._modules[first], container._modules[second]
            weight = convolution.weight
            scale = torch.rsqrt(norm.running_var.double() + norm.eps)
            shift = -norm.running_mean.double() * scale
            if norm.affine:
                scale = scale * norm.weight.double()
                shift = shift * norm.weight.double() + norm.bias.double()
            bias = shift if convolution.bias is None else convolution.bias.double() * scale + shift
            folded = weight.double() * scale.view(-1, *(1,) * (weight.ndim - 1))
            convolution.weight = nn.Parameter(folded.to(weight.dtype), requires_grad=False)
            convolution.bias = nn.Parameter(bias.to(weight.dtype), requires_grad=False)
            container._modules[second] = nn.Identity()
    return len(pairs)


def folded_copy(network: nn.Module) -> nn.Module:
    """A copy of ``network`` for inference: eval mode, no autograd, each foldable batch norm folded.

    The caller's network is never touched, so a learner keeps training while a task's copy answers.
    """
    copied = copy.deepcopy(network).eval().requires_grad_(False)
    fold_batchnorm_(copied)
    return copied
