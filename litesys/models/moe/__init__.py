"""Mixture-of-experts building blocks: routing, token sorting/alignment, the fused Triton kernels, a reference."""
from __future__ import annotations

import torch

from litesys.kernels.common import use_triton
from litesys.kernels.ref.moe import moe_reference
from litesys.models.moe.routing import route


def moe_experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                topk_ids: torch.Tensor, per_slot: bool = False) -> torch.Tensor:
    """The experts' weighted output [T, H]: fused Triton kernels on CUDA, the PyTorch loop elsewhere.
    ``per_slot``: on CUDA, each token's k outputs unsummed ([k, T, H]) for the next add+RMSNorm to sum."""
    if use_triton(x):
        from litesys.kernels.moe import fused_moe  # Triton only where it can run
        return fused_moe(x, w13, w2, topk_weights, topk_ids, per_slot=per_slot)
    return moe_reference(x, w13, w2, topk_weights, topk_ids)


def invariant_experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
                      topk_ids: torch.Tensor) -> torch.Tensor:
    """``moe_experts`` whose rows do not depend on the batch (deterministic mode, docs/reproducibility.md): Triton
    tiles fixed by the dtype on CUDA, 16-row GEMMs elsewhere; each token's k outputs summed in its slot order."""
    if use_triton(x):
        from litesys.kernels.moe import fused_moe
        return fused_moe(x, w13, w2, topk_weights, topk_ids, invariant=True)
    from litesys.kernels.ref.gemm_invariant import linear_ref
    return moe_reference(x, w13, w2, topk_weights, topk_ids, linear=linear_ref)


__all__ = ["invariant_experts", "moe_experts", "moe_reference", "route"]
