"""Quest on the GPU: page scores from the key summaries, the page selection in registers, the decode-step summary
refresh, and split decode attention over the selected pages only (a PDL chain on Hopper).

Twin: ``ref/quest.py``; design notes: docs/kernels.md, "Quest kernels".
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.blocks import (
    attend_paged_block,
    fp8_scales,
    load_q_group,
    mma,
    pdl_launch_dependents,
    pdl_wait,
    softmax_state,
    store_partial,
)
from litesys.kernels.common import (
    LOG2E,
    cdiv,
    dot_precision,
    fp8_compute_dtype,
    group_pad,
    next_pow2,
    num_sms,
    use_pdl,
    v_layout,
)
from litesys.kernels.ref.quest import page_counts
from litesys.kernels.select import float_key, num_warps_for, topk_mask

MAX_SELECT_PAGES = 32768  # pages per sequence the in-register selection handles (512K tokens at page 16)
# Streaming knobs, graph-timed on the H200 at 32K, batch 8, 1/8 of the pages (benchmarks/sweep_quest.py --diagnose,
# results/h200_quest_stream_diag.json): 4 x 16 x 4 ran the chain in 68.7 us; 2 x 32 x 3 75 us, 1 program per SM 88+.
SCORE_RUN = 16  # streaming: pages per score work item (the selection counts a row's runs of this size)
STREAM_PROGRAMS_PER_SM = 4  # streaming: persistent score programs per SM
DECODE_PROGRAMS_PER_SM = 4  # decode splits: about this many (sequence, KV head, split) programs per SM


@triton.jit
def _page_scores(q_pos, q_neg, lo_ptr, hi_ptr, pt_row, offs_p, valid, kvh, stride_sp, stride_sh,
                 D: tl.constexpr, DOT_PREC: tl.constexpr):
    """Group-summed Quest bound of the pages at logical ``offs_p`` (as ``_quest_scores_kernel``), -inf if invalid."""
    offs_d = tl.arange(0, D)
    page = tl.load(pt_row + offs_p, mask=valid, other=0).to(tl.int64)
    row = (page * stride_sp + kvh * stride_sh)[:, None] + offs_d[None, :]
    lo = tl.load(lo_ptr + row, mask=valid[:, None], other=0.0)
    hi = tl.load(hi_ptr + row, mask=valid[:, None], other=0.0)
    s = mma(q_pos, tl.trans(hi), DOT_PREC) + mma(q_neg, tl.trans(lo), DOT_PREC)
    return tl.where(valid, tl.sum(s, 0), float("-inf"))


@triton.jit
def _score_run(q_ptr, lo_ptr, hi_ptr, pt_ptr, len_ptr, out_ptr, b, start, stride_qb, stride_qh, stride_sp,
               stride_sh, stride_ptb, stride_ob, stride_oh, n_pages, HKV: tl.constexpr, HKV_PAD: tl.constexpr,
               G: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr, BLOCK_P: tl.constexpr,
               PAGES_PER_PROG: tl.constexpr, NUM_STAGES: tl.constexpr):
    """Scores of sequence b's pages [start, start + PAGES_PER_PROG), every KV head (``_quest_scores_kernel``)."""
    used = tl.minimum(tl.cdiv(tl.load(len_ptr + b), PAGE), n_pages)
    offs_h = tl.arange(0, HKV_PAD)
    offs_d = tl.arange(0, D)
    h_ok = offs_h < HKV
    # the bound is linear in relu(q) and min(q, 0): sum them over the group once, then one FMA per summary value
    q_pos = tl.zeros([HKV_PAD, D], tl.float32)
    q_neg = tl.zeros([HKV_PAD, D], tl.float32)
    for g in tl.static_range(G):
        qg = tl.load(q_ptr + b * stride_qb + (offs_h * G + g)[:, None] * stride_qh + offs_d[None, :],
                     mask=h_ok[:, None], other=0.0).to(tl.float32)
        q_pos += tl.maximum(qg, 0.0)
        q_neg += tl.minimum(qg, 0.0)
    head_d = (offs_h * stride_sh)[:, None] + offs_d[None, :]  # [HKV_PAD, D]: one page's summaries, all heads
    pt_row = pt_ptr + b * stride_ptb
    out_row = out_ptr + b * stride_ob + offs_h[None, :] * stride_oh
    for p0 in tl.range(start, start + PAGES_PER_PROG, BLOCK_P, num_stages=NUM_STAGES):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        valid = offs_p < used
        page = tl.load(pt_row + offs_p, mask=valid, other=0).to(tl.int64)
        row = (page * stride_sp)[:, None, None] + head_d[None, :, :]  # [BLOCK_P, HKV_PAD, D], contiguous per page
        m = valid[:, None, None] & h_ok[None, :, None]
        lo = tl.load(lo_ptr + row, mask=m, other=0.0).to(tl.float32)
        hi = tl.load(hi_ptr + row, mask=m, other=0.0).to(tl.float32)
        score = tl.sum(hi * q_pos[None, :, :] + lo * q_neg[None, :, :], 2)  # [BLOCK_P, HKV_PAD]
        score = tl.where(valid[:, None], score, float("-inf"))
        tl.store(out_row + offs_p[:, None], score, mask=(offs_p < n_pages)[:, None] & h_ok[None, :])


@triton.jit
def _quest_scores_kernel(
    q_ptr, lo_ptr, hi_ptr, pt_ptr, len_ptr, out_ptr, cnt_ptr,
    stride_qb, stride_qh, stride_sp, stride_sh, stride_ptb, stride_ob, stride_oh, n_pages, n_runs, n_items,
    HKV: tl.constexpr, HKV_PAD: tl.constexpr, G: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_P: tl.constexpr, PAGES_PER_PROG: tl.constexpr, NUM_STAGES: tl.constexpr, PDL: tl.constexpr,
    STREAM: tl.constexpr,
):
    pdl_launch_dependents(PDL)  # the selection's programs may be placed now; they wait for their rows' scores
    if STREAM:  # persistent programs over (sequence, run) items in sequence order: rows finish one after another
        for item in range(tl.program_id(0), n_items, tl.num_programs(0)):
            b = item // n_runs
            _score_run(q_ptr, lo_ptr, hi_ptr, pt_ptr, len_ptr, out_ptr, b, item % n_runs * PAGES_PER_PROG,
                       stride_qb, stride_qh, stride_sp, stride_sh, stride_ptb, stride_ob, stride_oh, n_pages, HKV,
                       HKV_PAD, G, D, PAGE, BLOCK_P, PAGES_PER_PROG, NUM_STAGES)
            tl.debug_barrier()  # every thread's scores are stored before the release below (as a semaphore)
            offs_h = tl.arange(0, HKV_PAD)
            tl.atomic_add(cnt_ptr + b * HKV + offs_h, tl.full([HKV_PAD], 1, tl.int32), mask=offs_h < HKV,
                          sem="release")
    else:
        _score_run(q_ptr, lo_ptr, hi_ptr, pt_ptr, len_ptr, out_ptr, tl.program_id(0),
                   tl.program_id(1) * PAGES_PER_PROG, stride_qb, stride_qh, stride_sp, stride_sh, stride_ptb,
                   stride_ob, stride_oh, n_pages, HKV, HKV_PAD, G, D, PAGE, BLOCK_P, PAGES_PER_PROG, NUM_STAGES)


def quest_scores(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, page_table: torch.Tensor,
                 lengths: torch.Tensor, page_size: int, n_pages: int, block_p: int = 4, pages_per_prog: int = 32,
                 num_warps: int = 4, num_stages: int = 2, counters: torch.Tensor | None = None,
                 programs: int | None = None) -> torch.Tensor:
    """[B, Hkv, n_pages] fp32 group-summed Quest bounds, ``-inf`` past each sequence's pages (kmin/kmax [P, Hkv, D]).

    One program per (sequence, run of ``pages_per_prog`` pages) reads each page's summaries of every KV head at
    once (one contiguous row per page, instead of a short row per head), ``block_p`` pages per pipelined step.
    ``counters`` [3, B * Hkv] int32 (streaming, see ``quest_select``): ``programs`` persistent programs take the
    runs in sequence order and count each finished run into its row's counter in ``counters[0]`` (release)."""
    b, hq, d = q.shape
    hkv = kmin.shape[1]
    if kmin.stride() != kmax.stride() or kmin.stride(-1) != 1:
        raise ValueError("quest_scores needs kmin and kmax with the same layout and a contiguous head_dim")
    pages_per_prog = max(block_p, pages_per_prog // block_p * block_p)
    out = torch.empty(b, hkv, n_pages, dtype=torch.float32, device=q.device)
    n_runs = cdiv(n_pages, pages_per_prog)
    grid = (b, n_runs) if counters is None else (max(1, min(programs or b * n_runs, b * n_runs)),)
    _quest_scores_kernel[grid](
        q, kmin, kmax, page_table, lengths, out, lengths if counters is None else counters,
        q.stride(0), q.stride(1), kmin.stride(0), kmin.stride(1), page_table.stride(0),
        out.stride(0), out.stride(1), n_pages, n_runs, b * n_runs,
        HKV=hkv, HKV_PAD=next_pow2(hkv), G=hq // hkv, D=d, PAGE=page_size, BLOCK_P=block_p,
        PAGES_PER_PROG=pages_per_prog, NUM_STAGES=num_stages, PDL=use_pdl(q.device), STREAM=counters is not None,
        num_warps=num_warps,
    )
    return out


@triton.jit
def _row_pages(pt_row, length, n_pages, PAGE: tl.constexpr, N_SINK: tl.constexpr, WINDOW: tl.constexpr,
               NP_PAD: tl.constexpr):
    """One (sequence, KV head) row's candidates: (live pages, middle pages, first local page, physical pages)."""
    used = tl.cdiv(length, PAGE)
    p = tl.arange(0, NP_PAD)
    first_local = tl.maximum(length - WINDOW, 0) // PAGE
    live = (p < n_pages) & (p < used)
    middle = live & (p >= N_SINK) & (p < first_local)
    return live, middle, first_local, tl.load(pt_row + p, mask=live, other=0)


@triton.jit
def _select_row(score_row, sel_row, phys_row, live, middle, first_local, phys_all, n_pages, topk, n_slots,
                N_SINK: tl.constexpr, NP_PAD: tl.constexpr, S_PAD: tl.constexpr):
    """The row's selection from its stored scores (read through L2: other programs may have written them):
    the top-k middle pages, the sink and local pages, ascending, then -1 (phys 0) padding up to ``n_slots``."""
    p = tl.arange(0, NP_PAD)
    score = tl.load(score_row + p, mask=p < n_pages, other=float("-inf"), cache_modifier=".cg")
    keep = topk_mask(float_key(score), middle & (score > float("-inf")), topk)
    keep = keep | (live & ((p < N_SINK) | (p >= first_local)))  # sink pages, local pages
    rank = tl.cumsum(keep.to(tl.int32), 0) - 1  # ascending pages -> slots 0, 1, ...
    count = tl.sum(keep.to(tl.int32), 0)
    tl.store(sel_row + rank, p, mask=keep)
    tl.store(phys_row + rank, phys_all, mask=keep)
    slots = tl.arange(0, S_PAD)
    pad = (slots >= count) & (slots < n_slots)
    tl.store(sel_row + slots, tl.full([S_PAD], -1, tl.int32), mask=pad)
    tl.store(phys_row + slots, tl.zeros([S_PAD], tl.int32), mask=pad)


@triton.jit
def _quest_select_kernel(
    q_ptr, lo_ptr, hi_ptr, score_ptr, pt_ptr, len_ptr, sel_ptr, phys_ptr, cnt_ptr,
    stride_qb, stride_qh, stride_sp, stride_sh, stride_ob, stride_oh, stride_ptb, stride_selb, stride_selh,
    n_pages, topk, n_slots, n_runs,
    G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr, BLOCK_P: tl.constexpr,
    DOT_PREC: tl.constexpr, N_SINK: tl.constexpr, WINDOW: tl.constexpr, NP_PAD: tl.constexpr,
    S_PAD: tl.constexpr, FUSED: tl.constexpr, PDL: tl.constexpr, STREAM: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    row_id = b * tl.num_programs(1) + kvh
    # lengths and page table: written before the score kernel began, so readable before the wait (PDL)
    length = tl.load(len_ptr + b)
    pt_row = pt_ptr + b * stride_ptb
    live, middle, first_local, phys_all = _row_pages(pt_row, length, n_pages, PAGE, N_SINK, WINDOW, NP_PAD)
    if STREAM:  # this row's scores only: wait until its n_runs runs are counted, then zero the count again
        pdl_launch_dependents(PDL)  # the decode's programs may be placed now; they wait for their rows too
        while tl.atomic_add(cnt_ptr + row_id, 0, sem="acquire") < n_runs:
            pass
        tl.atomic_xchg(cnt_ptr + row_id, 0, sem="relaxed")
    else:
        pdl_wait(PDL)  # the scores (or, fused, the summaries) are the previous kernel's output
        pdl_launch_dependents(PDL)  # the decode's programs may be placed while the selection runs
    score_row = score_ptr + b * stride_ob + kvh * stride_oh
    if FUSED:  # this row's scores first (the program re-reads them below, after a barrier)
        used = tl.cdiv(length, PAGE)
        q = load_q_group(q_ptr, b, kvh, stride_qb, stride_qh, G, G_PAD, D).to(tl.float32)
        q_pos = tl.maximum(q, 0.0).to(lo_ptr.dtype.element_ty)
        q_neg = tl.minimum(q, 0.0).to(lo_ptr.dtype.element_ty)
        for p0 in range(0, n_pages, BLOCK_P):
            offs_p = p0 + tl.arange(0, BLOCK_P)
            sc = _page_scores(q_pos, q_neg, lo_ptr, hi_ptr, pt_row, offs_p, offs_p < tl.minimum(used, n_pages), kvh,
                              stride_sp, stride_sh, D, DOT_PREC)
            tl.store(score_row + offs_p, sc, mask=offs_p < n_pages)
        tl.debug_barrier()
    _select_row(score_row, sel_ptr + b * stride_selb + kvh * stride_selh, phys_ptr + b * stride_selb +
                kvh * stride_selh, live, middle, first_local, phys_all, n_pages, topk, n_slots, N_SINK, NP_PAD, S_PAD)
    if STREAM:  # release the row to its decode programs
        tl.debug_barrier()
        tl.atomic_xchg(cnt_ptr + tl.num_programs(0) * tl.num_programs(1) + row_id, 1, sem="release")


def fuse_by_default(batch: int, num_kv_heads: int, n_pages: int, device: torch.device) -> bool:
    """Fused score+select when its (sequence, KV head) programs alone fill the GPU, or when each row of summaries
    is short (<= 256 pages: at 4K context, batch 8, fused 20 us vs 22 us on the H100). Otherwise each fused program
    reads a long row alone and the separate, fully parallel score kernel is faster (16K: 64 vs 53 us)."""
    sms = num_sms(device)
    return batch * num_kv_heads >= sms or n_pages <= 256


def check_counters(counters: torch.Tensor, batch: int, num_kv_heads: int) -> None:
    """Streaming needs [3, B * Hkv] contiguous int32 counters (kernel rows 0-2 at fixed offsets)."""
    if counters.shape != (3, batch * num_kv_heads) or not counters.is_contiguous() or counters.dtype != torch.int32:
        raise ValueError(f"Quest streaming needs contiguous [3, {batch * num_kv_heads}] int32 counters, got "
                         f"{tuple(counters.shape)} {counters.dtype}")


def quest_select(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, page_table: torch.Tensor,
                 lengths: torch.Tensor, page_size: int, n_pages: int, topk: int, sink: int, local: int,
                 fused: bool | None = None, block_p: int = 64, scores: torch.Tensor | None = None,
                 num_warps: int | None = None, return_scores: bool = False, counters: torch.Tensor | None = None,
                 programs: int | None = None, run_pages: int | None = None) -> tuple[torch.Tensor, ...]:
    """(sel, phys) [B, Hkv, S] int32: the selection of ``ref.quest.select_pages`` and its physical pages
    (0 in empty slots). Two launches (scores, select) or one (``fused``); no torch ops in between.
    ``counters`` [3, B * Hkv] int32 zeros (left zero by the ``quest_decode(counters=...)`` that must follow):
    streaming instead, rows handed on as they finish: ``programs`` persistent score programs count each row's
    scored runs (of ``run_pages`` pages; defaults: ``STREAM_PROGRAMS_PER_SM``, ``SCORE_RUN``), its selection
    program waits for them alone, then flags the row for the decode's programs.
    ``scores``: precomputed (unfused) scores, for timing the selection alone. ``return_scores``: also return the
    [B, Hkv, n_pages] scores the selection was made from. The fused program computes the same bound per head
    with tensor-core dots, so its scores may differ from the score kernel's in the last bits (summation order)."""
    b, hq, d = q.shape
    hkv = kmin.shape[1]
    if counters is not None:
        if fused is not None or scores is not None:
            raise ValueError("quest_select: counters (streaming) go with fused=None and no precomputed scores")
        check_counters(counters, b, hkv)
    n_sink, n_local = page_counts(page_size, sink, local)
    n_slots = n_sink + min(topk, n_pages) + n_local
    np_pad = next_pow2(n_pages)
    if np_pad > MAX_SELECT_PAGES:
        from litesys.kernels.ref.quest import select_pages
        scores = quest_scores(q, kmin, kmax, page_table, lengths, page_size, n_pages)
        sel = select_pages(scores, lengths, page_size, topk, sink, local)
        phys = page_table.long().gather(1, sel.clamp(min=0).long().view(b, -1)).view(sel.shape)
        phys = torch.where(sel >= 0, phys, 0).to(torch.int32)
        if counters is not None:  # every row ready for the streaming decode
            counters[1, :b * hkv].fill_(1)
        return (sel, phys, scores) if return_scores else (sel, phys)
    stream = counters is not None
    if stream:  # counters[0]: scored runs per (sequence, KV head), counters[1]: the rows' ready flags
        fused = False
        run_pages = max(4, (run_pages or SCORE_RUN) // 4 * 4)  # whole steps of quest_scores' block_p (4)
        scores = quest_scores(q, kmin, kmax, page_table, lengths, page_size, n_pages, pages_per_prog=run_pages,
                              counters=counters, programs=programs or STREAM_PROGRAMS_PER_SM * num_sms(q.device))
    elif fused is None:
        fused = fuse_by_default(b, hkv, n_pages, q.device)
    if fused:
        scores = torch.empty(b, hkv, n_pages, dtype=torch.float32, device=q.device)
    elif scores is None:
        scores = quest_scores(q, kmin, kmax, page_table, lengths, page_size, n_pages)
    sel = torch.empty(b, hkv, n_slots, dtype=torch.int32, device=q.device)
    phys = torch.empty_like(sel)
    pdl = use_pdl(q.device)
    _quest_select_kernel[(b, hkv)](
        q, kmin, kmax, scores, page_table, lengths, sel, phys, counters if stream else lengths,
        q.stride(0), q.stride(1), kmin.stride(0), kmin.stride(1), scores.stride(0), scores.stride(1),
        page_table.stride(0), sel.stride(0), sel.stride(1),
        n_pages, topk, n_slots, cdiv(n_pages, run_pages) if stream else 0,
        G=hq // hkv, G_PAD=group_pad(hq // hkv), D=d, PAGE=page_size, BLOCK_P=block_p,
        DOT_PREC=dot_precision(kmin.dtype), N_SINK=n_sink, WINDOW=max(local, 1), NP_PAD=np_pad,
        S_PAD=next_pow2(n_slots), FUSED=fused, PDL=pdl, STREAM=stream,
        num_warps=num_warps or num_warps_for(np_pad), launch_pdl=pdl,
    )
    return (sel, phys, scores) if return_scores else (sel, phys)


@triton.jit
def _quest_summary_kernel(k_ptr, slot_ptr, lo_ptr, hi_ptr, stride_kp, stride_ks, stride_kh, stride_sp, stride_sh,
                          ks_ptr, PAGE: tl.constexpr, PAGE_PAD: tl.constexpr, D: tl.constexpr, FP8: tl.constexpr):
    i = tl.program_id(0)
    kvh = tl.program_id(1)
    slot = tl.maximum(tl.load(slot_ptr + i), 0)  # padding rows (slot -1): the scratch page 0, as the torch path
    page = slot // PAGE
    rows = tl.arange(0, PAGE_PAD)
    offs_d = tl.arange(0, D)
    filled = rows <= slot % PAGE
    k = tl.load(k_ptr + page * stride_kp + kvh * stride_kh + rows[:, None] * stride_ks + offs_d[None, :],
                mask=filled[:, None], other=0.0).to(tl.float32)
    if FP8:  # summaries of the dequantised keys (what the decode reads)
        k = k * tl.load(ks_ptr + kvh)
    lo = tl.min(tl.where(filled[:, None], k, float("inf")), 0)
    hi = tl.max(tl.where(filled[:, None], k, float("-inf")), 0)
    out = page * stride_sp + kvh * stride_sh + offs_d
    tl.store(lo_ptr + out, lo.to(lo_ptr.dtype.element_ty))
    tl.store(hi_ptr + out, hi.to(hi_ptr.dtype.element_ty))


def quest_update_summaries(k_cache: torch.Tensor, slot_mapping: torch.Tensor, kmin: torch.Tensor,
                           kmax: torch.Tensor, k_scale: torch.Tensor | None = None) -> None:
    """Decode step: recompute kmin/kmax [P, Hkv, D] of every written page from its valid entries (one launch).

    ``slot_mapping`` [N]: one new token per row (a decode step), so the pages are distinct except padding rows,
    which all write the scratch page 0 the same values. fp8 caches: ``k_scale`` [Hkv] fp32."""
    n = slot_mapping.shape[0]
    if n == 0:
        return
    page, hkv, d = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    _quest_summary_kernel[(n, hkv)](
        k_cache, slot_mapping, kmin, kmax, k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        kmin.stride(0), kmin.stride(1), slot_mapping if k_scale is None else k_scale, PAGE=page,
        PAGE_PAD=next_pow2(page), D=d, FP8=k_scale is not None, num_warps=1,
    )


@triton.jit
def _quest_decode_kernel(
    q_ptr, k_ptr, v_ptr, pt_ptr, len_ptr, sel_ptr, phys_ptr, po_ptr, lse_ptr,
    stride_qb, stride_qh,
    stride_kp, stride_ks, stride_kh,
    stride_vp, stride_vs, stride_vh, stride_vd,
    stride_ptb, stride_selb, stride_selh,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    qk_scale, n_virtual, ks_ptr, vs_ptr, cnt_ptr,
    G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr,
    SPLIT: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, HAS_PHYS: tl.constexpr,
    PDL: tl.constexpr, FP8: tl.constexpr, V_T: tl.constexpr, VEC: tl.constexpr, STREAM: tl.constexpr,
):
    if STREAM:  # grid (split, KV head, sequence): the rows selected first are placed first
        split = tl.program_id(0)
        kvh = tl.program_id(1)
        b = tl.program_id(2)
        n_split = tl.num_programs(0)
        rows = tl.num_programs(1) * tl.num_programs(2)
    else:
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        split = tl.program_id(2)
    k_scale, v_scale = fp8_scales(ks_ptr, vs_ptr, kvh, FP8)  # fixed scales: no PDL dependency
    if FP8:
        qk_scale = qk_scale * k_scale
    # q and lengths predate the score kernel (our PDL chain never writes them): read before the wait
    length = tl.load(len_ptr + b)
    start = split * SPLIT
    end = tl.minimum(start + SPLIT, n_virtual)
    offs_n = tl.arange(0, BLOCK_N)
    q = load_q_group(q_ptr, b, kvh, stride_qb, stride_qh, G, G_PAD, D)
    if STREAM:  # wait for this row's selection only; the row's last split to pass zeroes its flag again
        row_id = b * tl.num_programs(1) + kvh
        flag = cnt_ptr + rows + row_id
        while tl.atomic_add(flag, 0, sem="acquire") == 0:
            pass
        if tl.atomic_add(cnt_ptr + 2 * rows + row_id, 1, sem="relaxed") == n_split - 1:
            tl.atomic_xchg(flag, 0, sem="relaxed")
            tl.atomic_xchg(cnt_ptr + 2 * rows + row_id, 0, sem="relaxed")
    else:
        pdl_wait(PDL)  # the selection is the previous kernel's output
    m, den, acc = softmax_state(G_PAD, D)
    sel_row = sel_ptr + b * stride_selb + kvh * stride_selh
    phys_row = phys_ptr + b * stride_selb + kvh * stride_selh
    pt_row = pt_ptr + b * stride_ptb
    for n0 in range(start, end, BLOCK_N):
        vpos = n0 + offs_n  # virtual position: slot vpos // PAGE of the selection, offset vpos % PAGE
        in_split = vpos < end
        # the selection through L2 (.cg): streaming, it is written while this grid runs, next to rows read before
        lp = tl.load(sel_row + vpos // PAGE, mask=in_split, other=-1, cache_modifier=".cg")
        pos = lp * PAGE + vpos % PAGE
        valid = in_split & (lp >= 0) & (pos < length)
        if HAS_PHYS:  # independent of lp: no dependent sel -> page-table load before the K/V loads
            page = tl.load(phys_row + vpos // PAGE, mask=in_split, other=0, cache_modifier=".cg").to(tl.int64)
        else:
            page = tl.load(pt_row + lp, mask=valid, other=0).to(tl.int64)
        slot = vpos % PAGE
        acc, m, den = attend_paged_block(acc, m, den, q, k_ptr, v_ptr, page, slot, valid, kvh, stride_kp, stride_ks,
                                         stride_kh, stride_vp, stride_vs, stride_vh, stride_vd, qk_scale, D, DOT_PREC,
                                         V_T, VEC)
    if FP8:
        acc = acc * v_scale
    pdl_launch_dependents(PDL)  # the merge's programs may be placed while the last splits finish
    store_partial(po_ptr, lse_ptr, acc, m, den, b, kvh, split, stride_pb, stride_ph, stride_ps,
                  stride_lb, stride_lh, G, G_PAD, D)


@triton.jit
def _quest_merge_kernel(po_ptr, lse_ptr, out_ptr, stride_pb, stride_ph, stride_ps, stride_lb, stride_lh,
                        stride_ob, stride_oh, NSPLIT: tl.constexpr, S_PAD: tl.constexpr, D: tl.constexpr,
                        PDL: tl.constexpr):
    pdl_wait(PDL)
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
    sms = num_sms(device)
    # DECODE_PROGRAMS_PER_SM (H100, waiting chain: 3, 6 splits beat 9 by ~1 us; H200 streaming: 4 beat 3, 5, 6)
    want = max(1, min(DECODE_PROGRAMS_PER_SM * sms // (batch * num_kv_heads), cdiv(n_virtual, block_n), 64))
    return cdiv(cdiv(n_virtual, want), block_n) * block_n


def quest_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                 lengths: torch.Tensor, sel: torch.Tensor, scale: float, block_n: int = 64,
                 split: int | None = None, num_warps: int = 4, num_stages: int = 2,
                 phys: torch.Tensor | None = None, k_scale: torch.Tensor | None = None,
                 v_scale: torch.Tensor | None = None, counters: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q·K_sel * scale)·V_sel over the pages in ``sel`` [B, Hkv, S] -> [B, Hq, D] in the cache dtype
    (q's dtype for an fp8 cache, whose ``k_scale``/``v_scale`` [Hkv] fp32 are then given).

    ``split``: virtual tokens per program (a multiple of ``block_n``); default from the shapes.
    ``phys``: optional [B, Hkv, S] physical pages of ``sel``'s slots (as ``quest_select`` returns).
    ``counters``: streaming, only right after ``quest_select(counters=...)`` with the same counters (which
    flags each row when selected; nothing else does, so a decode waiting on them alone would wait forever):
    each (sequence, KV head) starts as soon as its own selection is written, and the counters are left zero.
    """
    b, hq, d = q.shape
    page, hkv = k_cache.shape[1], k_cache.shape[2]
    if d != next_pow2(d):
        raise ValueError(f"quest_decode needs a power-of-two head_dim, got {d}; use the torch path")
    if counters is not None:
        check_counters(counters, b, hkv)
    sel = sel.contiguous()
    n_virtual = sel.shape[-1] * page
    split = split or _split_size(b, hkv, n_virtual, block_n, q.device)
    nsplit = cdiv(n_virtual, split)
    partial = torch.empty(b, hq, nsplit, d, dtype=torch.float32, device=q.device)
    lse = torch.empty(b, hq, nsplit, dtype=torch.float32, device=q.device)
    if phys is not None and phys.stride() != sel.stride():
        phys = phys.contiguous()
    pdl = use_pdl(q.device)
    out = torch.empty(b, hq, d, dtype=v_cache.dtype if k_scale is None else q.dtype, device=q.device)
    if k_scale is not None:  # fp8 pages meet q in fp16 (16-bit models) or fp32
        q = q.to(fp8_compute_dtype(q.dtype))
    v_strides, v_t, vec = v_layout(v_cache, block_n)
    _quest_decode_kernel[(b, hkv, nsplit) if counters is None else (nsplit, hkv, b)](
        q, k_cache, v_cache, page_table, lengths, sel, sel if phys is None else phys, partial, lse,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        *v_strides,
        page_table.stride(0), sel.stride(0), sel.stride(1),
        partial.stride(0), partial.stride(1), partial.stride(2),
        lse.stride(0), lse.stride(1),
        scale * LOG2E, n_virtual, lengths if k_scale is None else k_scale, lengths if v_scale is None else v_scale,
        lengths if counters is None else counters,
        G=hq // hkv, G_PAD=group_pad(hq // hkv), D=d, PAGE=page, SPLIT=split, BLOCK_N=block_n,
        DOT_PREC=dot_precision(k_cache.dtype if k_scale is None else q.dtype), HAS_PHYS=phys is not None, PDL=pdl,
        FP8=k_scale is not None, V_T=v_t, VEC=vec, STREAM=counters is not None, num_warps=num_warps,
        num_stages=num_stages, launch_pdl=pdl,
    )
    _quest_merge_kernel[(b, hq)](
        partial, lse, out, partial.stride(0), partial.stride(1), partial.stride(2), lse.stride(0), lse.stride(1),
        out.stride(0), out.stride(1), NSPLIT=nsplit, S_PAD=next_pow2(nsplit), D=d, PDL=pdl, num_warps=2,
        launch_pdl=pdl,
    )
    return out
