"""Plain PyTorch MoE experts: the CPU path and the reference of the Triton kernels (``kernels/moe.py``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from litesys.kernels.ref.norm_rope import silu_mul


def moe_reference(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor) -> torch.Tensor:
    """x [T, H]; w13 [E, 2I, H] (gate rows then up rows); w2 [E, H, I]; topk_* [T, k] -> [T, H].

    One loop over the experts that got tokens (in expert order, like transformers' eager path): gather the
    expert's rows, gate_up, SiLU·mul, down, scale by the routing weight, add back to the tokens.
    """
    out = torch.zeros_like(x)
    flat = topk_ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=w13.shape[0]).tolist()  # host sync: fine off the GPU hot path
    start = 0
    for e, c in enumerate(counts):
        if c == 0:
            continue
        pairs = order[start:start + c]
        start += c
        tok, slot = pairs // topk_ids.shape[1], pairs % topk_ids.shape[1]
        y = F.linear(silu_mul(F.linear(x[tok], w13[e])), w2[e])
        out.index_add_(0, tok, y * topk_weights[tok, slot, None])
    return out
