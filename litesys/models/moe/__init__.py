"""Mixture-of-experts building blocks: routing, token sorting/alignment, the fused Triton kernels, a reference."""
from __future__ import annotations

import torch

from litesys.kernels.common import use_triton
from litesys.kernels.ref.moe import moe_reference
from litesys.models.moe.routing import route


def moe_experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                topk_ids: torch.Tensor) -> torch.Tensor:
    """The experts' weighted output [T, H]: fused Triton kernels on CUDA, the PyTorch loop elsewhere."""
    if use_triton(x):
        from litesys.kernels.moe import fused_moe  # Triton only where it can run
        return fused_moe(x, w13, w2, topk_weights, topk_ids)
    return moe_reference(x, w13, w2, topk_weights, topk_ids)


__all__ = ["moe_experts", "moe_reference", "route"]
