"""Triton kernels for pairwise scores, softmax over supports, and fused softmax @ values.

One kernel serves three modes (constexpr ``MODE``) so the score code exists once:

* ``MODE_LOGITS``: each program writes one [BLOCK_M, BLOCK_N] tile of ``score / T``.
* ``MODE_SOFTMAX``: each program owns BLOCK_M rows; a first sweep over N keeps the
  running max / sum (online softmax), a second sweep recomputes the scores and writes
  normalised probabilities, so no [M, N] scratch buffer is needed.
* ``MODE_VALUES``: FlashAttention-style; each tile's probabilities go into a
  [BLOCK_M, BLOCK_V] accumulator and are never written, so memory stays O(M * V) for any N.

The interpreter (``TRITON_INTERPRET=1``, used by CPU tests) runs every program in Python,
so there the launcher uses few, large blocks; on CUDA it autotunes. Triton fixes whether it
interprets when it compiles a kernel definition, so :data:`INTERPRET` is read once, at import.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from .reference import COSINE_EPS

INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

METRICS: dict[str, int] = {"sqeuclidean": 0, "cosine": 1, "l1": 2}
MODE_LOGITS, MODE_SOFTMAX, MODE_VALUES = 0, 1, 2


@triton.jit
def _score_tile(
    q_ptr, s_ptr, w_ptr, offs_m, offs_n, mask_m, mask_n, D,
    stride_qm, stride_qd, stride_sn, stride_sd, eps,
    METRIC: tl.constexpr, HAS_W: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Scores of one [BLOCK_M, BLOCK_N] tile, looping over D in BLOCK_D chunks."""
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    q_sq = tl.zeros([BLOCK_M], dtype=ACC)
    s_sq = tl.zeros([BLOCK_N], dtype=ACC)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        q = tl.load(
            q_ptr + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,
            mask=mask_m[:, None] & mask_d[None, :],
            other=0.0,
        )
        s = tl.load(
            s_ptr + offs_n[:, None] * stride_sn + offs_d[None, :] * stride_sd,
            mask=mask_n[:, None] & mask_d[None, :],
            other=0.0,
        )
        if METRIC == 2:
            diff = tl.abs(q.to(ACC)[:, None, :] - s.to(ACC)[None, :, :])
            if HAS_W:
                w = tl.load(w_ptr + offs_d, mask=mask_d, other=0.0).to(ACC)
                diff = diff * w[None, None, :]
            acc += tl.sum(diff, axis=2)
        else:
            # Low-precision inputs go to the tensor cores as they are; fp32/fp64 use
            # PREC ("ieee" by default, so results match the float64 reference).
            acc += tl.dot(q, tl.trans(s), input_precision=PREC, out_dtype=ACC)
            qf = q.to(ACC)
            sf = s.to(ACC)
            q_sq += tl.sum(qf * qf, axis=1)
            s_sq += tl.sum(sf * sf, axis=1)
    if METRIC == 0:
        score = -tl.maximum(q_sq[:, None] + s_sq[None, :] - 2.0 * acc, 0.0)
    elif METRIC == 1:
        q_norm = tl.maximum(tl.sqrt(q_sq), eps)
        s_norm = tl.maximum(tl.sqrt(s_sq), eps)
        score = acc / (q_norm[:, None] * s_norm[None, :])
    else:
        score = -acc
    return score


@triton.jit
def _pairwise_fwd_kernel(
    q_ptr, s_ptr, w_ptr, v_ptr, out_ptr,
    M, N, D, NV,
    stride_qm, stride_qd, stride_sn, stride_sd, stride_vn, stride_vv, stride_om, stride_on,
    inv_temp, eps,
    METRIC: tl.constexpr, HAS_W: tl.constexpr, MODE: tl.constexpr, ACC: tl.constexpr,
    PREC: tl.constexpr, BLOCK_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_1 = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    arange_n = tl.arange(0, BLOCK_N)

    if MODE == 0:
        offs_n = pid_1 * BLOCK_N + arange_n
        mask_n = offs_n < N
        x = _score_tile(q_ptr, s_ptr, w_ptr, offs_m, offs_n, mask_m, mask_n, D,
                        stride_qm, stride_qd, stride_sn, stride_sd, eps,
                        METRIC, HAS_W, ACC, PREC, BLOCK_M, BLOCK_N, BLOCK_D)  # fmt: skip
        x = x * inv_temp
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
        tl.store(out_ptrs, x.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])
    else:
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=ACC)
        l_i = tl.zeros([BLOCK_M], dtype=ACC)
        if MODE == 2:
            offs_v = pid_1 * BLOCK_V + tl.arange(0, BLOCK_V)
            mask_v = offs_v < NV
            acc = tl.zeros([BLOCK_M, BLOCK_V], dtype=ACC)
        for n0 in range(0, N, BLOCK_N):
            offs_n = n0 + arange_n
            mask_n = offs_n < N
            x = _score_tile(q_ptr, s_ptr, w_ptr, offs_m, offs_n, mask_m, mask_n, D,
                            stride_qm, stride_qd, stride_sn, stride_sd, eps,
                            METRIC, HAS_W, ACC, PREC, BLOCK_M, BLOCK_N, BLOCK_D)  # fmt: skip
            x = tl.where(mask_n[None, :], x * inv_temp, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(x, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(x - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if MODE == 2:
                v = tl.load(
                    v_ptr + offs_n[:, None] * stride_vn + offs_v[None, :] * stride_vv,
                    mask=mask_n[:, None] & mask_v[None, :],
                    other=0.0,
                )
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC, out_dtype=ACC)
            m_i = m_new
        if MODE == 2:
            out = acc / l_i[:, None]
            out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_v[None, :] * stride_on
            tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_v[None, :])
        else:
            # Second sweep: recompute each tile and write exp(x - max) / sum.
            inv_l = 1.0 / l_i
            for n0 in range(0, N, BLOCK_N):
                offs_n = n0 + arange_n
                mask_n = offs_n < N
                x = _score_tile(q_ptr, s_ptr, w_ptr, offs_m, offs_n, mask_m, mask_n, D,
                                stride_qm, stride_qd, stride_sn, stride_sd, eps,
                                METRIC, HAS_W, ACC, PREC, BLOCK_M, BLOCK_N, BLOCK_D)  # fmt: skip
                p = tl.exp(x * inv_temp - m_i[:, None]) * inv_l[:, None]
                out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on
                tl.store(out_ptrs, p.to(out_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def _dot_configs() -> list[triton.Config]:
    """GPU configs for the matmul-shaped metrics (tl.dot needs every dim >= 16)."""
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": bd}, num_warps=w, num_stages=st)
        for bm, bn, bd, w, st in [
            (64, 64, 32, 4, 3),
            (128, 64, 32, 4, 3),
            (64, 128, 32, 4, 3),
            (128, 128, 32, 8, 3),
            (32, 32, 64, 4, 2),
            (16, 64, 64, 4, 2),
        ]
    ]


def _l1_configs() -> list[triton.Config]:
    """GPU configs for L1, whose [BLOCK_M, BLOCK_N, BLOCK_D] tile lives in registers."""
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": bd}, num_warps=w)
        for bm, bn, bd, w in [(32, 32, 8, 4), (64, 32, 4, 4), (32, 64, 4, 4), (16, 16, 16, 2), (64, 64, 4, 8)]
    ]


_KEY = ["M", "N", "D", "NV", "METRIC", "MODE"]
if not INTERPRET:  # autotuning benchmarks every config: pointless and very slow when interpreting
    _fwd_dot_tuned = triton.autotune(configs=_dot_configs(), key=_KEY)(_pairwise_fwd_kernel)
    _fwd_l1_tuned = triton.autotune(configs=_l1_configs(), key=_KEY)(_pairwise_fwd_kernel)


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(1, n))))


def _interpreter_blocks(m: int, n: int, d: int, metric: int) -> tuple[int, int, int]:
    """Few, large blocks: the interpreter's cost is per program, numpy does the rest."""
    bm = _pow2(m, 16, 128)
    bn = _pow2(n, 16, 128)
    # For L1, bound the [bm, bn, bd] difference tile numpy materialises.
    bd = _pow2(d, 1, max(1, (1 << 19) // (bm * bn))) if metric == 2 else _pow2(d, 16, 256)
    return bm, bn, bd


def pairwise_forward(
    q: Tensor,
    s: Tensor,
    metric: str,
    mode: int,
    values: Tensor | None,
    temperature: float,
    weights: Tensor | None,
) -> Tensor:
    """Launch the forward kernel; arguments are assumed validated by ``dispatch``."""
    m, d = q.shape
    n = s.shape[0]
    met = METRICS[metric]
    nv = values.shape[1] if values is not None else 0
    out_cols = nv if mode == MODE_VALUES else n
    out = torch.empty((m, out_cols), device=q.device, dtype=q.dtype)
    if m == 0 or out_cols == 0:
        return out
    if n == 0:  # softmax over an empty set is undefined; match torch (empty @ values = 0)
        return out.zero_()
    acc = tl.float64 if q.dtype == torch.float64 else tl.float32
    block_v = _pow2(nv, 16, 256 if INTERPRET else 64)
    v_arg = values if values is not None else q
    w_arg = weights if weights is not None else q
    sv = (values.stride(0), values.stride(1)) if values is not None else (0, 0)
    args = (
        q, s, w_arg, v_arg, out, m, n, d, nv,
        q.stride(0), q.stride(1), s.stride(0), s.stride(1), sv[0], sv[1], out.stride(0), out.stride(1),
        1.0 / temperature, COSINE_EPS,
    )  # fmt: skip
    consts = {
        "METRIC": met, "HAS_W": weights is not None, "MODE": mode, "ACC": acc, "PREC": "ieee",
        "BLOCK_V": block_v,
    }  # fmt: skip

    def second_axis(block_n: int) -> int:
        if mode == MODE_LOGITS:
            return triton.cdiv(n, block_n)
        return triton.cdiv(nv, block_v) if mode == MODE_VALUES else 1

    if INTERPRET:
        bm, bn, bd = _interpreter_blocks(m, n, d, met)
        grid = (triton.cdiv(m, bm), second_axis(bn))
        _pairwise_fwd_kernel[grid](*args, **consts, BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd)
    else:
        kernel = _fwd_l1_tuned if met == 2 else _fwd_dot_tuned
        kernel[lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), second_axis(meta["BLOCK_N"]))](*args, **consts)
    return out
