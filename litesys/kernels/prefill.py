"""Varlen causal flash-attention forward for packed prompts (``cu_seqlens``), GQA by head index; or, with a page
table, for packed *chunks* whose keys/values are their sequences' pages in the paged KV cache.

Grid: (query heads, prompts, query blocks of the longest prompt); blocks past a prompt's end exit. The
query-block axis is the slowest one and runs backwards, so the heaviest (last, longest-causal) blocks start
first and the tail is short; heads sharing a KV head run side by side and reuse its K/V from L2. Each program
streams its prompt's K/V blocks: the blocks strictly below the diagonal need no mask, the diagonal ones mask
causally and at the prompt end.

Paged (chunked prefill, cached prefixes): sequence ``b``'s queries are the last ``cu[b+1] - cu[b]`` of its
``lengths[b]`` positions (a chunk after its cached pages and earlier chunks, already written), and key position
``n`` is read from page ``page_table[b, n // PAGE]``. Query blocks stay at multiples of ``BLOCK_M`` of the
position (a chunk's first and last blocks are partly filled, the other rows masked), so every row is tiled, looped
(unmasked below its block, masked on the diagonal) and reduced exactly as in the whole prompt's prefill: at the
same tiles a chunk's rows are the whole prefill's rows, bit for bit.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.blocks import fp8_scales, mma, online_softmax_step, paged_v_tile
from litesys.kernels.common import cdiv, v_layout


@triton.jit
def _key_rows(table_ptr, start, kn, valid, PAGE: tl.constexpr):
    """Rows of key positions ``kn`` in the K/V tensors: flat slots of the sequence's pages (PAGE > 0), or the
    packed prompt's rows from ``start``."""
    if PAGE > 0:
        page = tl.load(table_ptr + kn // PAGE, mask=valid, other=0)
        return page.to(tl.int64) * PAGE + kn % PAGE
    else:
        return start + kn


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, cu_ptr, out_ptr, table_ptr, len_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh, stride_tb,
    qk_scale, ks_ptr, vs_ptr, stride_vp, stride_vd,
    G: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr,
    FP8: tl.constexpr, PAGE: tl.constexpr, V_T: tl.constexpr, VEC: tl.constexpr,
):
    h = tl.program_id(0)
    seq = tl.program_id(1)
    m_block = tl.num_programs(2) - 1 - tl.program_id(2)
    start = tl.load(cu_ptr + seq)
    seqlen = tl.load(cu_ptr + seq + 1) - start  # query rows
    if PAGE > 0:  # a chunk: the last seqlen of the sequence's kv_len positions
        kv_len = tl.load(len_ptr + seq)
    else:
        kv_len = seqlen
    q0 = kv_len - seqlen  # position of the first query row
    # query blocks at multiples of BLOCK_M of the position (a chunk's first and last ones partly filled): each row
    # sits where a whole prefill tiles it, so it meets the same loops, tiles and masks
    first = (q0 // BLOCK_M + m_block) * BLOCK_M
    if first < kv_len:
        kvh = h // G
        k_scale, v_scale = fp8_scales(ks_ptr, vs_ptr, kvh, FP8)
        if FP8:  # fp8 K/V (as the cache holds them): K's scale on the scores, V's on the output
            qk_scale = qk_scale * k_scale
        pos = first + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, D)
        offs_m = pos - q0  # row in the chunk (< 0: before it)
        tok = (start + offs_m).to(tl.int64)
        m_valid = (offs_m >= 0) & (offs_m < seqlen)
        q = tl.load(q_ptr + tok[:, None] * stride_qt + h * stride_qh + offs_d[None, :],
                    mask=m_valid[:, None], other=0.0)
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        den = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D], tl.float32)
        k_base = k_ptr + kvh * stride_kh
        v_base = v_ptr + kvh * stride_vh
        table = table_ptr + seq.to(tl.int64) * stride_tb
        # below the diagonal: every key precedes every query of the block and lies inside the sequence
        for n0 in range(0, first, BLOCK_N):
            kn = n0 + offs_n
            rows = _key_rows(table, start.to(tl.int64), kn, kn < kv_len, PAGE)
            k = tl.load(k_base + rows[:, None] * stride_kt + offs_d[None, :]).to(q.dtype)
            s = mma(q, tl.trans(k), DOT_PREC) * qk_scale
            if V_T:  # transposed fp8 V pages (docs/kv_fp8.md): the decode kernels' reader
                v = paged_v_tile(v_ptr, rows // PAGE, rows % PAGE, kn < kv_len, kvh, stride_vp, stride_vt, stride_vh,
                                 stride_vd, q.dtype, D, V_T, VEC)
            else:
                v = tl.load(v_base + rows[:, None] * stride_vt + offs_d[None, :]).to(q.dtype)
            acc, m, den = online_softmax_step(acc, m, den, s, v, DOT_PREC)
        # diagonal blocks: causal mask and sequence end
        hi = tl.minimum(first + BLOCK_M, kv_len)
        for n0 in range(first, hi, BLOCK_N):
            kn = n0 + offs_n
            kv_valid = kn < kv_len
            rows = _key_rows(table, start.to(tl.int64), kn, kv_valid, PAGE)
            k = tl.load(k_base + rows[:, None] * stride_kt + offs_d[None, :], mask=kv_valid[:, None],
                        other=0.0).to(q.dtype)
            s = mma(q, tl.trans(k), DOT_PREC) * qk_scale
            s = tl.where((kn[None, :] <= pos[:, None]) & kv_valid[None, :], s, float("-inf"))
            if V_T:
                v = paged_v_tile(v_ptr, rows // PAGE, rows % PAGE, kv_valid, kvh, stride_vp, stride_vt, stride_vh,
                                 stride_vd, q.dtype, D, V_T, VEC)
            else:
                v = tl.load(v_base + rows[:, None] * stride_vt + offs_d[None, :], mask=kv_valid[:, None],
                            other=0.0).to(q.dtype)
            acc, m, den = online_softmax_step(acc, m, den, s, v, DOT_PREC)
        if FP8:
            acc = acc * v_scale
        out = acc / tl.where(den > 0, den, 1.0)[:, None]
        tl.store(out_ptr + tok[:, None] * stride_ot + h * stride_oh + offs_d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=m_valid[:, None])


def prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
            out: torch.Tensor, qk_scale: float, block_m: int, block_n: int, dot_prec: str,
            num_warps: int, num_stages: int, k_scale: torch.Tensor | None = None,
            v_scale: torch.Tensor | None = None, page_table: torch.Tensor | None = None,
            lengths: torch.Tensor | None = None) -> None:
    """out [T, Hq, D] <- causal attention within each prompt of the packed q [T, Hq, D], k/v [T, Hkv, D]
    (fp8 k/v: with their ``k_scale``/``v_scale`` [Hkv] fp32). With ``page_table`` [B, max_pages] int32 and
    ``lengths`` [B] int32: k/v are one layer's pages [P, page, Hkv, D] and prompt ``b``'s rows are the last of
    its ``lengths[b]`` positions (``max_seqlen``: the longest chunk)."""
    assert block_m % block_n == 0, "the unmasked loop assumes key blocks tile the query block"
    hq, d = q.shape[1], q.shape[2]
    num_seqs = cu_seqlens.shape[0] - 1
    page, (v_strides, v_t, vec) = 0, ((0, 0, 0, 1), False, 1)
    if page_table is not None:
        page = k.shape[1]
        v_strides, v_t, vec = v_layout(v, block_n)  # fp8 V pages are transposed: read by (page, slot), no reshape
        k = k.reshape(-1, *k.shape[2:])  # flat slots (views of the pool)
        v = v if v_t else v.reshape(-1, *v.shape[2:])
    # a chunk at any offset spans at most one query block more than its length needs
    grid = (hq, num_seqs, cdiv(max_seqlen, block_m) + (page_table is not None))
    table = cu_seqlens if page_table is None else page_table
    _prefill_kernel[grid](
        q, k, v, cu_seqlens, out, table, cu_seqlens if lengths is None else lengths,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), *((v_strides[1], v_strides[2]) if v_t else v.stride()[:2]),
        out.stride(0), out.stride(1), table.stride(0),
        qk_scale, cu_seqlens if k_scale is None else k_scale, cu_seqlens if v_scale is None else v_scale,
        v_strides[0], v_strides[3],
        G=hq // k.shape[1], D=d, BLOCK_M=block_m, BLOCK_N=block_n, DOT_PREC=dot_prec, FP8=k_scale is not None,
        PAGE=page, V_T=v_t, VEC=vec, num_warps=num_warps, num_stages=num_stages,
    )
