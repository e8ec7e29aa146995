"""Raw decode logits: fp32 ``q·k * scale`` as ``[B, Hq, L]``, ``-inf`` at positions >= length.

One program per (sequence, KV head, chunk of CHUNK positions); like the fused kernel it reads each K row
once for the G query heads of its group. Chunks past the length only write -inf (no K reads).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.blocks import fp8_scales, mma
from litesys.kernels.common import cdiv


@triton.jit
def _decode_logits_kernel(
    q_ptr, k_ptr, pt_ptr, len_ptr, out_ptr,
    stride_qb, stride_qh,
    stride_kp, stride_ks, stride_kh,
    stride_ptb,
    stride_ob, stride_oh,
    max_len, scale, ks_ptr,
    G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, FP8: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    chunk = tl.program_id(2)
    k_scale, _ = fp8_scales(ks_ptr, ks_ptr, kvh, FP8)
    if FP8:  # fp8 pages: the logits are q·(k8 * k_scale) * scale
        scale = scale * k_scale
    length = tl.minimum(tl.load(len_ptr + b), max_len)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    heads = kvh * G + offs_g
    g_mask = offs_g < G
    out_rows = out_ptr + b * stride_ob + heads[:, None] * stride_oh
    start = chunk * CHUNK
    if start >= length:
        neg = tl.full([G_PAD, BLOCK_N], float("-inf"), tl.float32)
        for i in tl.static_range(0, CHUNK, BLOCK_N):
            pos = start + i + offs_n
            tl.store(out_rows + pos[None, :], neg, mask=g_mask[:, None] & (pos < max_len)[None, :])
    else:
        q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                    mask=g_mask[:, None], other=0.0)
        pt_row = pt_ptr + b * stride_ptb
        for i in tl.static_range(0, CHUNK, BLOCK_N):
            pos = start + i + offs_n
            valid = pos < length
            page = tl.load(pt_row + pos // PAGE, mask=valid, other=0).to(tl.int64)
            k = tl.load(k_ptr + (page * stride_kp + (pos % PAGE) * stride_ks + kvh * stride_kh)[:, None]
                        + offs_d[None, :], mask=valid[:, None], other=0.0).to(q.dtype)
            s = mma(q, tl.trans(k), DOT_PREC) * scale
            s = tl.where(valid[None, :], s, float("-inf"))
            tl.store(out_rows + pos[None, :], s, mask=g_mask[:, None] & (pos < max_len)[None, :])


def decode_logits(q: torch.Tensor, k_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
                  out: torch.Tensor, scale: float, chunk: int, block_n: int, group_pad: int, dot_prec: str,
                  num_warps: int, num_stages: int, k_scale: torch.Tensor | None = None) -> None:
    """Fill ``out`` [B, Hq, L] fp32 (every element is written); fp8 caches: ``k_scale`` [Hkv] fp32."""
    b, hq, d = q.shape
    hkv = k_cache.shape[2]
    max_len = out.shape[2]
    grid = (b, hkv, cdiv(max_len, chunk))
    _decode_logits_kernel[grid](
        q, k_cache, page_table, lengths, out,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        page_table.stride(0),
        out.stride(0), out.stride(1),
        max_len, scale, lengths if k_scale is None else k_scale,
        G=hq // hkv, G_PAD=group_pad, D=d, PAGE=k_cache.shape[1], CHUNK=chunk, BLOCK_N=block_n,
        DOT_PREC=dot_prec, FP8=k_scale is not None, num_warps=num_warps, num_stages=num_stages,
    )
