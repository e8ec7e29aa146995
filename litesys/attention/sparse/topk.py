"""Oracle top-k: per KV group, the k middle positions with the highest logits averaged over the group's query heads.

Sinks and the local window are always kept; rows with ``len <= sink + local + k`` stay dense.
"""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.common import (
    NEG_INF,
    Heads,
    apply_keep,
    expand_groups,
    group_mean,
    middle_mask,
    scatter_keep,
)


class TopKProcessor:
    def __init__(self, k: int, sink: int, local: int, num_kv_heads: int):
        self.k, self.sink, self.local, self.num_kv_heads = k, sink, local, num_kv_heads

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        _, hq, width = logits.shape
        if width <= self.sink + self.local + self.k:  # no row can exceed the budget
            return logits
        middle = middle_mask(lengths, width, self.sink, self.local)
        score = group_mean(logits, self.num_kv_heads).masked_fill(~middle[:, None, :], NEG_INF)
        # sparse rows have > k middle positions, all finite, so the top k are all real middle positions
        keep = scatter_keep(score.topk(self.k, dim=-1).indices, width)
        sparse_rows = lengths > self.sink + self.local + self.k
        return apply_keep(logits, expand_groups(keep, hq), middle, sparse_rows)


def from_config(cfg, heads: Heads) -> TopKProcessor:
    return TopKProcessor(cfg.attn_topk, cfg.attn_sink, cfg.attn_local, heads.num_kv_heads)
