"""Strided block top-k: overlapping blocks of ``block_size`` starting every ``stride`` positions of the middle.

Per KV group the ``2k`` best blocks (mean logit over the block and the group's query heads) are taken and their
union is trimmed to the budget of ``k * block_size`` positions. Trimming order (defined here; the original kept
the lowest positions): positions of better-ranked blocks first, then by position. Rows whose middle already fits
in the budget stay dense.
On CUDA the trim is computed over the 2k ranked blocks instead of the positions (``triton_ops.stride_apply``):
walking the ranks, block r adds its positions not covered by a better-ranked block; the blocks whose running total
stays within the budget are kept whole, the next one (the cut) keeps its first new positions up to the budget.
One small launch per (sequence, KV head) finds the cut, one launch parallel over positions applies it in place.
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
    middle_mask,
    positions,
)
from litesys.kernels import sparse_ops as triton_ops
from litesys.kernels.common import cdiv, use_triton


class StrideProcessor:
    graph_safe = True  # no host sync, static shapes

    def __init__(self, k: int, block_size: int, stride: int, sink: int, local: int, num_kv_heads: int,
                 backend: str = "auto", split: SplitGroups | None = None):
        self.k, self.bs, self.stride, self.backend = k, block_size, stride, backend
        self.split = split  # tensor parallel, groups spread over ranks: the group mean is completed over them
        self.sink, self.local, self.num_kv_heads = sink, local, num_kv_heads
        self.budget = k * block_size

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        b, _, width = logits.shape
        bs, st, sink, dev = self.bs, self.stride, self.sink, logits.device
        t_max = width - sink - self.local  # widest middle
        if t_max <= self.budget:
            return logits
        mid_len = lengths.long() - sink - self.local  # [B]
        n_blocks = (mid_len - bs) // st + 1  # valid blocks per row (rows with mid_len > budget >= bs)
        nb = (t_max - bs) // st + 1
        gm = group_mean(logits[:, :, sink:sink + t_max], self.num_kv_heads, self.split)
        score = gm.unfold(-1, bs, st)[:, :, :nb].mean(dim=-1)  # [B, Hkv, nb]
        blk = positions(nb, dev)
        score = score.masked_fill(blk[None, None, :] >= n_blocks[:, None, None], float("-inf"))
        k2 = min(2 * self.k, nb)
        vals, idx = score.topk(k2, dim=-1)  # sorted: rank r = r-th best block
        if use_triton(logits, self.backend) and logits.is_contiguous() and triton_ops.fits(k2 * bs):
            return triton_ops.stride_apply(logits, lengths, vals, idx, t_max, sink, self.local, self.budget, bs, st)
        # rank of each block (k2 = not chosen); invalid picks land in the dump column nb
        rank = torch.full((b, self.num_kv_heads, nb + 1), k2, dtype=torch.long, device=dev)
        ranks = torch.arange(k2, device=dev).expand_as(idx)
        rank.scatter_(-1, torch.where(vals > float("-inf"), idx, nb), ranks)
        # best rank of a chosen block covering each middle position t (blocks t//st - c for c < ceil(bs/st))
        t = positions(t_max, dev)
        best = torch.full((b, self.num_kv_heads, t_max), k2, dtype=torch.long, device=dev)
        for c in range(cdiv(bs, st)):
            j = t // st - c
            covers = (j >= 0) & (j < nb) & (j * st + bs > t)
            r = rank[:, :, torch.where(covers, j, nb)]
            best = torch.minimum(best, r)
        key = best * t_max + t  # unique: rank first, then position
        chosen = key.topk(self.budget, dim=-1, largest=False, sorted=False).indices
        valid = best.gather(-1, chosen) < k2
        keep_mid = torch.zeros(b, self.num_kv_heads, t_max + 1, dtype=torch.bool, device=dev)
        keep_mid.scatter_(-1, torch.where(valid, chosen, t_max), True)
        keep = torch.zeros(b, self.num_kv_heads, width, dtype=torch.bool, device=dev)
        keep[:, :, sink:sink + t_max] = keep_mid[..., :t_max]
        middle = middle_mask(lengths, width, sink, self.local)
        return drop_groups(logits, drop_mask(keep, middle, mid_len > self.budget))


def from_config(cfg, shape: AttnShape, backend: str) -> StrideProcessor:
    return StrideProcessor(cfg.attn_block_topk, cfg.attn_block_size, cfg.attn_stride, cfg.attn_sink,
                           cfg.attn_local, shape.num_kv_heads, backend, split=shape.split)
