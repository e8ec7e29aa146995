"""Quest on the GPU: page scores from the key summaries, and split decode attention over the selected pages only.

``quest_scores``: one program per (sequence, KV head, block of pages); it reads the two summary rows of each
page (1/page_size of the K bytes) and computes the group's summed upper bound as two small dots,
``relu(q)·max + min(q, 0)·min`` (equal to ``sum_d max(q_d min_d, q_d max_d)`` since min <= max).

``quest_decode``: flash-decoding over the selection ``sel`` [B, Hkv, S] (logical pages, -1 = empty slot). The
S selected pages form a virtual sequence of S * page tokens; each (sequence, KV head) is cut into splits of
that virtual sequence, and a K/V row is loaded only when its slot holds a selected page and its position is
below the length: unselected pages are never read. ``_quest_merge_kernel`` combines the splits.
Reference: ``litesys/attention/sparse/quest_torch.py``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.attention.kernels.common import (
    LOG2E,
    dot_precision,
    group_pad,
    mma,
    next_pow2,
    num_sms,
    online_softmax_step,
    store_partial,
)


@triton.jit
def _quest_scores_kernel(
    q_ptr, lo_ptr, hi_ptr, pt_ptr, len_ptr, out_ptr,
    stride_qb, stride_qh, stride_sp, stride_sh, stride_ptb, stride_ob, stride_oh, n_pages,
    G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr, BLOCK_P: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    offs_p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    used = tl.cdiv(tl.load(len_ptr + b), PAGE)
    valid = offs_p < tl.minimum(used, n_pages)
    q = tl.load(q_ptr + b * stride_qb + (kvh * G + offs_g)[:, None] * stride_qh + offs_d[None, :],
                mask=(offs_g < G)[:, None], other=0.0).to(tl.float32)
    page = tl.load(pt_ptr + b * stride_ptb + offs_p, mask=valid, other=0).to(tl.int64)
    row = (page * stride_sp + kvh * stride_sh)[:, None] + offs_d[None, :]
    lo = tl.load(lo_ptr + row, mask=valid[:, None], other=0.0)
    hi = tl.load(hi_ptr + row, mask=valid[:, None], other=0.0)
    q_pos = tl.maximum(q, 0.0).to(lo.dtype)
    q_neg = tl.minimum(q, 0.0).to(lo.dtype)
    s = mma(q_pos, tl.trans(hi), DOT_PREC) + mma(q_neg, tl.trans(lo), DOT_PREC)
    score = tl.sum(s, 0)  # padded query rows are zero
    tl.store(out_ptr + b * stride_ob + kvh * stride_oh + offs_p, tl.where(valid, score, float("-inf")),
             mask=offs_p < n_pages)


def quest_scores(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, page_table: torch.Tensor,
                 lengths: torch.Tensor, page_size: int, n_pages: int, block_p: int = 64) -> torch.Tensor:
    """[B, Hkv, n_pages] fp32 group-summed Quest bounds, ``-inf`` past each sequence's pages (kmin/kmax [P, Hkv, D])."""
    b, hq, d = q.shape
    hkv = kmin.shape[1]
    out = torch.empty(b, hkv, n_pages, dtype=torch.float32, device=q.device)
    grid = (b, hkv, triton.cdiv(n_pages, block_p))
    _quest_scores_kernel[grid](
        q, kmin, kmax, page_table, lengths, out,
        q.stride(0), q.stride(1), kmin.stride(0), kmin.stride(1), page_table.stride(0),
        out.stride(0), out.stride(1), n_pages,
        G=hq // hkv, G_PAD=group_pad(hq // hkv), D=d, PAGE=page_size, BLOCK_P=block_p,
        DOT_PREC=dot_precision(kmin.dtype), num_warps=4,
    )
    return out


@triton.jit
def _quest_decode_kernel(
    q_ptr, k_ptr, v_ptr, pt_ptr, len_ptr, sel_ptr, po_ptr, lse_ptr,
    stride_qb, stride_qh,
    stride_kp, stride_ks, stride_kh,
    stride_vp, stride_vs, stride_vh,
    stride_ptb, stride_selb, stride_selh,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    qk_scale, n_virtual,
    G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr,
    SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    length = tl.load(len_ptr + b)
    start = split * SPLIT
    end = tl.minimum(start + SPLIT, n_virtual)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    heads = kvh * G + offs_g
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
                mask=(offs_g < G)[:, None], other=0.0)
    m = tl.full([G_PAD], float("-inf"), tl.float32)
    den = tl.zeros([G_PAD], tl.float32)
    acc = tl.zeros([G_PAD, D], tl.float32)
    sel_row = sel_ptr + b * stride_selb + kvh * stride_selh
    pt_row = pt_ptr + b * stride_ptb
    for n0 in range(start, end, BLOCK_N):
        vpos = n0 + offs_n  # virtual position: slot vpos // PAGE of the selection, offset vpos % PAGE
        in_split = vpos < end
        lp = tl.load(sel_row + vpos // PAGE, mask=in_split, other=-1)
        pos = lp * PAGE + vpos % PAGE
        valid = in_split & (lp >= 0) & (pos < length)
        page = tl.load(pt_row + lp, mask=valid, other=0).to(tl.int64)
        slot = vpos % PAGE
        k = tl.load(k_ptr + (page * stride_kp + slot * stride_ks + kvh * stride_kh)[:, None] + offs_d[None, :],
                    mask=valid[:, None], other=0.0)
        s = mma(q, tl.trans(k), DOT_PREC) * qk_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        v = tl.load(v_ptr + (page * stride_vp + slot * stride_vs + kvh * stride_vh)[:, None] + offs_d[None, :],
                    mask=valid[:, None], other=0.0)
        acc, m, den = online_softmax_step(acc, m, den, s, v, DOT_PREC)
    store_partial(po_ptr, lse_ptr, acc, m, den, b, kvh, split, stride_pb, stride_ph, stride_ps,
                  stride_lb, stride_lh, G, G_PAD, D)


@triton.jit
def _quest_merge_kernel(po_ptr, lse_ptr, out_ptr, stride_pb, stride_ph, stride_ps, stride_lb, stride_lh,
                        stride_ob, stride_oh, NSPLIT: tl.constexpr, S_PAD: tl.constexpr, D: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    offs_s = tl.arange(0, S_PAD)
    offs_d = tl.arange(0, D)
    ok = offs_s < NSPLIT
    lse = tl.load(lse_ptr + b * stride_lb + h * stride_lh + offs_s, mask=ok, other=float("-inf"))
    m = tl.max(lse, 0)
    w = tl.exp2(lse - tl.where(m == float("-inf"), 0.0, m))  # empty splits: weight 0
    o = tl.load(po_ptr + b * stride_pb + h * stride_ph + offs_s[:, None] * stride_ps + offs_d[None, :],
                mask=ok[:, None], other=0.0)
    total = tl.sum(w, 0)
    out = tl.sum(w[:, None] * o, 0) / tl.where(total > 0, total, 1.0)  # a row with no pages gets zeros
    tl.store(out_ptr + b * stride_ob + h * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty))


def _split_size(batch: int, num_kv_heads: int, n_virtual: int, block_n: int, device: torch.device) -> int:
    """Virtual tokens per split, from shapes only (one grid per shape, CUDA-graph friendly)."""
    sms = num_sms(device.index or 0) if device.type == "cuda" else 1
    want = max(1, min(triton.cdiv(4 * sms, batch * num_kv_heads), triton.cdiv(n_virtual, block_n), 64))
    return triton.cdiv(triton.cdiv(n_virtual, want), block_n) * block_n


def quest_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                 lengths: torch.Tensor, sel: torch.Tensor, scale: float, block_n: int = 64,
                 split: int | None = None, num_warps: int = 4, num_stages: int = 2) -> torch.Tensor:
    """softmax(q·K_sel * scale)·V_sel over the pages in ``sel`` [B, Hkv, S] -> [B, Hq, D] in the cache dtype.

    ``split``: virtual tokens per program (a multiple of ``block_n``); default from the shapes.
    """
    b, hq, d = q.shape
    page, hkv = k_cache.shape[1], k_cache.shape[2]
    if d != next_pow2(d):
        raise ValueError(f"quest_decode needs a power-of-two head_dim, got {d}; use the torch path")
    sel = sel.contiguous()
    n_virtual = sel.shape[-1] * page
    split = split or _split_size(b, hkv, n_virtual, block_n, q.device)
    nsplit = -(-n_virtual // split)
    partial = torch.empty(b, hq, nsplit, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(b, hq, nsplit, dtype=torch.float32, device=q.device)
    _quest_decode_kernel[(b, hkv, nsplit)](
        q, k_cache, v_cache, page_table, lengths, sel, partial, lse,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        page_table.stride(0), sel.stride(0), sel.stride(1),
        partial.stride(0), partial.stride(1), partial.stride(2),
        lse.stride(0), lse.stride(1),
        scale * LOG2E, n_virtual,
        G=hq // hkv, G_PAD=group_pad(hq // hkv), D=d, PAGE=page, SPLIT=split, BLOCK_N=block_n,
        DOT_PREC=dot_precision(k_cache.dtype), num_warps=num_warps, num_stages=num_stages,
    )
    out = torch.empty(b, hq, d, dtype=v_cache.dtype, device=q.device)
    _quest_merge_kernel[(b, hq)](
        partial, lse, out, partial.stride(0), partial.stride(1), partial.stride(2), lse.stride(0), lse.stride(1),
        out.stride(0), out.stride(1), NSPLIT=nsplit, S_PAD=next_pow2(nsplit), D=d, num_warps=2,
    )
    return out
