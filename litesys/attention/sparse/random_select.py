"""Random selection: per KV group, ``n`` middle positions drawn uniformly without replacement (fresh each step).

The draw is counter-based noise (``common.counter_hash``) of (seed, layer, sequence id, length, KV head,
position): deterministic, independent of the batch composition. Rows with ``len <= sink + local + n`` stay dense.
"""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.common import (
    Heads,
    apply_keep,
    counter_hash,
    expand_groups,
    middle_mask,
    positions,
    scatter_keep,
    seq_ids,
)


def random_subset(lengths: torch.Tensor, width: int, n: int, sink: int, local: int, num_kv_heads: int, seed: int,
                  layer: int, meta: AttnMeta) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep [B, Hkv, width], middle [B, width]): n uniform distinct middle positions per (row, KV head)."""
    middle = middle_mask(lengths, width, sink, local)
    noise = counter_hash(seed, layer, seq_ids(meta, lengths.shape[0], lengths.device), lengths, num_kv_heads, width)
    key = noise * width + positions(width, lengths.device)  # unique keys: the smallest n are a uniform subset
    key = key.masked_fill(~middle[:, None, :], torch.iinfo(torch.int64).max)
    return scatter_keep(key.topk(n, dim=-1, largest=False).indices, width), middle


class RandomSelectProcessor:
    def __init__(self, n: int, sink: int, local: int, num_kv_heads: int, seed: int = 0):
        self.n, self.sink, self.local, self.num_kv_heads, self.seed = n, sink, local, num_kv_heads, seed

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        _, hq, width = logits.shape
        if width <= self.sink + self.local + self.n:
            return logits
        keep, middle = random_subset(lengths, width, self.n, self.sink, self.local, self.num_kv_heads, self.seed,
                                     layer, meta)
        return apply_keep(logits, expand_groups(keep, hq), middle, lengths > self.sink + self.local + self.n)


def from_config(cfg, heads: Heads) -> RandomSelectProcessor:
    return RandomSelectProcessor(cfg.attn_random_select, cfg.attn_sink, cfg.attn_local, heads.num_kv_heads,
                                 cfg.attn_seed)
