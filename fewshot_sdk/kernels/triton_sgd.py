"""Triton multi-tensor SGD: one launch updates (or copies-and-updates) many tensors.

On a GPU, one elementwise launch per parameter dominates a MAML-style inner step on small
networks. Instead the host builds an ``int64`` table of raw addresses and sizes and a block list
(which tensor, which offset); each program turns its row's addresses back into typed pointers and
updates BLOCK elements. All tensors in one launch share a dtype; ``dispatch`` groups mixed lists.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_pairwise import INTERPRET

_TL_DTYPES = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}
SUPPORTED_DTYPES = frozenset(_TL_DTYPES)

#: Elements per program.  The interpreter pays per program, so it gets huge blocks.
BLOCK = 1 << 16 if INTERPRET else 2048


@triton.jit
def _multi_sgd_kernel(
    table, numels, blk_tensor, blk_start, lr_value, T,
    DTYPE: tl.constexpr, COMPUTE: tl.constexpr, LR_TENSORS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """``table`` is int64 [5, T]: param, grad, out, lr addresses and lr-is-full flags.

    COMPUTE is float32 for 16/32-bit params (half inputs are updated in fp32) and
    float64 for float64 params.
    """
    pid = tl.program_id(0)
    t = tl.load(blk_tensor + pid)
    offs = tl.load(blk_start + pid) + tl.arange(0, BLOCK)
    mask = offs < tl.load(numels + t)
    p_ptr = tl.load(table + t).to(tl.pointer_type(DTYPE))
    g_ptr = tl.load(table + T + t).to(tl.pointer_type(DTYPE))
    o_ptr = tl.load(table + 2 * T + t).to(tl.pointer_type(DTYPE))
    p = tl.load(p_ptr + offs, mask=mask).to(COMPUTE)
    g = tl.load(g_ptr + offs, mask=mask).to(p.dtype)
    if LR_TENSORS:
        lr_ptr = tl.load(table + 3 * T + t).to(tl.pointer_type(DTYPE))
        full = tl.load(table + 4 * T + t)
        lr = tl.load(lr_ptr + tl.where(full != 0, offs, 0), mask=mask).to(p.dtype)
    else:
        lr = lr_value
    tl.store(o_ptr + offs, (p - lr * g).to(DTYPE), mask=mask)


_LAYOUT_CACHE: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
_LAYOUT_CACHE_MAX = 64


def _block_layout(numels: tuple[int, ...], block: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(numels, block -> tensor index, block -> start offset) on ``device``, cached.

    The layout depends only on the sizes, which are fixed for a given network, so an
    inner loop pays for building it (and its host-to-device copy) once.
    """
    key = (numels, block, device)
    hit = _LAYOUT_CACHE.get(key)
    if hit is not None:
        return hit
    sizes = torch.tensor(numels, dtype=torch.int64)
    counts = (sizes + block - 1) // block
    tensor_of_block = torch.repeat_interleave(torch.arange(len(numels)), counts)
    first_block = torch.cumsum(counts, 0) - counts
    start = (torch.arange(int(counts.sum())) - first_block[tensor_of_block]) * block
    layout = tuple(x.to(torch.int32).to(device) for x in (sizes, tensor_of_block, start))
    if len(_LAYOUT_CACHE) >= _LAYOUT_CACHE_MAX:
        _LAYOUT_CACHE.clear()
    _LAYOUT_CACHE[key] = layout  # type: ignore[assignment]
    return layout  # type: ignore[return-value]


def multi_sgd(params: list[Tensor], grads: list[Tensor], outs: list[Tensor], lr: float | list[Tensor]) -> None:
    """Write ``params[i] - lr[i] * grads[i]`` into ``outs[i]`` with one kernel launch.

    All tensors must be contiguous, on one device and of one dtype; ``outs`` may be
    ``params`` (in-place update).  ``lr`` is a float, or one tensor per param holding
    either one element or ``param.numel()`` elements.
    """
    numels = tuple(p.numel() for p in params)
    if sum(numels) == 0:
        return
    device = params[0].device
    sizes, blk_tensor, blk_start = _block_layout(numels, BLOCK, device)
    lr_tensors = not isinstance(lr, float)
    rows = [[t.data_ptr() for t in params], [t.data_ptr() for t in grads], [t.data_ptr() for t in outs]]
    if lr_tensors:
        rows += [[r.data_ptr() for r in lr], [int(r.numel() != 1) for r in lr]]
    else:
        rows += [[0] * len(params), [0] * len(params)]
    table = torch.tensor(rows, dtype=torch.int64).to(device, non_blocking=True)
    _multi_sgd_kernel[(blk_tensor.numel(),)](
        table, sizes, blk_tensor, blk_start, 0.0 if lr_tensors else lr, len(params),
        DTYPE=_TL_DTYPES[params[0].dtype], LR_TENSORS=lr_tensors, BLOCK=BLOCK,
        COMPUTE=tl.float64 if params[0].dtype == torch.float64 else tl.float32,
    )  # fmt: skip
