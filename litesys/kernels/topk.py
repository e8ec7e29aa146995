"""Row-wise top-k for small k in Triton (the sampler's candidates), with the contract of ``ref/topk.py``: values and
indices by (value descending, index ascending), a function of the row alone, bitwise.

Every logit becomes a unique integer key: its value's order bits above, the complement of its position below (16 +
16 bits for bf16/fp16, 32 + 32 for fp32), so "largest key" is the contract's order and no two keys tie.
Stage 1, one program per (row, chunk of logits): the chunk is cut into groups of consecutive logits; a key in the
chunk's top k has fewer than k keys above it, so its group's maximum is among the k largest group maxima: the top k
of the k best groups (k x group keys, reloaded from L1/L2) are the chunk's top k. That sorts chunk / group + k x group
keys instead of chunk (tl.topk, a bitonic network: the cost). With super-groups (``sup`` groups each) the argument
is applied twice: the k best super-groups by their maxima, then the k best groups among their k x sup. Stage 2, one
program per row: the top k of the chunks' C x k candidates, keyed by their position in stage 1's output (chunks in
order, each sorted: equal values stay in index order), then each winner's logit reloaded by index.
"""
from __future__ import annotations

import torch

from litesys.kernels.common import cdiv, next_pow2, use_triton
from litesys.kernels.ref.topk import BITS, TOPK_MAX, topk_torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU installs without triton
    triton = None

__all__ = ["TOPK_MAX", "topk"]

# (chunk, group, super, warps) per power-of-two k: logits per stage-1 program (<= 65536: a position fits the key's
# 16 low bits), consecutive logits per group (one vector load per thread), groups per super-group (1: one level).
# The fastest measured on the H200 at 256 x 151,936 bf16 (benchmarks/results/h200_sampler_topk.json): k 32 59 us
# (one level at best 85 us); k 64 137 us (one level; the two-level configs were not reached at k 64).
CONFIGS = {32: (16384, 8, 8, 4), 64: (8192, 16, 1, 4)}
DEFAULT = (16384, 8, 8, 4)  # k <= 16: k 32's, measured only there


def topk(x: torch.Tensor, k: int, backend: str = "auto", config: tuple[int, int, int, int] | None = None
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [B, k] in x's dtype, indices [B, k] int64): each row's k largest by (value desc, index asc).
    Any 1 <= k <= V; the kernel takes k up to TOPK_MAX (its power-of-two bucket, sliced), the twin the rest."""
    B, V = x.shape
    K = max(2, next_pow2(k))  # k = 1 too: tl.topk's one-element case differs across Triton versions
    if not use_triton(x, backend) or K > min(TOPK_MAX, V) or x.dtype not in BITS or B == 0:
        return topk_torch(x, k)
    x = x if x.stride(1) == 1 else x.contiguous()
    chunk, group, sup, warps = config or CONFIGS.get(K, DEFAULT)
    ch = max(K, min(chunk, next_pow2(V)))
    s = max(1, min(group, ch // K))  # at least K groups per chunk
    s2 = max(1, min(sup, ch // (s * K)))  # ... and K super-groups
    C = cdiv(V, ch)
    wide = BITS[x.dtype][1] == 32
    if not wide and C * K > 1 << 16:
        raise ValueError(f"topk: {C} chunks x {K} candidates overflow the 16-bit position; raise chunk ({chunk})")
    ok = torch.empty(B, C * K, dtype=torch.int64 if wide else torch.int32, device=x.device)
    pos = torch.empty(B, C * K, dtype=torch.int32, device=x.device)
    _chunk_topk[(B, C)](x, x.stride(0), V, ok, pos, C, CH=ch, S=s, S2=s2, K=K, WIDE=wide, num_warps=warps)
    vals = torch.empty(B, K, dtype=x.dtype, device=x.device)
    idx = torch.empty(B, K, dtype=torch.int64, device=x.device)
    _merge_topk[(B,)](x, x.stride(0), ok, pos, vals, idx, C, K=K, P=next_pow2(C * K), WIDE=wide, num_warps=warps)
    return vals[:, :k], idx[:, :k]


if triton is not None:

    @triton.jit
    def _order_bits(x, WIDE: tl.constexpr):
        """``ref.topk.order_bits`` in a kernel: int32 (16-bit floats) / int64 (fp32) with the order of the values."""
        if WIDE:
            b = x.to(tl.int32, bitcast=True)
            b = tl.where(b == -2147483648, 0, b)  # -0.0 is +0.0
            return (b ^ ((b >> 31) & 0x7FFFFFFF)).to(tl.int64)
        else:
            b = x.to(tl.int16, bitcast=True).to(tl.int32)
            b = tl.where(b == -32768, 0, b)
            return b ^ ((b >> 15) & 0x7FFF)

    @triton.jit
    def _key(order, p, ok, WIDE: tl.constexpr):
        """Unique key of (order bits, position p): larger value first, then smaller p; invalid -> below all."""
        if WIDE:
            key = (order << 32) | (0xFFFFFFFF - p.to(tl.int64))
            return tl.where(ok, key, -9223372036854775807 - 1)
        else:
            return tl.where(ok, (order << 16) | (0xFFFF - p), -2147483648)

    @triton.jit
    def _low(key, WIDE: tl.constexpr):
        """The position a key was made with (past any chunk for an invalid key: its gathers stay masked)."""
        if WIDE:
            return 0xFFFFFFFF - (key & 0xFFFFFFFF)
        else:
            return 0xFFFF - (key & 0xFFFF)

    @triton.jit
    def _keys_at(base, p, n, WIDE: tl.constexpr):
        """The keys of a chunk's logits at positions p (those past its n logits: below every key)."""
        return _key(_order_bits(tl.load(base + p, mask=p < n, other=0), WIDE), p, p < n, WIDE)

    @triton.jit
    def _chunk_topk(x_ptr, stride, V, ok_ptr, pos_ptr, C, CH: tl.constexpr, S: tl.constexpr, S2: tl.constexpr,
                    K: tl.constexpr, WIDE: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1)
        base = x_ptr + row * stride + c * CH
        n = V - c * CH  # logits of this chunk (the last one may be short)
        if S == 1:
            top = tl.topk(_keys_at(base, tl.arange(0, CH), n, WIDE), K)
        else:
            if S2 == 1:
                p = tl.arange(0, CH // S)[:, None] * S + tl.arange(0, S)[None, :]
                best = tl.topk(tl.max(_keys_at(base, p, n, WIDE), axis=1), K)  # the K best groups
            else:
                # the same argument one level up: the K best groups lie in the K best super-groups (S2 groups each),
                # whose maxima are taken S logits of each at a time (CH / S2 keys in registers)
                SG: tl.constexpr = S * S2
                p = tl.arange(0, CH // SG)[:, None] * SG + tl.arange(0, S)[None, :]
                smax = tl.max(_keys_at(base, p, n, WIDE), axis=1)
                for j in tl.static_range(1, S2):
                    smax = tl.maximum(smax, tl.max(_keys_at(base, p + j * S, n, WIDE), axis=1))
                q = (_low(tl.topk(smax, K), WIDE) // SG * SG)[:, None] + tl.arange(0, SG)[None, :]
                best = tl.topk(tl.max(tl.reshape(_keys_at(base, q, n, WIDE), [K * S2, S]), axis=1), K)
            q = (_low(best, WIDE) // S * S)[:, None] + tl.arange(0, S)[None, :]  # just read: cache hits
            top = tl.topk(tl.reshape(_keys_at(base, q, n, WIDE), [K * S]), K)
        out = (row * C + c) * K + tl.arange(0, K)
        tl.store(ok_ptr + out, top >> (32 if WIDE else 16))
        tl.store(pos_ptr + out, c * CH + _low(top, WIDE))

    @triton.jit
    def _merge_topk(x_ptr, stride, ok_ptr, pos_ptr, vals_ptr, idx_ptr, C, K: tl.constexpr, P: tl.constexpr,
                    WIDE: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        p = tl.arange(0, P)
        m = p < C * K
        order = tl.load(ok_ptr + row * C * K + p, mask=m, other=0)
        # position p in stage 1's output orders equal values by index: chunks in order, each sorted by the contract
        top = tl.topk(_key(order, p, m, WIDE), K)
        idx = tl.load(pos_ptr + row * C * K + _low(top, WIDE))
        out = row * K + tl.arange(0, K)
        tl.store(vals_ptr + out, tl.load(x_ptr + row * stride + idx))
        tl.store(idx_ptr + out, idx.to(tl.int64))
