"""StreamingLLM (Xiao et al., 2023): keep the attention sinks and a local window, drop everything between."""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.common import NEG_INF, AttnShape, middle_mask


class LocalProcessor:
    graph_safe = True  # no host sync, static shapes

    def __init__(self, sink: int, local: int):
        self.sink, self.local = sink, local

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        # rows with len <= sink + local have an empty middle: they stay dense
        middle = middle_mask(lengths, logits.shape[-1], self.sink, self.local)
        return logits.masked_fill(middle[:, None, :], NEG_INF)


def from_config(cfg, shape: AttnShape, backend: str) -> LocalProcessor:
    return LocalProcessor(cfg.attn_sink, cfg.attn_local)
