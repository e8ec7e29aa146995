"""Top-k routing of a MoE block (the expert-sorted order the fused kernels read is ``kernels/moe_align.py``).

Runs on the device without a host sync and with shapes fixed by the token count (CUDA-graph safe).
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from litesys.kernels.common import use_triton
from litesys.kernels.ref.moe_route import route_topk


def route(x: torch.Tensor, gate: torch.Tensor, top_k: int, norm_topk_prob: bool, linear: Callable = F.linear,
          invariant: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x [T, H], router weight [E, H] -> (weights [T, k] in x's dtype, expert ids [T, k] int64).

    As transformers: softmax in fp32 over all experts, top-k, optionally renormalised over the k, then cast
    to the activation dtype (bf16 weights are what the reference multiplies with). ``linear``: the router GEMM;
    ``invariant`` (deterministic mode): the renormalising sum in slot order, never a reduction kernel's. On CUDA
    the post-GEMM steps are one kernel (``kernels/moe_route.py``, batch-invariant: both modes), else the twin.
    """
    logits = linear(x, gate)
    if use_triton(logits):
        from litesys.kernels import moe_route  # Triton only where it can run

        if moe_route.fits(gate.shape[0], top_k):
            return moe_route.route_topk(logits, top_k, norm_topk_prob, x.dtype)
    return route_topk(logits, top_k, norm_topk_prob, x.dtype, invariant)
