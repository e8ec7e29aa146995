"""Block top-k: the middle is cut into blocks of ``block_size`` starting at the sinks; per KV group the k blocks
with the highest mean (over the block and the group's query heads) logit are kept.

As in the original LiteSys: the middle is ``floor((len - sink - local) / block_size)`` whole blocks, the leftover
tail joins the local window, and rows with ``len <= ceil((sink + local + k * block_size) / block_size) * block_size``
stay dense. On CUDA the block selection is the Triton ``triton_ops.topk_drop`` over the block means.
"""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.common import (
    AttnShape,
    SplitGroups,
    drop_groups,
    drop_mask,
    group_mean,
    positions,
    scatter_keep,
)
from litesys.kernels import sparse_ops as triton_ops
from litesys.kernels.common import cdiv, use_triton


class BlockTopKProcessor:
    graph_safe = True  # no host sync, static shapes

    def __init__(self, k: int, block_size: int, sink: int, local: int, num_kv_heads: int, backend: str = "auto",
                 split: SplitGroups | None = None):
        self.k, self.bs, self.sink, self.local, self.num_kv_heads = k, block_size, sink, local, num_kv_heads
        self.n_full = cdiv(sink + local + k * block_size, block_size) * block_size
        self.backend = backend
        self.split = split  # tensor parallel, groups spread over ranks: the group mean is completed over them

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        b, hq, width = logits.shape
        if width <= self.n_full:
            return logits
        bs, sink, hkv = self.bs, self.sink, self.num_kv_heads
        nb_max = (width - sink) // bs  # >= k because width > n_full
        end = sink + nb_max * bs
        gm = group_mean(logits[:, :, sink:end], hkv, self.split)  # only the positions that can be in a block
        score = gm.reshape(b, hkv, nb_max, bs).mean(dim=-1)
        if use_triton(logits, self.backend) and triton_ops.fits(nb_max):
            drop_b = triton_ops.topk_drop(lengths, b, hkv, nb_max, self.k, 0, self.local + sink, hi_div=bs,
                                          dense_upto=self.n_full, scores=score)
        else:
            n_blocks = ((lengths.long() - self.local - sink) // bs).clamp(min=0)  # [B] whole middle blocks
            valid = positions(nb_max, logits.device)[None, :] < n_blocks[:, None]
            score = score.masked_fill_(~valid[:, None, :], float("-inf"))
            keep_b = scatter_keep(score.topk(self.k, dim=-1, sorted=False).indices, nb_max)  # [B, Hkv, nb_max]
            drop_b = drop_mask(keep_b, valid, lengths > self.n_full)
        drop = torch.zeros(b, hkv, width, dtype=torch.bool, device=logits.device)
        drop[:, :, sink:end] = drop_b[..., None].expand(b, hkv, nb_max, bs).reshape(b, hkv, nb_max * bs)
        return drop_groups(logits, drop)


def from_config(cfg, shape: AttnShape, backend: str) -> BlockTopKProcessor:
    return BlockTopKProcessor(cfg.attn_block_topk, cfg.attn_block_size, cfg.attn_sink, cfg.attn_local,
                              shape.num_kv_heads, backend, split=shape.split)
