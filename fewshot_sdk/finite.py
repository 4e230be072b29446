"""The finiteness check behind every "contains NaN or infinite values" error."""

from __future__ import annotations

import math

import torch


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether every element of ``tensor`` is finite (integer tensors always are).

    A sum is NaN or infinite whenever one of its terms is, and one reduction beats
    ``torch.isfinite(t).all()``'s mask and second reduction by far on CPU (1x1x28x28: 1.4 vs
    6.6 us; 64 glyphs: 2.8 vs 94 us; 16 photos at 224x224: 0.34 vs 5.3 ms), which mattered on
    every predict. Only a sum that overflows from huge finite terms needs the element-wise
    check to tell the two apart. Half-precision tensors are summed in float32 to keep that rare.
    """
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return True
    low_precision = tensor.dtype in (torch.float16, torch.bfloat16)
    total = tensor.sum(dtype=torch.float32) if low_precision else tensor.sum()
    if math.isfinite(abs(complex(total)) if total.is_complex() else float(total)):
        return True
    return bool(torch.isfinite(tensor).all())
