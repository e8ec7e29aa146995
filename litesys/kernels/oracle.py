"""Triton kernels of the oracle processors (oracle_topp, oracle_sample): one program per (sequence, query head), in
place on the logits, no sort, no host sync.

The torch processors are the twins (``tests/test_kernels_oracle.py``); design and exactness: docs/kernels.md.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.common import next_pow2
from litesys.kernels.hash import hash_at, hash_base

MAX_ROW = 65536  # widest row top-p holds in registers; wider rows use the torch path
SAMPLE_WARPS = 16  # the sampler streams its row (warps, block, chunk: the fastest measured at 32K on an H100)
SAMPLE_BLOCK = 4096  # positions per streamed step
SAMPLE_CHUNK = 1024  # draws searched at once


@triton.jit
def _oracle_topp_kernel(x_ptr, len_ptr, stride_b, stride_h, width, sink, local, p,
                        N_PAD: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0)
    h = tl.program_id(1)
    length = tl.load(len_ptr + b).to(tl.int32)
    if length > sink + local:  # shorter rows stay dense: nothing to write
        row = x_ptr + b.to(tl.int64) * stride_b + h * stride_h
        hi = tl.minimum(length - local, width)  # the middle is [sink, hi)
        i = tl.arange(0, N_PAD)
        lm = tl.load(row + i, mask=(i >= sink) & (i < hi), other=float("-inf"))
        m = tl.max(lm, 0)
        m = tl.where(m > float("-inf"), m, 0.0)  # a middle of only -inf logits: all w = 0, as the torch path
        w = tl.exp(lm - m)  # 0 off the middle and at -inf logits; the only tensor live through the search
        target = p * tl.sum(w, 0)
        key = w.to(tl.int32, bitcast=True)  # w in [0, 1]: keys in [0, 0x3F800000], < 2^30
        t = tl.zeros([], tl.int32)
        bit = tl.full([], 1 << 29, tl.int32)
        for _ in range(30):  # t = the largest key with mass(key >= t) >= target (masked sums are monotone in t)
            c = t | bit
            t = tl.where(tl.sum(tl.where(key >= c, w, 0.0), 0) >= target, c, t)
            bit = bit >> 1
        mass_above = tl.sum(tl.where(key > t, w, 0.0), 0)  # < target: all ranked before the crossing position
        w_t = t.to(tl.float32, bitcast=True)
        n_ties = tl.zeros([], tl.int32)
        # the drops, streamed (w recomputed bit-identically from the row) so no pointers stay live in the search
        for c0 in range(sink, hi, BLOCK):
            j = c0 + tl.arange(0, BLOCK)
            mid = j < hi
            wj = tl.exp(tl.load(row + j, mask=mid, other=float("-inf")) - m)
            kj = wj.to(tl.int32, bitcast=True)
            tie = (kj == t) & (wj > 0)  # w == 0 (underflow, -inf) is never kept
            rank = n_ties + tl.cumsum(tie.to(tl.int32), 0) - 1  # ties in position order (stable sort)
            keep = (kj > t) | (tie & (mass_above + rank.to(tl.float32) * w_t < target))
            tl.store(row + j, tl.full([BLOCK], float("-inf"), tl.float32), mask=mid & ~keep)
            n_ties += tl.sum(tie.to(tl.int32), 0)


@triton.jit
def _oracle_sample_kernel(
    x_ptr, cnt_ptr, len_ptr, seq_ptr, stride_b, stride_h, stride_cb, stride_ch,
    width, n, sink, local, seed, layer, head0,
    LOG_N: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    length = tl.load(len_ptr + b).to(tl.int32)
    if length > sink + local + n:  # shorter rows stay dense: nothing to write
        row = x_ptr + b.to(tl.int64) * stride_b + h * stride_h
        cnt = cnt_ptr + b.to(tl.int64) * stride_cb + h * stride_ch
        hi = tl.minimum(length - local, width)  # the middle is [sink, hi)
        mx = tl.full([BLOCK], float("-inf"), tl.float32)
        for c0 in range(sink, hi, BLOCK):
            j = c0 + tl.arange(0, BLOCK)
            mx = tl.maximum(mx, tl.load(row + j, mask=j < hi, other=float("-inf")))
        m = tl.max(mx, 0)
        m = tl.where(m > float("-inf"), m, 0.0)  # a middle of only -inf logits: all w = 0, as the torch path
        total = tl.zeros([], tl.float32)
        for c0 in range(sink, hi, BLOCK):  # cdf (unnormalised, as the torch path) over the middle, in place
            j = c0 + tl.arange(0, BLOCK)
            mid = j < hi
            cdf = total + tl.cumsum(tl.exp(tl.load(row + j, mask=mid, other=float("-inf")) - m), 0)
            tl.store(row + j, cdf, mask=mid)  # the row is this program's scratch until the last pass
            tl.store(cnt + j, tl.zeros([BLOCK], tl.int32), mask=mid)
            total = tl.max(cdf, 0)
        tl.debug_barrier()  # the searches read cdf values other threads stored
        zero = tl.zeros([], tl.int64)  # zero + x: int64 whether Triton passed x as i32 or specialised it (x == 1)
        hb = hash_base(zero + seed, zero + layer, tl.load(seq_ptr + b).to(tl.int64), length.to(tl.int64),
                       zero + h + head0)  # the global query head: the same draws whichever rank holds it
        n_mid = hi - sink
        cdf_at = row + sink - 1  # cdf_at + k: the k-th middle cdf value, k >= 1
        for start in range(0, n, CHUNK):
            s = start + tl.arange(0, CHUNK)
            ok = s < n
            u = (hash_at(hb, s.to(tl.int64)) >> 8).to(tl.float32) * (2.0 ** -24)  # common.hash_to_uniform
            v = u * total
            pos = tl.zeros([CHUNK], tl.int32)  # how many middle cdf values are <= v (right=True), bit by bit
            for k in tl.static_range(LOG_N):
                nxt = pos + (1 << (LOG_N - 1 - k))
                c = tl.load(cdf_at + nxt, mask=ok & (nxt <= n_mid), other=float("inf"))
                pos = tl.where(c <= v, nxt, pos)
            # u * total may round up to total: clamp to the last middle position, as the torch path
            tl.atomic_add(cnt + sink + tl.minimum(pos, n_mid - 1), tl.full([CHUNK], 1, tl.int32), mask=ok,
                          sem="relaxed")
        tl.debug_barrier()  # every draw counted (and every cdf read) before the row is overwritten
        shift = m + tl.log(total)
        for c0 in range(sink, hi, BLOCK):
            j = c0 + tl.arange(0, BLOCK)
            mid = j < hi
            count = tl.load(cnt + j, mask=mid, other=0, cache_modifier=".cg")  # the atomics live in L2
            tl.store(row + j, tl.log(count.to(tl.float32) / n) + shift, mask=mid)  # log(0) = -inf: not drawn


def fits(width: int) -> bool:
    return next_pow2(max(1, width)) <= MAX_ROW


def _launch_shape(logits: torch.Tensor) -> tuple[int, int, int, int]:
    """(B, Hq, width, width rounded up to a power of two) of fp32 logits with unit stride along the row."""
    assert logits.dtype == torch.float32 and logits.stride(-1) == 1, (logits.dtype, logits.stride())
    b, hq, width = logits.shape
    return b, hq, width, next_pow2(max(1, width))


def oracle_topp(logits: torch.Tensor, lengths: torch.Tensor, p: float, sink: int, local: int,
                block: int | None = None) -> torch.Tensor:
    """``OracleTopPProcessor`` in one launch, in place: dropped middle positions of ``logits`` set to -inf.

    Needs ``fits(width)``; ``block`` (a power of two): positions per step of the streamed drop pass."""
    b, hq, width, n_pad = _launch_shape(logits)
    warps = max(4, min(16, n_pad // 2048))  # 64 weights a thread (no spills at 32K, measured faster than 32)
    _oracle_topp_kernel[(b, hq)](
        logits, lengths, logits.stride(0), logits.stride(1), width, sink, local, p,
        N_PAD=n_pad, BLOCK=min(block or 128 * warps, n_pad), num_warps=warps,
    )
    return logits


def oracle_sample(logits: torch.Tensor, lengths: torch.Tensor, n: int, sink: int, local: int, seq: torch.Tensor,
                  seed: int, layer: int, block: int = SAMPLE_BLOCK, chunk: int = SAMPLE_CHUNK,
                  head0: int = 0) -> torch.Tensor:
    """``OracleSampleProcessor`` in one launch, in place: the middle of sparse rows replaced by sampled logits.

    ``seq``: [B] int64 sequence ids of the noise; ``head0``: the global index of the first query head;
    ``block`` / ``chunk`` (powers of two): positions per streamed step, draws searched at once. Any width (the
    row is streamed, never held whole)."""
    b, hq, width, n_pad = _launch_shape(logits)
    counts = torch.empty(b, hq, width, dtype=torch.int32, device=logits.device)  # zeroed by the kernel
    _oracle_sample_kernel[(b, hq)](
        logits, counts, lengths, seq, logits.stride(0), logits.stride(1), counts.stride(0), counts.stride(1),
        width, n, sink, local, seed, layer, head0,
        LOG_N=n_pad.bit_length() - 1, BLOCK=min(block, n_pad), CHUNK=min(chunk, next_pow2(max(1, n))),
        num_warps=SAMPLE_WARPS,
    )
    return logits
