"""The sparse-method protocol: what attention and the engine ask of a sparse-attention method.

Every method, dense included, is one ``SparseMethod``. Two kinds ship: logits processors, run by
``ProcessorMethod`` (raw decode logits -> the layer's processors -> softmax·V), and page selectors
(``PageSelector``: pick KV pages per step and read only those, e.g. Quest). ``DenseMethod`` is no sparse attention.
The engine never names a method: it asks for the page size, the extra bytes per page, ``bind(kv)``, how CUDA graphs
are keyed and whether they are safe, and the per-page state a swap copies (docs/sparse.md, "The method protocol").
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from types import ModuleType

import torch

from litesys.attention.meta import AttnMeta
from litesys.kernels.common import use_triton
from litesys.kernels.ref import quest as quest_torch

# processor(logits [B, Hq, L] fp32, lengths [B], layer, meta) -> logits (may modify its fresh input in place)
LogitsProcessor = Callable[[torch.Tensor, torch.Tensor, int, AttnMeta], torch.Tensor]


def dense_decode(layer: int, q: torch.Tensor, kv, meta: AttnMeta, ops: ModuleType, scale: float) -> torch.Tensor:
    """Dense decode attention of one layer, one fused stage: q [B, Hq, D] -> [B, Hq, D]."""
    ks, vs = kv.scales(layer)
    return ops.paged_decode_fused(q, kv.k[layer], kv.v[layer], meta.page_table, meta.lengths, scale, meta.max_len,
                                  ks, vs, order=meta.order)


class SparseMethod(ABC):
    """One decode-attention method: ``Attention`` calls ``on_write`` and ``decode``; the engine asks the rest.

    A method keeps no per-sequence state: per-sequence randomness is a function of ``meta.seq_ids`` and
    ``meta.lengths``, which the engine restores with a preempted sequence; per-page state is ``paged_state()``.
    """

    graph_safe: bool = True  # decode has no host sync and static shapes: it can be captured in a CUDA graph
    # decode shapes follow meta.max_len (raw logits [B, Hq, max_len]): CUDA graphs are keyed by a length bucket too
    graph_by_length: bool = True
    # decode differs from dense prefill attention: a recomputed sequence replays its steps (engine/replay.py)
    needs_replay: bool = True

    def kv_page_size(self) -> int | None:
        """The KV page size the method needs (None: any)."""
        return None

    def extra_bytes_per_page(self, num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """Bytes of per-page state for each KV page, for the pool plan."""
        return 0

    def bind(self, kv) -> None:
        """Allocate per-page state for the KV pool ``kv`` (called once, before any CUDA-graph capture)."""
        return None

    def on_write(self, layer: int, kv, k_new: torch.Tensor, meta: AttnMeta) -> None:
        """After the step's K/V of ``layer`` are written: ``k_new`` [T, Hkv, D], slots ``meta.slot_mapping``."""
        return None

    @abstractmethod
    def decode(self, layer: int, q: torch.Tensor, kv, meta: AttnMeta, ops: ModuleType,
               scale: float) -> torch.Tensor:
        """The whole decode attention of ``layer``: q [B, Hq, D] -> [B, Hq, D] in the cache's (q's for fp8) dtype;
        ``ops`` is the dense ops module (``select_ops``)."""

    def paged_state(self) -> list[torch.Tensor]:
        """Per-page tensors ``[num_layers, num_pages, ...]`` that a swap copies with a sequence's K/V pages."""
        return []


class DenseMethod(SparseMethod):
    """No sparse attention: the fused dense decode on every layer."""

    graph_by_length = False
    needs_replay = False

    def decode(self, layer: int, q: torch.Tensor, kv, meta: AttnMeta, ops: ModuleType,
               scale: float) -> torch.Tensor:
        return dense_decode(layer, q, kv, meta, ops, scale)


class ProcessorMethod(SparseMethod):
    """Logits processors per layer: raw fp32 logits -> each processor -> softmax·V; other layers stay dense."""

    def __init__(self, processors: dict[int, list[LogitsProcessor]]):
        self.processors = processors
        self.graph_safe = all(getattr(p, "graph_safe", True) for ps in processors.values() for p in ps)

    def decode(self, layer: int, q: torch.Tensor, kv, meta: AttnMeta, ops: ModuleType,
               scale: float) -> torch.Tensor:
        procs = self.processors.get(layer)
        if not procs:
            return dense_decode(layer, q, kv, meta, ops, scale)
        ks, vs = kv.scales(layer)
        logits = ops.paged_decode_logits(q, kv.k[layer], meta.page_table, meta.lengths, scale, meta.max_len, ks)
        for proc in procs:
            logits = proc(logits, meta.lengths, layer, meta)
        return ops.paged_softmax_v(logits, kv.v[layer], meta.page_table, meta.lengths, vs,
                                   None if vs is None else q.dtype)


class PageSelector(SparseMethod):
    """Picks KV pages per (sequence, KV head) at each decode step and reads only those; other layers stay dense.

    A subclass writes ``select``; ``decode`` attends over its pages with the Quest page-decode kernel (Triton on
    CUDA, its torch twin ``kernels/ref/quest.py`` otherwise)."""

    def __init__(self, num_layers: int, layer_skip: tuple[int, ...] = (), backend: str = "auto"):
        self.layers = frozenset(range(num_layers)) - frozenset(layer_skip)
        self.num_layers = num_layers
        self.backend = backend  # "auto" (Triton on CUDA), "torch" or "triton"

    def active(self, layer: int) -> bool:
        return layer in self.layers

    @abstractmethod
    def select(self, layer: int, q: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        """sel [B, Hkv, S] int32: logical pages (indices into each row of ``meta.page_table``), -1 = empty; S
        static (no host sync)."""

    def decode(self, layer: int, q: torch.Tensor, kv, meta: AttnMeta, ops: ModuleType,
               scale: float) -> torch.Tensor:
        if layer not in self.layers:
            return dense_decode(layer, q, kv, meta, ops, scale)
        sel = self.select(layer, q, meta)
        ks, vs = kv.scales(layer)
        if use_triton(q, self.backend):
            from litesys.kernels import quest as quest_triton
            return quest_triton.quest_decode(q, kv.k[layer], kv.v[layer], meta.page_table, meta.lengths, sel, scale,
                                             k_scale=ks, v_scale=vs)
        return quest_torch.quest_decode(q, kv.k[layer], kv.v[layer], meta.page_table, meta.lengths, sel, scale,
                                        ks, vs)
