"""Top-k routing after the router GEMM in PyTorch: the contract of ``kernels/moe_route.py`` and its CPU path."""
from __future__ import annotations

import torch

from litesys.kernels.ref.moe import sum_slots


def route_topk(logits: torch.Tensor, top_k: int, norm_topk_prob: bool, dtype: torch.dtype,
               invariant: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Router logits [T, E] -> (weights [T, k] in ``dtype``, expert ids [T, k] int64), as transformers.

    Softmax in fp32 over all experts, the k largest (ties: the lower expert id, so the kernel and this twin agree
    exactly; torch.topk leaves tie order unspecified), optionally renormalised over the k, cast to ``dtype``.
    The k are chosen on the fp32 logits (softmax is monotonic: the same experts, without exp's rounding in the
    comparison). ``invariant``: the renormalising sum in slot order, as the kernel always sums.
    """
    scores = logits.float()
    probs = torch.softmax(scores, dim=-1)
    ids = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :top_k]
    weights = probs.gather(1, ids)
    if norm_topk_prob:
        total = sum_slots(weights.unsqueeze(-1)) if invariant else weights.sum(dim=-1, keepdim=True)
        weights = weights / total
    return weights.to(dtype), ids
