"""Triton kernel of the selection processors (topk, block_topk, random_select, random_nsample).

``topk_drop``: one program per (sequence, KV head) row builds the row's "drop" mask in one pass: candidates are
the positions ``lo <= i < hi_b`` (``hi_b = max(len_b - hi_sub, 0) // hi_div``) of rows with ``len_b > dense_upto``,
the K best are kept (``triton_select.topk_mask``: exact, ties to the lower index), the other candidates dropped.
Keys are the fp32 ``scores`` (larger = better, -inf never kept) or, with ``scores=None``, the counter-based noise
of ``common.counter_hash`` computed in the kernel (smaller = better, as the random methods' ``(noise, position)``
order). This replaces, per step: the int64 noise materialisation (~15 elementwise int64 passes), ``torch.topk``
(with its sort), the scatter into a mask, and the ``expand_groups`` / ``apply_keep`` chain over ``[B, Hq, L]``.
The caller applies the ``[B, Hkv, L]`` mask with one broadcast ``masked_fill`` over the group.
The torch processors are the reference (``tests/test_sparse_processors.py`` runs both).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.attention.sparse.triton_select import float_key, hash_at, hash_base, num_warps_for, topk_mask

MAX_ROW = 65536  # widest row held in registers; wider rows use the torch path


@triton.jit
def _topk_drop_kernel(
    score_ptr, len_ptr, seq_ptr, drop_ptr,
    stride_sb, stride_sh, stride_db, stride_dh,
    n, k, lo, hi_sub, hi_div, dense_upto, seed, layer,
    HASH: tl.constexpr, N_PAD: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    length = tl.load(len_ptr + b)
    hi = tl.maximum(length - hi_sub, 0) // hi_div
    i = tl.arange(0, N_PAD)
    cand = (i >= lo) & (i < hi) & (i < n) & (length > dense_upto)
    if HASH:
        zero = tl.zeros([], tl.int64)  # zero + x: int64 whether Triton passed x as i32 or specialised it (x == 1)
        hb = hash_base(zero + seed, zero + layer, tl.load(seq_ptr + b).to(tl.int64), length.to(tl.int64),
                       h.to(tl.int64))
        key = 0xFFFFFFFF - hash_at(hb, i.to(tl.int64))  # the smallest noise is the best key
    else:
        score = tl.load(score_ptr + b * stride_sb + h * stride_sh + i, mask=i < n, other=float("-inf"))
        key = float_key(score)
        cand = cand & (score > float("-inf"))
    keep = topk_mask(key, cand, k)
    tl.store(drop_ptr + b * stride_db + h * stride_dh + i, (cand & ~keep).to(tl.uint8), mask=i < n)


def fits(width: int) -> bool:
    return triton.next_power_of_2(max(1, width)) <= MAX_ROW


def topk_drop(lengths: torch.Tensor, batch: int, heads: int, width: int, k: int, lo: int, hi_sub: int,
              hi_div: int = 1, dense_upto: int = 0, scores: torch.Tensor | None = None,
              seq: torch.Tensor | None = None, seed: int = 0, layer: int = 0) -> torch.Tensor:
    """[B, heads, width] bool: candidates not among their row's k best (see the module docstring)."""
    dev = lengths.device
    drop = torch.empty(batch, heads, width, dtype=torch.uint8, device=dev)
    hashed = scores is None
    if hashed:
        scores = drop  # unused pointer
    if seq is None:
        seq = torch.zeros(batch, dtype=torch.int64, device=dev)
    n_pad = triton.next_power_of_2(max(1, width))
    _topk_drop_kernel[(batch, heads)](
        scores, lengths, seq, drop,
        scores.stride(0), scores.stride(1), drop.stride(0), drop.stride(1),
        width, k, lo, hi_sub, hi_div, dense_upto, seed, layer,
        HASH=hashed, N_PAD=n_pad, num_warps=num_warps_for(n_pad),
    )
    return drop.view(torch.bool)

