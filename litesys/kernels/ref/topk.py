"""Row-wise top-k with ties broken by index, in PyTorch: the contract's definition, the CPU path and the twin of the
Triton kernel in ``kernels/topk.py``.

Contract: the ``k`` largest entries of each row of ``x`` [B, V] (bf16, fp16 or fp32, NaN-free; -inf allowed) as
(values [B, k] in x's dtype, indices [B, k] int64), sorted by (value descending, index ascending), -0.0 ranked as
+0.0. Every entry gets a unique key, so the result is a function of the row alone (bitwise): never of the batch, of
how a kernel splits the row, or of which of equal logits a sort happens to put first.
"""
from __future__ import annotations

import torch

TOPK_MAX = 64  # the largest k the kernel serves (the sampler's fixed candidate count in deterministic mode)
BITS = {torch.bfloat16: (torch.int16, 16), torch.float16: (torch.int16, 16), torch.float32: (torch.int32, 32)}
M32 = 0xFFFFFFFF


def order_bits(x: torch.Tensor) -> torch.Tensor:
    """int64 with the order of x's values (sign-magnitude bits -> two's complement; -0.0 -> +0.0)."""
    if x.dtype not in BITS:
        raise TypeError(f"topk supports bfloat16, float16 and float32 logits, got {x.dtype}")
    int_dtype, bits = BITS[x.dtype]
    b = x.contiguous().view(int_dtype).long()
    b = torch.where(b == -(1 << (bits - 1)), 0, b)  # -0.0 (the sign bit alone) is +0.0
    return b ^ ((b >> (bits - 1)) & ((1 << (bits - 1)) - 1))  # negatives: flip the magnitude so larger is larger


def topk_torch(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values [B, k], indices [B, k] int64) of each row's k largest, by (value desc, index asc)."""
    B, V = x.shape
    if not 1 <= k <= V:
        raise ValueError(f"topk: k must be in [1, {V}] (the row length), got {k}")
    # the key: value above, the complement of the index below -> unique, larger index ranks lower among equals
    key = (order_bits(x) << 32) | (M32 - torch.arange(V, device=x.device))
    idx = M32 - (key.topk(k, dim=-1).values & M32)
    return x.gather(1, idx), idx
