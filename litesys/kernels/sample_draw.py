"""The sampler's step after the top-k, as one Triton launch: temperature, each row's top-k, top-p, min-p, the
counter-based uniform of (seed, step) and the inverse-CDF draw, greedy rows taking the first candidate.

The twin is ``engine/sampler.py``'s ``filtered`` + ``draw`` (the CPU path and the reference): the same formulas
in the same fp32 steps, one program per row over its K ranked candidates, so a row's token depends on that row
alone (batch-invariant). Sums and scans may round in a different order than torch's kernels: a draw can differ
only where the uniform lands within float rounding of a CDF step. In torch these steps are ~50 launches of
[B, K] elementwise ops (H200: ~1.3 us each, 0.06 ms of a decode step); here one.
"""
from __future__ import annotations

import torch

from litesys.kernels.common import next_pow2

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU installs without triton
    triton = None


def draw(vals: torch.Tensor, idx: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
         top_p: torch.Tensor, min_p: torch.Tensor, seed_hash: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Ranked candidates (values [B, K] by value desc, their token ids [B, K] int64) and per-row parameters (as
    ``SamplingTensors``; ``steps`` [B]: the index of the token being drawn) -> the next token per row [B] int64."""
    B, K = vals.shape
    tok = torch.empty(B, dtype=torch.int64, device=vals.device)
    if B == 0:
        return tok
    vals, idx = (x if x.stride(1) == 1 else x.contiguous() for x in (vals, idx))
    _draw_kernel[(B,)](vals, idx, temperature, top_k, top_p, min_p, seed_hash, steps, tok, K, vals.stride(0),
                       idx.stride(0), BLOCK=max(16, next_pow2(K)), num_warps=1)
    return tok


if triton is not None:

    @triton.jit
    def _lowbias32(x):
        """``hash.lowbias32`` on int64 values (products wrap; only the low 32 bits are kept)."""
        x = x & 0xFFFFFFFF
        x = ((x ^ (x >> 16)) * 0x7FEB352D) & 0xFFFFFFFF
        x = ((x ^ (x >> 15)) * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    @triton.jit
    def _draw_kernel(vals_ptr, idx_ptr, temp_ptr, topk_ptr, topp_ptr, minp_ptr, hash_ptr, steps_ptr, tok_ptr, K,
                     stride_v, stride_i, BLOCK: tl.constexpr):
        b = tl.program_id(0).to(tl.int64)
        r = tl.arange(0, BLOCK)
        inb = r < K
        temp = tl.load(temp_ptr + b)
        v = tl.load(vals_ptr + b * stride_v + r, mask=inb, other=float("-inf")).to(tl.float32)
        v = v / tl.maximum(temp, 1e-6)
        k = tl.load(topk_ptr + b).to(tl.int32)
        k = tl.minimum(tl.where(k > 0, k, K), K)
        live = r < k
        v = tl.where(live, v, float("-inf"))
        # softmax over the row's top-k
        e = tl.where(live, tl.exp(v - tl.max(v, axis=0)), 0.0)
        probs = e / tl.sum(e, axis=0)
        # top-p: a candidate stays if the mass before it is < top_p; min-p: relative to the most likely one
        before = tl.cumsum(probs, axis=0) - probs
        first = tl.sum(tl.where(r == 0, probs, 0.0), axis=0)
        keep = (before < tl.load(topp_ptr + b)) & (probs >= tl.load(minp_ptr + b) * first)
        probs = tl.where(keep | (r == 0), probs, 0.0)
        total = tl.sum(tl.where(r == K - 1, tl.cumsum(probs, axis=0), 0.0), axis=0)
        probs = probs / total
        # inverse CDF at the row's uniform (hash.uniform: 24 bits of lowbias32(seed_hash ^ step))
        h = _lowbias32(tl.load(hash_ptr + b) ^ tl.load(steps_ptr + b).to(tl.int64))
        u = (h >> 8).to(tl.float32) * (2.0 ** -24)
        cdf = tl.cumsum(probs, axis=0)
        last = tl.sum(tl.where(r == K - 1, cdf, 0.0), axis=0)
        pick = tl.sum(((cdf <= u * last) & inb).to(tl.int32), axis=0)
        pick = tl.minimum(pick, K - 1)
        pick = tl.minimum(pick, tl.sum((probs > 0).to(tl.int32), axis=0) - 1)  # never a zero-mass candidate
        pick = tl.where(temp == 0, 0, pick)  # greedy: the first ranked candidate (argmax's first maximum)
        tl.store(tok_ptr + b, tl.load(idx_ptr + b * stride_i + pick))
