"""Triton kernels of the selection processors (topk, block_topk, random_select, random_nsample, stride): one program
per (sequence, KV head) row keeps its K best keys (``select.topk_mask``) and drops the rest in place.

The torch processors are the twins (``tests/test_sparse_processors.py`` runs both); design: docs/kernels.md.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.common import cdiv, next_pow2
from litesys.kernels.hash import hash_at, hash_base
from litesys.kernels.select import float_key, num_warps_for, topk_mask

MAX_ROW = 65536  # widest row held in registers; wider rows use the torch path
KEY_SCORES, KEY_MEAN, KEY_HASH = 0, 1, 2


@triton.jit
def _apply_rows(logit_ptr, stride_lb, stride_lh, corr_ptr, b, h, i, n, drop, kept,
                G: tl.constexpr, CORR: tl.constexpr):
    """In place on the G query-head rows of KV head h: -inf where ``drop``, + the row's correction where ``kept``."""
    if CORR:
        corr = tl.load(corr_ptr + b)
    for g in tl.static_range(G):
        row = logit_ptr + b * stride_lb + (h * G + g) * stride_lh
        x = tl.load(row + i, mask=i < n, other=0.0)
        if CORR:
            x = tl.where(kept, x + corr, x)
        tl.store(row + i, tl.where(drop, float("-inf"), x), mask=i < n)


@triton.jit
def _topk_kernel(
    score_ptr, len_ptr, seq_ptr, drop_ptr, logit_ptr, corr_ptr,
    stride_sb, stride_sh, stride_db, stride_dh, stride_lb, stride_lh,
    n, k, lo, hi_sub, hi_div, dense_upto, seed, layer, head0,
    KEY: tl.constexpr, APPLY: tl.constexpr, CORR: tl.constexpr, G: tl.constexpr, N_PAD: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    length = tl.load(len_ptr + b)
    hi = tl.maximum(length - hi_sub, 0) // hi_div
    i = tl.arange(0, N_PAD)
    cand = (i >= lo) & (i < hi) & (i < n) & (length > dense_upto)
    if KEY == 2:
        zero = tl.zeros([], tl.int64)  # zero + x: int64 whether Triton passed x as i32 or specialised it (x == 1)
        hb = hash_base(zero + seed, zero + layer, tl.load(seq_ptr + b).to(tl.int64), length.to(tl.int64),
                       zero + h + head0)  # the global KV head: the same draw whichever rank holds it
        key = 0xFFFFFFFF - hash_at(hb, i.to(tl.int64))  # the smallest noise is the best key
    else:
        if KEY == 1:  # the group's mean logit, summed in head order like torch's mean over a size-G dim
            score = tl.zeros([N_PAD], tl.float32)
            for g in tl.static_range(G):
                score += tl.load(logit_ptr + b * stride_lb + (h * G + g) * stride_lh + i, mask=i < n,
                                 other=float("-inf"))
            score = score * (1.0 / G)  # as torch's mean (sum times 1/G)
        else:
            score = tl.load(score_ptr + b * stride_sb + h * stride_sh + i, mask=i < n, other=float("-inf"))
        key = float_key(score)
        cand = cand & (score > float("-inf"))
    keep = topk_mask(key, cand, k)
    if APPLY:
        _apply_rows(logit_ptr, stride_lb, stride_lh, corr_ptr, b, h, i, n, cand & ~keep, keep, G, CORR)
    else:
        tl.store(drop_ptr + b * stride_db + h * stride_dh + i, (cand & ~keep).to(tl.uint8), mask=i < n)


def fits(width: int) -> bool:
    return next_pow2(max(1, width)) <= MAX_ROW


def _launch(lengths: torch.Tensor, batch: int, heads: int, width: int, k: int, lo: int, hi_sub: int, hi_div: int,
            dense_upto: int, key: int, scores: torch.Tensor | None, drop: torch.Tensor | None,
            logits: torch.Tensor | None, correction: torch.Tensor | None, seq: torch.Tensor | None, seed: int,
            layer: int, head0: int = 0) -> None:
    dev = lengths.device
    dummy = lengths  # pointer arguments a mode never reads
    scores = dummy if scores is None else scores
    if seq is None:
        seq = torch.zeros(batch, dtype=torch.int64, device=dev)
    g = 1 if logits is None else logits.shape[1] // heads
    n_pad = next_pow2(max(1, width))
    ptr_strides = lambda t: (t.stride(0), t.stride(1)) if t is not None and t.dim() == 3 else (0, 0)  # noqa: E731
    _topk_kernel[(batch, heads)](
        scores, lengths, seq, dummy if drop is None else drop, dummy if logits is None else logits,
        dummy if correction is None else correction,
        *ptr_strides(scores), *ptr_strides(drop), *ptr_strides(logits),
        width, k, lo, hi_sub, hi_div, dense_upto, seed, layer, head0,
        KEY=key, APPLY=drop is None, CORR=correction is not None, G=g, N_PAD=n_pad,
        num_warps=num_warps_for(n_pad),
    )


def topk_drop(lengths: torch.Tensor, batch: int, heads: int, width: int, k: int, lo: int, hi_sub: int,
              hi_div: int = 1, dense_upto: int = 0, scores: torch.Tensor | None = None,
              seq: torch.Tensor | None = None, seed: int = 0, layer: int = 0, head0: int = 0) -> torch.Tensor:
    """[B, heads, width] bool: candidates not among their row's k best (keys: ``scores``, or the noise if None;
    ``head0``: the global index of the first head, for the noise)."""
    drop = torch.empty(batch, heads, width, dtype=torch.uint8, device=lengths.device)
    _launch(lengths, batch, heads, width, k, lo, hi_sub, hi_div, dense_upto, KEY_HASH if scores is None else
            KEY_SCORES, scores, drop, None, None, seq, seed, layer, head0)
    return drop.view(torch.bool)


def topk_apply(logits: torch.Tensor, lengths: torch.Tensor, num_kv_heads: int, k: int, lo: int, hi_sub: int,
               dense_upto: int, hashed: bool, seq: torch.Tensor | None = None, seed: int = 0, layer: int = 0,
               correction: torch.Tensor | None = None, head0: int = 0,
               scores: torch.Tensor | None = None) -> torch.Tensor:
    """``logits`` [B, Hq, L] (contiguous fp32) with each KV group's dropped candidates set to -inf, in place.

    Keys: the group-mean logit (``hashed=False``), the counter-based noise of global KV heads ``head0 ..``, or
    given ``scores`` [B, Hkv, L] (a group mean completed over tensor-parallel ranks). ``correction`` [B] fp32 is
    added to the kept candidates (random_nsample's importance weight). Returns ``logits``."""
    b, _, width = logits.shape
    key = KEY_SCORES if scores is not None else KEY_HASH if hashed else KEY_MEAN
    _launch(lengths, b, num_kv_heads, width, k, lo, hi_sub, 1, dense_upto, key,
            scores, None, logits, correction, seq, seed, layer, head0)
    return logits


@triton.jit
def _stride_cut_kernel(
    val_ptr, idx_ptr, rank_ptr, rstar_ptr, start_ptr, skeep_ptr, stride_vb, stride_vh, stride_rb, stride_rh, n_kv,
    nb, budget, k2, bs, st,
    N_COVER: tl.constexpr, K2_PAD: tl.constexpr, BS_PAD: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    r = tl.arange(0, K2_PAD)
    o = tl.arange(0, BS_PAD)
    ok = (r < k2) & (tl.load(val_ptr + b * stride_vb + h * stride_vh + r, mask=r < k2, other=float("-inf"))
                     > float("-inf"))
    blk = tl.load(idx_ptr + b * stride_vb + h * stride_vh + r, mask=r < k2, other=0).to(tl.int32)
    rank_row = rank_ptr + b * stride_rb + h * stride_rh
    for j0 in range(0, nb, K2_PAD):  # the row starts as "not chosen"
        tl.store(rank_row + j0 + r, tl.full([K2_PAD], 0, tl.int32) + k2, mask=j0 + r < nb)
    tl.debug_barrier()
    tl.store(rank_row + blk, r, mask=ok)
    tl.debug_barrier()  # the ranks are read back (other threads' stores) below
    pos = blk[:, None] * st + o[None, :]  # [K2_PAD, BS_PAD]: the positions of each ranked block
    live = ok[:, None] & (o[None, :] < bs)
    best = tl.full([K2_PAD, BS_PAD], 0, tl.int32) + k2
    for c in tl.static_range(N_COVER):
        j = pos // st - c
        covers = live & (j >= 0) & (j < nb) & (j * st + bs > pos)
        best = tl.minimum(best, tl.load(rank_row + j, mask=covers, other=k2))
    new = live & (best == r[:, None])  # not covered by a better-ranked block
    total = tl.cumsum(tl.sum(new.to(tl.int32), 1), 0)  # [K2_PAD] positions kept by ranks <= r
    r_star = tl.sum(((total <= budget) & (r < k2)).to(tl.int32), 0)
    before = tl.sum(tl.where(r == r_star - 1, total, 0), 0)
    cut_new = tl.sum(tl.where((r == r_star)[:, None] & new, 1, 0), 0)  # [BS_PAD] the cut block's new positions
    cut_keep = (cut_new > 0) & (tl.cumsum(cut_new, 0) <= budget - before)
    row = b * n_kv + h
    tl.store(rstar_ptr + row, r_star)
    tl.store(start_ptr + row, tl.where(r_star < k2, tl.sum(tl.where(r == r_star, blk, 0), 0) * st, -(1 << 30)))
    tl.store(skeep_ptr + row * BS_PAD + o, cut_keep.to(tl.uint8))


@triton.jit
def _stride_kernel(
    rank_ptr, len_ptr, logit_ptr, rstar_ptr, start_ptr, skeep_ptr,
    stride_rb, stride_rh, stride_lb, stride_lh, n_kv,
    t_max, nb, sink, local, budget, k2, bs, st,
    N_COVER: tl.constexpr, G: tl.constexpr, BLOCK: tl.constexpr, BS_PAD: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    t = tl.program_id(2) * BLOCK + tl.arange(0, BLOCK)
    mid_len = tl.load(len_ptr + b) - sink - local
    best = tl.full([BLOCK], 0, tl.int32) + k2
    rank_row = rank_ptr + b * stride_rb + h * stride_rh
    for c in tl.static_range(N_COVER):  # the blocks t // st - c cover t when they start within bs of it
        j = t // st - c
        covers = (j >= 0) & (j < nb) & (j * st + bs > t) & (t < t_max)
        best = tl.minimum(best, tl.load(rank_row + j, mask=covers, other=k2))
    row = b * n_kv + h
    r_star = tl.load(rstar_ptr + row)  # ranks < r_star are kept whole; rank r_star (the cut block) in part
    o = t - tl.load(start_ptr + row)
    in_cut = (best == r_star) & (o >= 0) & (o < bs)
    keep = (best < r_star) | (in_cut & (tl.load(skeep_ptr + row * BS_PAD + o, mask=in_cut, other=0) != 0))
    drop = (t < t_max) & (t < mid_len) & (mid_len > budget) & ~keep
    _apply_rows(logit_ptr + sink, stride_lb, stride_lh, logit_ptr, b, h, t, t_max, drop, keep, G, False)


def stride_apply(logits: torch.Tensor, lengths: torch.Tensor, vals: torch.Tensor, idx: torch.Tensor, t_max: int,
                 sink: int, local: int, budget: int, block_size: int, stride: int, block: int = 1024) -> torch.Tensor:
    """In place: drop the middle positions stride does not keep, from the ranked blocks (``vals``, ``idx``
    [B, Hkv, k2], best first, as ``topk`` returns them; -inf = not a valid block).

    ``logits`` [B, Hq, L] contiguous fp32; middle position t is column ``sink + t``. Two launches: the cut per
    (sequence, KV head) row (ranks, kept-whole count, the cut block's kept positions), then the drop, parallel
    over positions. Returns ``logits``."""
    b, hq, _ = logits.shape
    hkv, k2 = idx.shape[1], idx.shape[2]
    nb = (t_max - block_size) // stride + 1
    dev = logits.device
    rank = torch.empty(b, hkv, nb, dtype=torch.int32, device=dev)
    r_star = torch.empty(b, hkv, dtype=torch.int32, device=dev)
    cut_start = torch.empty_like(r_star)
    bs_pad = next_pow2(block_size)
    cut_keep = torch.empty(b, hkv, bs_pad, dtype=torch.uint8, device=dev)
    n_cover = cdiv(block_size, stride)
    k2_pad = next_pow2(k2)
    _stride_cut_kernel[(b, hkv)](
        vals, idx, rank, r_star, cut_start, cut_keep, idx.stride(0), idx.stride(1), rank.stride(0), rank.stride(1),
        hkv, nb, budget, k2, block_size, stride,
        N_COVER=n_cover, K2_PAD=k2_pad, BS_PAD=bs_pad, num_warps=num_warps_for(k2_pad * bs_pad),
    )
    _stride_kernel[(b, hkv, cdiv(t_max, block))](
        rank, lengths, logits, r_star, cut_start, cut_keep, rank.stride(0), rank.stride(1),
        logits.stride(0), logits.stride(1), hkv, t_max, nb, sink, local, budget, k2, block_size, stride,
        N_COVER=n_cover, G=hq // hkv, BLOCK=block, BS_PAD=bs_pad, num_warps=4,
    )
    return logits
