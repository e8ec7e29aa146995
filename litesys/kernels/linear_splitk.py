"""Split-K GEMM for a decode step's output projections (o_proj, down_proj): ``y = x @ w.T`` as ``S`` fp32 partial
sums ``[S, M, N]``, one per slice of K, that the following add+RMSNorm adds up (``norm_rope.add_rms_norm`` takes
a 3-D input as partials).

Why: at decode sizes these GEMMs are narrow (N = hidden, 1024-4096) and long (K = 2048-12288); cuBLAS tiles them
into a few dozen programs and runs at 15-45% of the weights' bytes (H200, M <= 256). Splitting K puts a program on
every SM; the partials cost no extra kernel because the norm that follows reads them instead of one bf16 row.
``silu=True`` takes the gate_up output ``[M, 2K]`` and applies SiLU(gate)·up while loading it (down_proj without
the separate ``silu_mul`` launch), rounding where ``silu_mul`` rounds.

``split_plan`` is a function of the shapes only (CUDA-graph replays see one grid); it returns None where cuBLAS
is the better choice (prefill sizes).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from litesys.kernels.common import cdiv, dot_precision, next_pow2, num_sms

try:
    import triton
    import triton.language as tl

    from litesys.kernels.blocks import mma
except ImportError:  # pragma: no cover - CPU installs without triton
    triton = None

MAX_M = 256  # above this many rows cuBLAS's tiles are full and its single pass wins


@dataclass(frozen=True)
class SplitPlan:
    block_m: int
    block_n: int
    block_k: int
    splits: int
    num_warps: int
    num_stages: int


@functools.cache
def split_plan(m: int, n: int, k: int, sms: int, programs_per_sm: float = 1.0, block_n: int = 64,
               block_k: int = 128) -> SplitPlan | None:
    """Tiles and splits for ``[m, k] @ [n, k].T``: the fewest K slices that give every SM ``programs_per_sm``
    programs, each slice whole ``block_k`` steps and at least two of them. None: not a decode-sized GEMM."""
    if m > MAX_M or k % 16 or n % 16:
        return None
    block_m = max(16, min(128, next_pow2(m)))
    block_k = min(block_k, next_pow2(k))
    tiles = cdiv(n, block_n) * cdiv(m, block_m)
    steps = cdiv(k, block_k)
    splits = max(1, min(cdiv(int(programs_per_sm * sms), tiles), steps // 2))
    return SplitPlan(block_m, block_n, block_k, splits, 4 if block_m <= 64 else 8, 4)


def linear_partials(x: torch.Tensor, w: torch.Tensor, plan: SplitPlan | None = None, silu: bool = False
                    ) -> torch.Tensor:
    """x [M, K] (``silu``: [M, 2K], gate columns first) @ w [N, K].T as fp32 partials [S, M, N] (Triton: CUDA, or
    CPU under ``TRITON_INTERPRET=1``)."""
    m, kx = x.shape
    n, k = w.shape
    if kx != (2 * k if silu else k) or x.stride(1) != 1 or w.stride(1) != 1:
        raise ValueError(f"linear_partials: x {tuple(x.shape)} (row-major) does not match w {tuple(w.shape)}"
                         f"{' with silu (x holds gate and up)' if silu else ''}")
    plan = plan or split_plan(m, n, k, num_sms(x.device))
    if plan is None:
        raise ValueError(f"linear_partials: no split plan for M={m} (max {MAX_M}), N={n}, K={k}")
    k_split = cdiv(cdiv(k, plan.splits), plan.block_k) * plan.block_k
    splits = cdiv(k, k_split)  # rounding the slice up to whole steps may leave fewer slices
    out = torch.empty(splits, m, n, dtype=torch.float32, device=x.device)
    grid = (cdiv(n, plan.block_n), cdiv(m, plan.block_m), splits)
    _splitk_kernel[grid](x, w, out, m, n, k, x.stride(0), w.stride(0), k_split, SILU=silu,
                         EVEN_K=k % plan.block_k == 0, BLOCK_M=plan.block_m, BLOCK_N=plan.block_n,
                         BLOCK_K=plan.block_k, DOT_PREC=dot_precision(x.dtype), num_warps=plan.num_warps,
                         num_stages=plan.num_stages)
    return out


if triton is not None:

    @triton.jit(do_not_specialize=["M"])
    def _splitk_kernel(x_ptr, w_ptr, out_ptr, M, N, K, stride_xm, stride_wn, k_split, SILU: tl.constexpr,
                       EVEN_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       DOT_PREC: tl.constexpr):
        pid_n, pid_m, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        k_lo = s * k_split
        k_hi = tl.minimum(k_lo + k_split, K)
        m_ok = offs_m[:, None] < M
        n_ok = offs_n[None, :] < N
        x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + k_lo + offs_k[None, :]
        w_ptrs = w_ptr + offs_n[None, :].to(tl.int64) * stride_wn + k_lo + offs_k[:, None]  # [BLOCK_K, BLOCK_N] of w.T
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for k0 in range(k_lo, k_hi, BLOCK_K):
            if EVEN_K:
                a_mask = m_ok
                b_mask = n_ok
            else:
                k_ok = offs_k < k_hi - k0
                a_mask = m_ok & k_ok[None, :]
                b_mask = n_ok & k_ok[:, None]
            a = tl.load(x_ptrs, mask=a_mask, other=0.0)
            if SILU:  # as norm_rope.silu_mul: SiLU in fp32 rounded, times up in fp32 rounded
                u = tl.load(x_ptrs + K, mask=a_mask, other=0.0)
                g = a.to(tl.float32)
                a = ((g / (1.0 + tl.exp(-g))).to(u.dtype).to(tl.float32) * u.to(tl.float32)).to(u.dtype)
            b = tl.load(w_ptrs, mask=b_mask, other=0.0)
            acc += mma(a, b, DOT_PREC)
            x_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        out = out_ptr + s.to(tl.int64) * M * N + offs_m[:, None].to(tl.int64) * N + offs_n[None, :]
        tl.store(out, acc, mask=m_ok & n_ok)
