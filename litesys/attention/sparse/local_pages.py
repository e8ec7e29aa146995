"""Example page selector (one file + one line in registry.py): StreamingLLM at page granularity.

Per sequence, the KV pages holding the first ``attn_sink`` positions and the pages holding the last
``max(attn_local, 1)`` positions (the current page included); decode reads only those pages, every KV head the
same ones. Options: ``--attn_custom local_pages --attn_local W``.
"""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.base import PageSelector
from litesys.attention.sparse.common import AttnShape
from litesys.kernels.common import cdiv
from litesys.kernels.ref.quest import page_counts


class LocalPagesSelector(PageSelector):
    graph_by_length = False  # its shapes do not follow the length: one CUDA graph per batch size serves every step

    def __init__(self, sink: int, local: int, num_kv_heads: int, num_layers: int, layer_skip: tuple[int, ...] = (),
                 backend: str = "auto"):
        super().__init__(num_layers, layer_skip, backend)
        self.sink, self.local, self.num_kv_heads = sink, max(local, 1), num_kv_heads

    def select(self, layer: int, q: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        ps, lens = meta.page_size, meta.lengths.long()
        n_sink, n_local = page_counts(ps, self.sink, self.local)  # static: the row width
        used = cdiv(lens, ps)  # [B] pages in use
        sinks = torch.arange(n_sink, device=q.device).expand(len(lens), n_sink)
        locs = (lens - self.local).clamp(min=0)[:, None] // ps + torch.arange(n_local, device=q.device)
        pages = torch.cat([torch.where(sinks < used[:, None], sinks, -1),
                           torch.where((locs >= n_sink) & (locs < used[:, None]), locs, -1)], dim=1)
        return pages[:, None, :].expand(-1, self.num_kv_heads, -1).to(torch.int32)


def from_config(cfg, shape: AttnShape, backend: str) -> LocalPagesSelector:
    return LocalPagesSelector(cfg.attn_sink, cfg.attn_local, shape.num_kv_heads, shape.num_layers,
                              tuple(cfg.attn_layer_skip), backend)
