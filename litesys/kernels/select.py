"""Exact per-row top-k inside one Triton program (a bit search on int64 keys in [0, 2^32), ties to the lower
index, as a stable sort), shared by Quest and the processors; ``float_key`` maps fp32 to keys in order."""
from __future__ import annotations

import triton
import triton.language as tl

from litesys.kernels.common import next_pow2


@triton.jit
def float_key(x):
    """fp32 -> int64 in [0, 2^32): larger float -> larger key (exact, all finite values and +-inf)."""
    b = x.to(tl.int32, bitcast=True)
    k = tl.where(b >= 0, b, b ^ 0x7FFFFFFF)  # as signed int32 this orders like the float
    return k.to(tl.int64) + 2147483648


@triton.jit
def topk_mask(key, cand, K):
    """bool mask of the K best candidates of ``key`` (int64 in [0, 2^32)); all candidates if there are <= K.

    Ties at the K-th key: lowest index first (``key`` / ``cand`` are 1-D, index = position in the tensor).
    The search for t = the largest value with count(key >= t) >= K starts below the bits that every candidate
    shares (those of its min and max) and stops as soon as a candidate threshold splits off exactly K keys:
    about 12-18 masked counts instead of 32 on real scores (each count is a block-wide reduction, the cost).
    """
    lo = tl.min(tl.where(cand, key, 4294967295), 0)
    hi = tl.max(tl.where(cand, key, 0), 0)
    n_cand = tl.sum(cand.to(tl.int32), 0)
    bit = tl.full([], 2147483648, tl.int64)
    while (bit > 0) & ((bit & (lo ^ hi)) == 0):  # scalar only: skip the shared prefix
        bit = bit >> 1
    t = tl.where(bit > 0, lo & ~(bit * 2 - 1), lo)  # the shared prefix: count(key >= t) = n_cand
    done = (n_cand <= K).to(tl.int32)  # t <= every candidate: all of them are kept
    while (bit > 0) & (done == 0):
        c = t | bit
        n = tl.sum((cand & (key >= c)).to(tl.int32), 0)
        t = tl.where(n >= K, c, t)
        done = (n == K).to(tl.int32)  # key >= c is exactly the K best: no tie at the threshold to break
        bit = bit >> 1
    return _keep_at(key, cand, K, t)


@triton.jit
def _keep_at(key, cand, K, t):
    """Candidates above the threshold ``t``, then those equal to it in index order up to K in all."""
    above = cand & (key > t)
    n_above = tl.sum(above.to(tl.int32), 0)
    eq = cand & (key == t)
    rank = tl.cumsum(eq.to(tl.int32), 0)  # inclusive
    return above | (eq & (rank <= K - n_above))


def num_warps_for(n_pad: int) -> int:
    """Warps for a program holding ``n_pad`` int64 keys (about 32 per thread)."""
    return max(4, min(32, next_pow2(max(1, n_pad // 1024))))
