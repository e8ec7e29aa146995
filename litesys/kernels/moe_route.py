"""Top-k routing after the router GEMM in one launch: fp32 softmax over the experts, the k largest, the optional
renormalisation and the cast, one program per token (torch would launch ~8 kernels: softmax, topk's select and
sort, sum, divide, casts: ~20 us per MoE layer of a decode step). Twin and contract: ``kernels/ref/moe_route.py``.

Batch-invariant by construction (one row per program, fixed reduction order, the renormalising sum in slot
order), so deterministic mode uses it too.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.common import next_pow2

MAX_EXPERTS, MAX_TOP_K = 256, 16  # one row in registers; k picks each a pass over it


@triton.jit
def _route_kernel(logits_ptr, w_ptr, ids_ptr, E, stride_t, K: tl.constexpr, BLOCK_E: tl.constexpr,
                  BLOCK_K: tl.constexpr, NORM: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_E)
    valid = offs < E
    x = tl.load(logits_ptr + t * stride_t + offs, mask=valid, other=float("-inf")).to(tl.float32)
    m = tl.max(x, axis=0)
    e = tl.where(valid, tl.exp(x - m), 0.0)
    probs = tl.math.div_rn(e, tl.sum(e, axis=0))
    slots = tl.arange(0, BLOCK_K)
    weights = tl.zeros([BLOCK_K], dtype=tl.float32)
    ids = tl.zeros([BLOCK_K], dtype=tl.int32)
    total = 0.0
    avail = valid
    for j in tl.static_range(K):  # the largest logit left; among equals the lowest id (as the twin's stable sort)
        best = tl.max(tl.where(avail, x, float("-inf")), axis=0)
        pick = tl.min(tl.where(avail & (x == best), offs, BLOCK_E), axis=0)
        p = tl.sum(tl.where(offs == pick, probs, 0.0), axis=0)
        weights = tl.where(slots == j, p, weights)
        ids = tl.where(slots == j, pick, ids)
        total += p  # slot order: sum_slots' order
        avail = avail & (offs != pick)
    if NORM:
        weights = tl.math.div_rn(weights, tl.zeros([BLOCK_K], dtype=tl.float32) + total)
    keep = slots < K
    tl.store(w_ptr + t * K + slots, weights.to(w_ptr.dtype.element_ty), mask=keep)
    tl.store(ids_ptr + t * K + slots, ids.to(tl.int64), mask=keep)


def fits(num_experts: int, top_k: int) -> bool:
    """Whether the kernel takes this router (else the twin)."""
    return num_experts <= MAX_EXPERTS and 1 <= top_k <= min(MAX_TOP_K, num_experts)


def route_topk(logits: torch.Tensor, top_k: int, norm_topk_prob: bool, dtype: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [T, E] (any float dtype, rows of any stride) -> (weights [T, k] ``dtype``, ids [T, k] int64)."""
    T, E = logits.shape
    weights = torch.empty(T, top_k, dtype=dtype, device=logits.device)
    ids = torch.empty(T, top_k, dtype=torch.int64, device=logits.device)
    if T == 0:
        return weights, ids
    logits = logits if logits.stride(1) == 1 else logits.contiguous()
    _route_kernel[(T,)](logits, weights, ids, E, logits.stride(0), K=top_k, BLOCK_E=next_pow2(E),
                        BLOCK_K=next_pow2(top_k), NORM=norm_topk_prob, num_warps=1 if E <= 64 else 2)
    return weights, ids
