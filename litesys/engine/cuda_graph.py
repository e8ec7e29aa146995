"""CUDA graphs of the decode forward per padded batch bucket (and length bucket for a sparse method whose shapes
follow ``max_len``, captured lazily). The engine owns this and passes its forward to each call (docs/engine.md)."""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from litesys.engine.config import GRAPH_BATCH_SIZES, GRAPH_BATCH_STEP, GRAPH_MIN_LEN

Forward = Callable[[int, int], torch.Tensor]  # (batch, max_len) -> logits [batch, vocab]


def buckets(max_batch: int) -> list[int]:
    sizes = list(GRAPH_BATCH_SIZES) + list(range(GRAPH_BATCH_SIZES[-1] + GRAPH_BATCH_STEP,
                                                 max_batch + GRAPH_BATCH_STEP, GRAPH_BATCH_STEP))
    return sorted({min(s, max_batch) for s in sizes})


def len_bucket(max_len: int, cap: int) -> int:
    return min(max(GRAPH_MIN_LEN, 1 << (max_len - 1).bit_length()), cap)


class DecodeGraphs:
    def __init__(self, max_batch: int, max_len: int, attn):  # attn: its sparse method decides the keys
        self.sizes, self.max_len, self.attn = buckets(max_batch), max_len, attn
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.outputs: dict[tuple[int, int], torch.Tensor] = {}
        self.pool = None
        self.eager_only = False  # set when a sparse method turned out not to be capturable

    @torch.inference_mode()
    def capture(self, forward: Forward, max_len: int) -> None:
        """Capture the dense graphs for every batch bucket up front, largest first (sparse ones: lazily)."""
        if self.attn.method.graph_by_length:
            return
        for bs in reversed(self.sizes):
            self._capture(forward, (bs, 0), max_len)
        torch.cuda.synchronize()

    def _capture(self, forward: Forward, key: tuple[int, int], max_len: int) -> None:
        forward(key[0], max_len)  # warm-up: kernel compilation, workspace allocation
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            self.outputs[key] = forward(key[0], max_len)
        self.pool = g.pool()
        self.graphs[key] = g

    def run(self, forward: Forward, batch: int, max_len: int) -> torch.Tensor | None:
        """Replay the graph of this batch (and length) bucket, capturing it first if new; None: run eagerly."""
        method = self.attn.method  # read each step: a caller may swap it (benchmarks/throughput.py)
        if self.eager_only or batch > self.sizes[-1] or not method.graph_safe:
            return None
        bs = next(s for s in self.sizes if s >= batch)
        key = (bs, len_bucket(max_len, self.max_len) if method.graph_by_length else 0)
        if key not in self.graphs:
            try:
                with torch.inference_mode():
                    self._capture(forward, key, key[1])
            except Exception as e:  # a processor that syncs with the host or has data-dependent shapes
                warnings.warn(f"decode step could not be captured as a CUDA graph ({type(e).__name__}: {e}); "
                              "running eagerly (set graph_safe = False on the method or processor to skip the attempt)",
                              stacklevel=2)
                self.eager_only = True
                torch.cuda.synchronize()
                return None
        self.graphs[key].replay()
        return self.outputs[key]

    def clear(self) -> None:
        """Drop every graph and its memory pool (``LLM.close``)."""
        self.graphs.clear()
        self.outputs.clear()
        self.pool = None
