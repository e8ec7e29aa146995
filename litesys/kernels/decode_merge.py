"""Stage 2 of split decode attention: merge the splits' partial outputs with their log2-sum-exps.

One program per (sequence, query head). Only the splits that cover the sequence's length are read; a
sequence of length 0 (padded CUDA-graph row) gets zeros.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.blocks import split_bounds
from litesys.kernels.common import next_pow2


@triton.jit
def _decode_merge_kernel(
    po_ptr, lse_ptr, len_ptr, out_ptr,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    stride_ob, stride_oh, num_splits,
    BLOCK_N: tl.constexpr, S_BLOCK: tl.constexpr, D: tl.constexpr, SPLIT_TOKENS: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    length = tl.load(len_ptr + b)
    _, _, per = split_bounds(length, 0, num_splits, BLOCK_N, SPLIT_TOKENS)
    n_splits = tl.where(per > 0, tl.cdiv(length, tl.maximum(per, 1)), 0)  # splits that hold tokens
    offs_s = tl.arange(0, S_BLOCK)
    offs_d = tl.arange(0, D)
    lse_row = lse_ptr + b * stride_lb + h * stride_lh
    # pass 1: the largest lse, so the weights below cannot overflow
    m = tl.full([S_BLOCK], float("-inf"), tl.float32)
    for s0 in range(0, n_splits, S_BLOCK):
        idx = s0 + offs_s
        m = tl.maximum(m, tl.load(lse_row + idx, mask=idx < n_splits, other=float("-inf")))
    m_max = tl.max(m, 0)
    m_safe = tl.where(m_max == float("-inf"), 0.0, m_max)
    # pass 2: weighted sum of the partial outputs
    acc = tl.zeros([D], tl.float32)
    den = tl.zeros([S_BLOCK], tl.float32)
    po_row = po_ptr + b * stride_pb + h * stride_ph
    for s0 in range(0, n_splits, S_BLOCK):
        idx = s0 + offs_s
        active = idx < n_splits
        w = tl.exp2(tl.load(lse_row + idx, mask=active, other=float("-inf")) - m_safe)
        o = tl.load(po_row + idx[:, None] * stride_ps + offs_d[None, :], mask=active[:, None], other=0.0)
        acc += tl.sum(w[:, None] * o, 0)
        den += w
    total = tl.sum(den, 0)
    out = acc / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + b * stride_ob + h * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty))


def decode_merge(partial: torch.Tensor, lse: torch.Tensor, lengths: torch.Tensor, out: torch.Tensor,
                 block_n: int, num_warps: int = 4, split_tokens: int = 0) -> None:
    """out [B, Hq, D] <- merge of ``partial`` [B, Hq, S, D] weighted by exp2(``lse`` [B, Hq, S]). Fixed splits
    (``split_tokens > 0``) are summed in lanes of 16 whatever S is, so the sum's order depends on the length only."""
    b, hq, s, d = partial.shape
    s_block = 16 if split_tokens else min(16, next_pow2(s))
    _decode_merge_kernel[(b, hq)](
        partial, lse, lengths, out,
        partial.stride(0), partial.stride(1), partial.stride(2),
        lse.stride(0), lse.stride(1),
        out.stride(0), out.stride(1), s,
        BLOCK_N=block_n, S_BLOCK=s_block, D=d, SPLIT_TOKENS=split_tokens, num_warps=num_warps,
    )
