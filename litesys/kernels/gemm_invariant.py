"""Batch-invariant GEMM (``y = x @ w.T + b``): each row's result does not depend on how many rows ``x`` has.

One tile shape per weight shape (never per ``M``), the K reduction in fixed ``BLOCK_K`` steps inside one program
(no split-K), so a row goes through the same arithmetic alone or among 255 others. ``invariant_linear`` picks the
Triton kernel on CUDA and the PyTorch twin (``ref/gemm_invariant.py``) elsewhere. See docs/reproducibility.md.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from litesys.kernels.common import dot_precision, num_sms, use_triton
from litesys.kernels.ref.gemm_invariant import linear_ref


@dataclass(frozen=True)
class GemmTiles:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


@functools.cache
def gemm_tiles(n: int, k: int, dtype: torch.dtype, sms: int) -> GemmTiles:
    """Tiles from the weight's shape, dtype and the SM count only: a function of M would break invariance.

    Narrow N tiles for narrow weights, so that a decode GEMM (one M tile) still puts a program on every SM."""
    if dtype == torch.float32:
        return GemmTiles(32, 32, 32, 4, 2)
    block_n = next((b for b in (128, 64, 32) if triton.cdiv(n, b) >= sms), 32)
    return GemmTiles(64, block_n, 64 if block_n == 128 else 128, 4, 4)


@triton.jit(do_not_specialize=["M"])  # M == 1 or M % 16 == 0 must not compile a different kernel
def _gemm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, N, K, stride_xm, stride_wn, stride_ym,
                 HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 GROUP_M: tl.constexpr, DOT_PREC: tl.constexpr):
    # grouped program order (L2 reuse of weight tiles); it changes which program runs a tile, never its arithmetic
    pid = tl.program_id(0)
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    rows_in_group = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % rows_in_group
    pid_n = (pid % per_group) // rows_in_group
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + offs_m[:, None].to(tl.int64) * stride_xm + offs_k[None, :]
    w_ptrs = w_ptr + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]  # [BLOCK_K, BLOCK_N] of w.T
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):  # the one reduction order: BLOCK_K steps from 0, whatever M is
        k_ok = offs_k < K - k0
        a = tl.load(x_ptrs, mask=(offs_m[:, None] < M) & k_ok[None, :], other=0.0)
        b = tl.load(w_ptrs, mask=k_ok[:, None] & (offs_n[None, :] < N), other=0.0)
        if DOT_PREC == "upcast":  # CPU interpreter only: numpy has no bf16
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc, input_precision=DOT_PREC)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + offs_m[:, None].to(tl.int64) * stride_ym + offs_n[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def gemm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, tiles: GemmTiles | None = None,
         group_m: int = 8) -> torch.Tensor:
    """Triton ``x [M, K] @ w [N, K].T (+ b [N])`` -> ``[M, N]`` in x's dtype, batch-invariant (see module doc)."""
    m, k = x.shape
    n = w.shape[0]
    if w.shape[1] != k or (b is not None and b.shape != (n,)):
        raise ValueError(f"invariant GEMM: x {tuple(x.shape)}, w {tuple(w.shape)}, b "
                         f"{None if b is None else tuple(b.shape)} do not fit y = x @ w.T + b")
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y
    x = x if x.stride(-1) == 1 else x.contiguous()
    w = w if w.stride(-1) == 1 else w.contiguous()
    t = tiles or gemm_tiles(n, k, w.dtype, num_sms(x.device))
    grid = (triton.cdiv(m, t.block_m) * triton.cdiv(n, t.block_n),)
    _gemm_kernel[grid](x, w, w if b is None else b, y, m, n, k, x.stride(0), w.stride(0), y.stride(0),
                       HAS_BIAS=b is not None, BLOCK_M=t.block_m, BLOCK_N=t.block_n, BLOCK_K=t.block_k,
                       GROUP_M=group_m, DOT_PREC=dot_precision(w.dtype), num_warps=t.num_warps,
                       num_stages=t.num_stages)
    return y


def invariant_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` whose rows do not depend on the batch: the Triton kernel on CUDA, the PyTorch twin elsewhere.
    ``x`` [..., K], ``w`` [N, K], ``b`` [N] or None -> [..., N]."""
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    y = gemm(x2, w, b) if use_triton(x) else linear_ref(x2, w, b)
    return y.reshape(*lead, w.shape[0])
