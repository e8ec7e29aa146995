"""Plain PyTorch MoE experts: the CPU path and the reference of the Triton kernels (``kernels/moe.py``)."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from litesys.kernels.ref.norm_rope import silu_mul, sum_parts


def moe_reference(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                  topk_ids: torch.Tensor, linear: Callable = F.linear) -> torch.Tensor:
    """x [T, H]; w13 [E, 2I, H] (gate rows then up rows); w2 [E, H, I]; topk_* [T, k] -> [T, H].

    One loop over the experts that got tokens: gather the expert's (token, slot) rows, gate_up, SiLU·mul, down
    (through ``linear``: deterministic mode passes the batch-invariant GEMM), scale by the routing weight; then
    each token's k outputs summed in its slot order (``sum_slots``), as the fused kernels do.
    """
    T, k = topk_ids.shape
    per_pair = x.new_empty(T * k, x.shape[1])
    flat = topk_ids.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=w13.shape[0]).tolist()  # host sync: fine off the GPU hot path
    start = 0
    for e, c in enumerate(counts):
        if c == 0:
            continue
        pairs = order[start:start + c]
        start += c
        y = linear(silu_mul(linear(x[pairs // k], w13[e])), w2[e])
        per_pair[pairs] = y * topk_weights.reshape(-1)[pairs, None]
    return sum_slots(per_pair.view(T, k, -1)).to(x.dtype)


def sum_slots(per_pair: torch.Tensor) -> torch.Tensor:
    """[T, k, H] -> [T, H] in fp32, slot 0 + slot 1 + ... in that order: elementwise adds, so a token's sum never
    depends on the other tokens (a reduction kernel may split the k differently for another token count)."""
    return sum_parts(per_pair.transpose(0, 1))
