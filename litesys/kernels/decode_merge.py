"""Stage 2 of split decode attention: merge the splits' partial outputs with their log2-sum-exps.

Two ways, same bits: as its own kernel (``decode_merge``: one program per (sequence, query head); the default), or
folded into the split kernel (``fold_merge``, ``DecodeConfig.fold_merge``: the last split program of a (sequence,
KV head) to finish merges its G query heads, no second launch; slower on the H200, launch.py says by how much).
Both run ``merge_head``: only the splits that cover the sequence's length are read, in split order; a sequence of
length 0 (padded CUDA-graph row) gets zeros.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.blocks import gpu_fence, split_bounds
from litesys.kernels.common import next_pow2


def merge_lanes(num_splits: int, split_tokens: int) -> int:
    """Splits the merge reads at once (``S_BLOCK``). Fixed splits (``split_tokens > 0``): 16 whatever the count,
    so the sum's order depends on the length only (deterministic mode)."""
    return 16 if split_tokens else min(16, next_pow2(num_splits))


@triton.jit
def splits_with_tokens(length, num_splits, BLOCK_N: tl.constexpr, SPLIT_TOKENS: tl.constexpr):
    """How many of the ``num_splits`` splits of a row of ``length`` tokens hold any (``split_bounds``)."""
    _, _, per = split_bounds(length, 0, num_splits, BLOCK_N, SPLIT_TOKENS)
    return tl.where(per > 0, tl.cdiv(length, tl.maximum(per, 1)), 0)


# noinline: its own function, so the folded kernel keeps its registers (Triton 3.6, sm_90, fp8: 117, inlined 143: 3
# programs per SM instead of 4) and the merge keeps the merge kernel's tile layouts (inlined, its [16, D] partials
# took the q tile's, another summation order)
@triton.jit(noinline=True)
def merge_head(po_row, lse_row, out_row, n_splits, stride_ps, S_BLOCK: tl.constexpr, D: tl.constexpr):
    """out_row [D] <- the first ``n_splits`` partials of one query head (``po_row`` [S, D] fp32 at ``stride_ps``,
    ``lse_row`` [S] log2-sum-exps) weighted by exp2(lse - max lse). Partials are read through L2 (``.cg``): the
    folded merge reads what other programs of its launch wrote."""
    offs_s = tl.arange(0, S_BLOCK)
    offs_d = tl.arange(0, D)
    # pass 1: the largest lse, so the weights below cannot overflow
    m = tl.full([S_BLOCK], float("-inf"), tl.float32)
    for s0 in range(0, n_splits, S_BLOCK):
        idx = s0 + offs_s
        m = tl.maximum(m, tl.load(lse_row + idx, mask=idx < n_splits, other=float("-inf"), cache_modifier=".cg"))
    m_max = tl.max(m, 0)
    m_safe = tl.where(m_max == float("-inf"), 0.0, m_max)
    # pass 2: weighted sum of the partial outputs
    acc = tl.zeros([D], tl.float32)
    den = tl.zeros([S_BLOCK], tl.float32)
    for s0 in range(0, n_splits, S_BLOCK):
        idx = s0 + offs_s
        active = idx < n_splits
        w = tl.exp2(tl.load(lse_row + idx, mask=active, other=float("-inf"), cache_modifier=".cg") - m_safe)
        o = tl.load(po_row + idx[:, None] * stride_ps + offs_d[None, :], mask=active[:, None], other=0.0,
                    cache_modifier=".cg")
        acc += tl.sum(w[:, None] * o, 0)
        den += w
    total = tl.sum(den, 0)
    out = acc / tl.where(total > 0, total, 1.0)
    tl.store(out_row + offs_d, out.to(out_row.dtype.element_ty))


@triton.jit
def fold_merge(cnt_ptr, po_ptr, lse_ptr, out_ptr, b, kvh, length, num_splits, stride_pb, stride_ph, stride_ps,
               stride_lb, stride_lh, stride_ob, stride_oh, G: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
               SPLIT_TOKENS: tl.constexpr, S_BLOCK: tl.constexpr):
    """A split program's end after its partial is stored (or not: empty splits count too): count it into the
    (sequence, KV head)'s int32 counter; the program that counts last merges the G query heads and puts the
    counter back to 0, so the buffer is all zeros between launches. The threadfence-reduction pattern: every
    thread's stores are fenced at GPU scope, the CTA meets at a barrier, then one acq_rel atomic; the last program
    fences again before reading the others' partials."""
    gpu_fence()
    tl.debug_barrier()
    cnt = cnt_ptr + b * tl.num_programs(1) + kvh
    if tl.atomic_add(cnt, 1, sem="acq_rel", scope="gpu") == num_splits - 1:
        gpu_fence()
        n_splits = splits_with_tokens(length, num_splits, BLOCK_N, SPLIT_TOKENS)
        for g in range(G):
            h = kvh * G + g
            merge_head(po_ptr + b * stride_pb + h * stride_ph, lse_ptr + b * stride_lb + h * stride_lh,
                       out_ptr + b * stride_ob + h * stride_oh, n_splits, stride_ps, S_BLOCK, D)
        tl.store(cnt, 0)


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
    n_splits = splits_with_tokens(tl.load(len_ptr + b), num_splits, BLOCK_N, SPLIT_TOKENS)
    merge_head(po_ptr + b * stride_pb + h * stride_ph, lse_ptr + b * stride_lb + h * stride_lh,
               out_ptr + b * stride_ob + h * stride_oh, n_splits, stride_ps, S_BLOCK, D)


def decode_merge(partial: torch.Tensor, lse: torch.Tensor, lengths: torch.Tensor, out: torch.Tensor,
                 block_n: int, num_warps: int = 4, split_tokens: int = 0) -> None:
    """out [B, Hq, D] <- merge of ``partial`` [B, Hq, S, D] weighted by exp2(``lse`` [B, Hq, S]), as its own
    launch (``merge_lanes`` splits at a time)."""
    b, hq, s, d = partial.shape
    _decode_merge_kernel[(b, hq)](
        partial, lse, lengths, out,
        partial.stride(0), partial.stride(1), partial.stride(2),
        lse.stride(0), lse.stride(1),
        out.stride(0), out.stride(1), s,
        BLOCK_N=block_n, S_BLOCK=merge_lanes(s, split_tokens), D=d, SPLIT_TOKENS=split_tokens, num_warps=num_warps,
    )
