"""Quest (Tang et al., 2024) as a page selector: per-page key min/max summaries, refreshed on every K/V write;
per step and KV head the sink pages, the local pages and the ``quest_topk_blocks`` pages with the highest upper
bound of ``q·k``; decode reads only those. Its blocks are the KV pages. Definitions: docs/sparse.md, "Quest".
"""
from __future__ import annotations

from types import ModuleType

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.base import PageSelector
from litesys.attention.sparse.common import AttnShape, SplitGroups
from litesys.kernels.common import cdiv, use_triton
from litesys.kernels.ref import quest as quest_torch
from litesys.kernels.ref.quest import select_pages


class QuestSelector(PageSelector):
    """Quest as a page selector (``base.PageSelector``): per-page key summaries, bound before graph capture.

    Triton path, per decode step of a sparse layer: 5 launches (summary refresh, scores, selection, split decode,
    merge), no torch ops between them, nothing on the host: CUDA-graph safe. By default they stream: each
    (sequence, KV head) is selected as soon as its scores are in and decoded as soon as it is selected, through
    counters kept per batch size (``quest_triton.quest_select``); ``fused=True``/``False``: the one-program-per-row
    or the separate score and selection kernels, each stage waiting for the whole previous one.
    """

    graph_safe = True  # decode does no host sync and has static shapes (prefill, never captured, may sync)

    def __init__(self, topk_pages: int, page_size: int, num_layers: int, sink: int = 4, local: int = 0,
                 layer_skip: tuple[int, ...] = (0,), backend: str = "auto", fused: bool | None = None,
                 split: SplitGroups | None = None):
        super().__init__(num_layers, layer_skip, backend)
        self.topk, self.page_size, self.sink, self.local = topk_pages, page_size, sink, local
        # tensor parallel with a KV head's query heads on several ranks: its page scores are summed over them
        self.split = split
        self.fused = fused  # Triton: None = streaming (see quest_triton.quest_select)
        self.counters: dict[int, torch.Tensor] = {}  # batch size -> [3, B * Hkv] int32 zeros (the kernels re-zero)
        self.kmin: torch.Tensor | None = None
        self.kmax: torch.Tensor | None = None

    def kv_page_size(self) -> int:
        return self.page_size  # Quest's blocks are the KV pages

    def extra_bytes_per_page(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """The summaries (min + max) of a page: 1/page_size of its K/V bytes."""
        return 2 * num_layers * num_kv_heads * head_dim * torch.finfo(dtype).bits // 8

    def paged_state(self) -> list[torch.Tensor]:
        return [] if self.kmin is None else [self.kmin, self.kmax]

    def bind(self, kv) -> None:
        """Allocate the summaries for ``kv``'s pool (done on the first write when not called by the engine)."""
        if kv.page_size != self.page_size:
            raise ValueError(f"quest_block_size={self.page_size} must equal the KV page size {kv.page_size}")
        shape = (kv.num_layers, kv.num_pages, kv.num_kv_heads, kv.head_dim)
        # the model's dtype, also for an fp8 cache: summaries of the dequantised keys
        self.kmin = torch.zeros(shape, dtype=kv.dtype, device=kv.k.device)
        self.kmax = torch.zeros(shape, dtype=kv.dtype, device=kv.k.device)

    def on_write(self, layer: int, kv, k_new: torch.Tensor, meta: AttnMeta) -> None:
        if layer not in self.layers:
            return
        if self.kmin is None or self.kmin.shape[1] != kv.num_pages:
            self.bind(kv)
        ps = self.page_size
        if not meta.is_prefill and use_triton(kv.k, self.backend):
            from litesys.kernels import quest as quest_triton
            quest_triton.quest_update_summaries(kv.k[layer], meta.slot_mapping, self.kmin[layer], self.kmax[layer],
                                                kv.scales(layer)[0])
            return
        slots = meta.slot_mapping.long().clamp(min=0)  # padding rows: scratch page 0
        if meta.is_prefill:
            # Only each page's last written token matters: its offset says how many entries are valid.
            # (Boolean indexing syncs with the host; fine in prefill, which is never graph-captured.)
            nxt = torch.cat([slots[1:], slots.new_full((1,), -1)])
            slots = slots[(nxt != slots + 1) | (slots % ps == ps - 1)]
        pages = slots // ps
        filled = torch.arange(ps, device=slots.device)[None, :] <= (slots % ps)[:, None]  # [N, page]
        kp = kv.k[layer][pages]  # [N, page, Hkv, D]
        k_scale = kv.scales(layer)[0]
        if k_scale is not None:  # fp8: summaries of the dequantised keys
            kp = (kp.float() * k_scale[:, None]).to(kv.dtype)
        mask = filled[:, :, None, None]
        self.kmin[layer].index_copy_(0, pages, kp.masked_fill(~mask, float("inf")).amin(dim=1))
        self.kmax[layer].index_copy_(0, pages, kp.masked_fill(~mask, float("-inf")).amax(dim=1))

    def _n_pages(self, meta: AttnMeta) -> int:
        n_pages = meta.page_table.shape[1]
        if meta.max_len > 0:
            n_pages = min(n_pages, cdiv(meta.max_len, self.page_size))
        return n_pages

    def _counters(self, q: torch.Tensor) -> torch.Tensor | None:
        """[3, B * Hkv] int32 zeros for this batch size (streaming), made outside capture: a captured graph keeps
        their address, so they are never replaced. None (no streaming): none yet while capturing (the engine warms
        each bucket up eagerly first), or ``fused`` set, or tensor parallel (scores all-reduced first)."""
        if self.fused is not None or self.split is not None:
            return None
        b = q.shape[0]
        if b not in self.counters:
            if q.is_cuda and torch.cuda.is_current_stream_capturing():
                return None
            self.counters[b] = torch.zeros(3, b * self.kmin.shape[2], dtype=torch.int32, device=q.device)
        return self.counters[b]

    def _select_triton(self, layer: int, q: torch.Tensor, meta: AttnMeta,
                       counters: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from litesys.kernels import quest as quest_triton
        if self.split is not None:  # whole-group scores: this rank's partial sums, all-reduced, then the selection
            scores = quest_triton.quest_scores(q, self.kmin[layer], self.kmax[layer], meta.page_table, meta.lengths,
                                               self.page_size, self._n_pages(meta))
            return quest_triton.quest_select(q, self.kmin[layer], self.kmax[layer], meta.page_table, meta.lengths,
                                             self.page_size, self._n_pages(meta), self.topk, self.sink, self.local,
                                             fused=False, scores=self.split.comm.all_reduce(scores))
        return quest_triton.quest_select(q, self.kmin[layer], self.kmax[layer], meta.page_table, meta.lengths,
                                         self.page_size, self._n_pages(meta), self.topk, self.sink, self.local,
                                         fused=self.fused, counters=counters)

    def select(self, layer: int, q: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        """sel [B, Hkv, S] int32 for this step (see ``select_pages``)."""
        if use_triton(q, self.backend):
            return self._select_triton(layer, q, meta)[0]
        scores = quest_torch.quest_scores(q, self.kmin[layer], self.kmax[layer], meta.page_table, meta.lengths,
                                          self.page_size, self._n_pages(meta))
        if self.split is not None:  # -inf past the pages stays -inf: the ranks share the page table
            scores = self.split.comm.all_reduce(scores)
        return select_pages(scores, meta.lengths, self.page_size, self.topk, self.sink, self.local)

    def decode(self, layer: int, q: torch.Tensor, kv, meta: AttnMeta, ops: ModuleType, scale: float) -> torch.Tensor:
        """Attention over the selected pages (Triton: the physical pages the selection kernel found, reused)."""
        if layer not in self.layers or not use_triton(q, self.backend):
            return super().decode(layer, q, kv, meta, ops, scale)
        from litesys.kernels import quest as quest_triton
        counters = self._counters(q)
        try:
            sel, phys = self._select_triton(layer, q, meta, counters)
            ks, vs = kv.scales(layer)
            return quest_triton.quest_decode(q, kv.k[layer], kv.v[layer], meta.page_table, meta.lengths, sel, scale,
                                             phys=phys, k_scale=ks, v_scale=vs, counters=counters)
        except Exception:
            self.counters.clear()  # a chain cut short may leave rows flagged: never reuse those counters
            raise


def from_config(cfg, shape: AttnShape, backend: str) -> QuestSelector:
    return QuestSelector(cfg.quest_topk_blocks, cfg.quest_page_size, shape.num_layers, cfg.attn_sink,
                         cfg.attn_local or 0, tuple(cfg.attn_layer_skip), backend, split=shape.split)
