"""Example of a user method (one file + one line in registry.py): keep middle positions close to the best one.

Per KV group, a middle position is kept when its group-averaged logit is within ``tau`` (nats) of the group's
best middle logit, i.e. its attention weight is at least ``e^-tau`` times the largest middle weight. Sinks and the
local window are always kept. Options come from ``--attn_custom threshold --attn_custom_arg tau=4``.
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
)


class ThresholdProcessor:
    graph_safe = True  # no host sync, static shapes

    def __init__(self, tau: float, sink: int, local: int, num_kv_heads: int, split: SplitGroups | None = None):
        self.tau, self.sink, self.local, self.num_kv_heads = tau, sink, local, num_kv_heads
        self.split = split  # tensor parallel: the group score is completed over the ranks sharing the group

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        middle = middle_mask(lengths, logits.shape[-1], self.sink, self.local)
        score = group_mean(logits, self.num_kv_heads, self.split).masked_fill(~middle[:, None, :], NEG_INF)
        keep = score >= score.amax(dim=-1, keepdim=True) - self.tau  # [B, Hkv, L]
        return drop_groups(logits, drop_mask(keep, middle, lengths > self.sink + self.local))


def from_config(cfg, shape: AttnShape, backend: str) -> ThresholdProcessor:
    return ThresholdProcessor(float(cfg.attn_custom_args.get("tau", 4.0)), cfg.attn_sink, cfg.attn_local,
                              shape.num_kv_heads, split=shape.split)
