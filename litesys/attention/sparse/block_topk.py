"""Block top-k: the middle is cut into blocks of ``block_size`` starting at the sinks; per KV group the k blocks
with the highest mean (over the block and the group's query heads) logit are kept.

As in the original LiteSys: the middle is ``floor((len - sink - local) / block_size)`` whole blocks, the leftover
tail joins the local window, and rows with ``len <= ceil((sink + local + k * block_size) / block_size) * block_size``
stay dense.
"""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.common import Heads, apply_keep, expand_groups, group_mean, positions, scatter_keep


class BlockTopKProcessor:
    def __init__(self, k: int, block_size: int, sink: int, local: int, num_kv_heads: int):
        self.k, self.bs, self.sink, self.local, self.num_kv_heads = k, block_size, sink, local, num_kv_heads
        self.n_full = -(-(sink + local + k * block_size) // block_size) * block_size

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        b, hq, width = logits.shape
        if width <= self.n_full:
            return logits
        bs, sink = self.bs, self.sink
        n_blocks = ((lengths.long() - self.local - sink) // bs).clamp(min=0)  # [B] whole middle blocks
        nb_max = (width - sink) // bs  # >= k because width > n_full
        gm = group_mean(logits, self.num_kv_heads)[:, :, sink:sink + nb_max * bs]
        score = gm.reshape(b, self.num_kv_heads, nb_max, bs).mean(dim=-1)
        score = score.masked_fill(positions(nb_max, logits.device)[None, None, :] >= n_blocks[:, None, None],
                                  float("-inf"))
        keep_blocks = scatter_keep(score.topk(self.k, dim=-1).indices, nb_max)  # [B, Hkv, nb_max]
        keep = torch.zeros(b, self.num_kv_heads, width, dtype=torch.bool, device=logits.device)
        keep[:, :, sink:sink + nb_max * bs] = keep_blocks.repeat_interleave(bs, dim=-1)
        pos = positions(width, logits.device)[None, :]
        middle = (pos >= sink) & (pos < sink + n_blocks[:, None] * bs)
        return apply_keep(logits, expand_groups(keep, hq), middle, lengths > self.n_full)


def from_config(cfg, heads: Heads) -> BlockTopKProcessor:
    return BlockTopKProcessor(cfg.attn_block_topk, cfg.attn_block_size, cfg.attn_sink, cfg.attn_local,
                              heads.num_kv_heads)
