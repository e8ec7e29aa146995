"""Top-k routing of a MoE block (the expert-sorted order the fused kernels read is ``kernels/moe_align.py``).

Runs on the device without a host sync and with shapes fixed by the token count (CUDA-graph safe).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from litesys.kernels.ref.moe import sum_slots


def route(x: torch.Tensor, gate: torch.Tensor, top_k: int, norm_topk_prob: bool, linear: Callable = F.linear,
          invariant: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, H], router weight [E, H] -> (weights [T, k] in x's dtype, expert ids [T, k] int64).

    As transformers: softmax in fp32 over all experts, top-k, optionally renormalised over the k, then cast
    to the activation dtype (bf16 weights are what the reference multiplies with). ``linear``: the router GEMM;
    ``invariant`` (deterministic mode): the renormalising sum in slot order, never a reduction kernel's.
    """
    probs = torch.softmax(linear(x, gate).float(), dim=-1)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if norm_topk_prob:
        total = sum_slots(weights.unsqueeze(-1)) if invariant else weights.sum(dim=-1, keepdim=True)
        weights = weights / total
    return weights.to(x.dtype), ids
