"""Stage 1 of fused decode attention (flash-decoding): one program per (sequence, KV head, split).

The program loads the G query heads that share the KV head as one [G_PAD, D] tile, so every K/V row of
the split is read from memory once for the whole group. K/V rows are gathered token by token through the
page table (any page size works; a block may span several pages). It writes the split's normalized partial
output and its log2-sum-exp; the last split of a (sequence, KV head) to finish merges them (``FOLD``,
``decode_merge.fold_merge``), else the ``decode_merge`` kernel does.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.blocks import (
    attend_paged_block,
    fp8_scales,
    load_q_group,
    prefetch_paged_block,
    softmax_state,
    split_bounds,
    store_split,
)
from litesys.kernels.blocks_fp8 import attend_block_f8, finish_t, load_q_pair, softmax_state_t
from litesys.kernels.common import next_pow2, v_layout
from litesys.kernels.decode_merge import fold_merge, merge_lanes


@triton.jit
def _decode_split_kernel(
    q_ptr, k_ptr, v_ptr, pt_ptr, len_ptr, po_ptr, lse_ptr,
    stride_qb, stride_qh,
    stride_kp, stride_ks, stride_kh,
    stride_vp, stride_vs, stride_vh, stride_vd,
    stride_ptb,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh, num_splits,
    out_ptr, stride_ob, stride_oh,
    qk_scale, ks_ptr, vs_ptr, cnt_ptr, ord_ptr,
    G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, DIRECT: tl.constexpr, FP8: tl.constexpr,
    SPLIT_TOKENS: tl.constexpr, V_T: tl.constexpr, VEC: tl.constexpr, F8_MMA: tl.constexpr,
    PREFETCH: tl.constexpr, FOLD: tl.constexpr, S_BLOCK: tl.constexpr, QT: tl.constexpr, ORDERED: tl.constexpr,
    HKV: tl.constexpr,
):
    if ORDERED:  # programs in the given row order, all KV heads of a row side by side (blocks start in pid order)
        b = tl.load(ord_ptr + tl.program_id(0) // HKV)
        kvh = tl.program_id(0) % HKV
    else:
        b = tl.program_id(0)
        kvh = tl.program_id(1)
    split = tl.program_id(2)
    k_scale, v_scale = fp8_scales(ks_ptr, vs_ptr, kvh, FP8)
    if FP8:  # fp8 pages: K's scale multiplies the scores, V's the output (one KV head per program)
        qk_scale = qk_scale * k_scale
    length = tl.load(len_ptr + b)
    start, end, _ = split_bounds(length, split, num_splits, BLOCK_N, SPLIT_TOKENS)
    # Short sequences leave trailing splits empty: their loop is empty (and with several splits, nothing is stored).
    offs_n = tl.arange(0, BLOCK_N)
    if F8_MMA:  # fp8 pages on e4m3 tensor cores (blocks_fp8): the state is kept transposed
        q, qfac = load_q_pair(q_ptr, b, kvh, stride_qb, stride_qh, qk_scale, G, G_PAD, D)
        m, den, acc = softmax_state_t(G_PAD, D)
    else:
        q = load_q_group(q_ptr, b, kvh, stride_qb, stride_qh, G, G_PAD, D).to(QT)  # the tiles meet q's QT
        m, den, acc = softmax_state(G_PAD, D)
    pt_row = pt_ptr + b * stride_ptb
    for n0 in range(start, end, BLOCK_N):
        if PREFETCH > 0:
            prefetch_paged_block(k_ptr, v_ptr, pt_row, n0 + PREFETCH * BLOCK_N, end, kvh, stride_kp, stride_ks,
                                 stride_kh, stride_vp, stride_vs, stride_vh, PAGE, BLOCK_N, D, V_T)
        pos = n0 + offs_n
        valid = pos < end
        page = tl.load(pt_row + pos // PAGE, mask=valid, other=0).to(tl.int64)
        slot = pos % PAGE
        if F8_MMA:
            acc, m, den = attend_block_f8(acc, m, den, q, qfac, k_ptr, v_ptr, page, slot, valid, kvh,
                                          stride_kp, stride_ks, stride_kh, stride_vp, stride_vs, stride_vh,
                                          stride_vd, G_PAD, D, VEC)
        else:
            acc, m, den = attend_paged_block(acc, m, den, q, k_ptr, v_ptr, page, slot, valid, kvh, stride_kp,
                                             stride_ks, stride_kh, stride_vp, stride_vs, stride_vh, stride_vd,
                                             qk_scale, D, DOT_PREC, V_T, VEC)
    if F8_MMA:
        acc = finish_t(acc, G_PAD)
    store_split(out_ptr, po_ptr, lse_ptr, acc, m, den, v_scale, b, kvh, split, start, length, stride_ob, stride_oh,
                stride_pb, stride_ph, stride_ps, stride_lb, stride_lh, G, G_PAD, D, FP8, DIRECT)
    if FOLD:
        fold_merge(cnt_ptr, po_ptr, lse_ptr, out_ptr, b, kvh, length, num_splits, stride_pb, stride_ph, stride_ps,
                   stride_lb, stride_lh, stride_ob, stride_oh, G, D, BLOCK_N, SPLIT_TOKENS, S_BLOCK)


_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


def fp8_mma_fits(v_cache: torch.Tensor, block_n: int) -> bool:
    """Whether the e4m3 tensor-core path (``blocks_fp8``) reads these pages: fp8, V transposed (``common.v_layout``),
    D and ``block_n`` multiples of 32 (the depth of an fp8 dot)."""
    return (v_cache.element_size() == 1 and v_cache.stride(1) == 1 and v_cache.shape[-1] % 32 == 0
            and block_n % 32 == 0)


def fp8_mma_group_pad(group: int) -> int:
    """Query rows of the tensor-core path: its products are transposed, the group is their N (two columns a head,
    ``blocks_fp8.fp8_pair``), and Triton 3.6 keeps an e4m3 dot on ``wgmma`` only from N = 16 (N = 8 compiles to
    fp16 ``mma.sync`` with every K/V value converted): 8 rows, not the 16 a [G, D] tile needs (sm_90, Qwen3-8B
    heads, 128-row blocks: 128 -> 80 registers, half the softmax work)."""
    return max(8, next_pow2(group))


def decode_split(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                 lengths: torch.Tensor, partial: torch.Tensor | None, lse: torch.Tensor | None, out: torch.Tensor,
                 qk_scale: float, block_n: int, group_pad: int, dot_prec: str, num_warps: int,
                 num_stages: int, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
                 split_tokens: int = 0, fp8_mma: bool = False, prefetch: int = 0,
                 counter: torch.Tensor | None = None, compute_dtype: torch.dtype | None = None,
                 order: torch.Tensor | None = None):
    """Fill ``partial`` [B, Hq, S, D] fp32 and ``lse`` [B, Hq, S] fp32 (log2 domain) for the splits that hold
    tokens; with ``partial=None`` (one split) write the final ``out`` [B, Hq, D] directly instead. V pages in
    either layout (``common.v_layout``). fp8 caches:
    ``k_scale``/``v_scale`` [Hkv] fp32. ``split_tokens > 0``: splits of that many tokens (``blocks.split_bounds``).
    ``fp8_mma``: fp8 pages on e4m3 tensor cores (``blocks_fp8``; where ``fp8_mma_fits``; q in any float dtype),
    else the tiles are converted to ``compute_dtype`` (None: q's dtype; q is converted in registers, so an fp8
    cache's bf16 q needs no conversion launch of its own). ``prefetch > 0``: each block first asks L2 for the
    block that many blocks ahead (``blocks.prefetch_paged_block``). ``counter``: a zeroed int32 buffer of >= B x
    Hkv (left zeroed): with several splits, the last split program of each (sequence, KV head) writes the merged
    ``out`` itself (``decode_merge.fold_merge``); without it the caller runs ``decode_merge``. ``order``: [B] int32
    row indices, the order the programs start in (``step.longest_first``; the results do not depend on it). Returns
    the kernel (``n_regs``, ``n_spills``, ``metadata.shared``: what benchmarks report)."""
    b, hq, d = q.shape
    hkv = k_cache.shape[2]
    direct = partial is None
    po, ls = (out, out) if direct else (partial, lse)
    n_splits = 1 if direct else partial.shape[2]
    fold = counter is not None and not direct
    v_strides, v_t, vec = v_layout(v_cache, block_n)
    if fp8_mma and not (k_scale is not None and fp8_mma_fits(v_cache, block_n)):
        raise ValueError("decode_split(fp8_mma=True) needs fp8 pages, transposed V and D, block_n multiples of 32 "
                         "(check fp8_mma_fits first)")
    grid = (b * hkv, 1, n_splits) if order is not None else (b, hkv, n_splits)
    return _decode_split_kernel[grid](
        q, k_cache, v_cache, page_table, lengths, po, ls,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        *v_strides,
        page_table.stride(0),
        *((0, 0, 0, 0, 0) if direct else (partial.stride(0), partial.stride(1), partial.stride(2),
                                          lse.stride(0), lse.stride(1))), n_splits,
        out, out.stride(0), out.stride(1),
        qk_scale, lengths if k_scale is None else k_scale, lengths if v_scale is None else v_scale,
        lengths if counter is None else counter, lengths if order is None else order,
        G=hq // hkv, G_PAD=group_pad, D=d, PAGE=k_cache.shape[1], BLOCK_N=block_n,
        DOT_PREC=dot_prec, DIRECT=direct, FP8=k_scale is not None, SPLIT_TOKENS=split_tokens, V_T=v_t, VEC=vec,
        F8_MMA=fp8_mma, PREFETCH=prefetch, FOLD=fold, S_BLOCK=merge_lanes(n_splits, split_tokens) if fold else 1,
        QT=_TL_DTYPES[compute_dtype or q.dtype], ORDERED=order is not None, HKV=hkv, num_warps=num_warps,
        num_stages=num_stages,
    )
