"""Oracle top-k: per KV group, the k middle positions with the highest logits averaged over the group's query heads.

Sinks and the local window are always kept; rows with ``len <= sink + local + k`` stay dense.
On CUDA one Triton launch per step (``triton_ops.topk_apply``: per KV-group row the group mean, the exact
in-register top-k, and the drop written into the logits in place). The torch path (CPU) is the reference.
"""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.common import (
    NEG_INF,
    AttnShape,
    SplitGroups,
    drop_groups,
    drop_mask,
    group_mean,
    middle_mask,
    scatter_keep,
)
from litesys.kernels import sparse_ops as triton_ops
from litesys.kernels.common import use_triton


class TopKProcessor:
    graph_safe = True  # no host sync, static shapes

    def __init__(self, k: int, sink: int, local: int, num_kv_heads: int, backend: str = "auto",
                 split: SplitGroups | None = None):
        self.k, self.sink, self.local, self.num_kv_heads = k, sink, local, num_kv_heads
        self.backend = backend
        self.split = split  # tensor parallel, groups spread over ranks: the group mean is completed over them

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        b, _, width = logits.shape
        dense_upto = self.sink + self.local + self.k
        if width <= dense_upto:  # no row can exceed the budget
            return logits
        fast = use_triton(logits, self.backend) and triton_ops.fits(width) and logits.is_contiguous()
        if fast and self.split is None:  # the group mean is computed in the kernel
            return triton_ops.topk_apply(logits, lengths, self.num_kv_heads, self.k, self.sink, self.local,
                                         dense_upto, hashed=False)
        score = group_mean(logits, self.num_kv_heads, self.split)
        if fast:
            return triton_ops.topk_apply(logits, lengths, self.num_kv_heads, self.k, self.sink, self.local,
                                         dense_upto, hashed=False, scores=score)
        middle = middle_mask(lengths, width, self.sink, self.local)
        score = score.masked_fill_(~middle[:, None, :], NEG_INF)
        # sparse rows have > k middle positions, all finite, so the top k are all real middle positions
        keep = scatter_keep(score.topk(self.k, dim=-1, sorted=False).indices, width)
        return drop_groups(logits, drop_mask(keep, middle, lengths > dense_upto))


def from_config(cfg, shape: AttnShape, backend: str) -> TopKProcessor:
    return TopKProcessor(cfg.attn_topk, cfg.attn_sink, cfg.attn_local, shape.num_kv_heads, backend,
                         split=shape.split)
