"""CUDA-graph capture of the decode forward, one graph per padded batch-size bucket.

The decode forward reads only the engine's static slot tensors (``SlotState``), so a captured graph replays
with whatever those tensors hold: rows past the live batch point at the scratch page and are ignored.

With logits processors the raw-logits tensor is ``[B, Hq, max_len]``, so those graphs are also keyed by a
power-of-two bucket of ``max_len`` and captured lazily, the first time a (batch, length) bucket is needed.
Re-running a decode forward is harmless (it rewrites the same K/V), so a capture can happen mid-generation.
A processor that cannot be captured (host syncs, data-dependent shapes) sends the run back to eager mode.
The engine is passed to each call, never stored: the engine holds this object, so a back-reference would be a
cycle that keeps the model and the KV pool alive after ``del llm`` until the garbage collector runs.
"""
from __future__ import annotations

import warnings

import torch


def buckets(max_batch: int) -> list[int]:
    sizes = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256]
    sizes += list(range(320, max_batch + 64, 64))
    return sorted({min(s, max_batch) for s in sizes})


def len_bucket(max_len: int, cap: int) -> int:
    return min(max(256, 1 << (max_len - 1).bit_length()), cap)


class DecodeGraphs:
    def __init__(self, max_batch: int):
        self.sizes = buckets(max_batch)
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.outputs: dict[tuple[int, int], torch.Tensor] = {}
        self.pool = None
        self.eager_only = False  # set when a processor turned out not to be capturable

    @torch.inference_mode()
    def capture(self, engine) -> None:
        """Capture the dense (no-processor) graphs for every batch bucket up front, largest first."""
        if self._needs_len(engine.attn):
            return  # captured lazily per (batch, length) bucket
        for bs in reversed(self.sizes):
            self._capture(engine, (bs, 0), engine.max_seq_len)
        torch.cuda.synchronize()

    def _capture(self, eng, key: tuple[int, int], max_len: int) -> None:
        eng.decode_forward(key[0], max_len)  # warm-up: kernel compilation, workspace allocation
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            self.outputs[key] = eng.decode_forward(key[0], max_len)
        self.pool = g.pool()
        self.graphs[key] = g

    @staticmethod
    def _needs_len(attn) -> bool:
        return bool(attn.processors) or attn.selector is not None

    def can_run(self, batch: int, attn) -> bool:
        if self.eager_only or batch > self.sizes[-1]:
            return False
        procs = [p for ps in attn.processors.values() for p in ps]
        return all(getattr(p, "graph_safe", True) for p in procs) and getattr(attn.selector, "graph_safe", True)

    def run(self, engine, batch: int, max_len: int) -> torch.Tensor | None:
        bs = next(s for s in self.sizes if s >= batch)
        key = (bs, len_bucket(max_len, engine.max_pages * engine.page_size) if self._needs_len(engine.attn) else 0)
        if key not in self.graphs:
            try:
                with torch.inference_mode():
                    self._capture(engine, key, key[1])
            except Exception as e:  # a processor that syncs with the host or has data-dependent shapes
                warnings.warn(f"decode step could not be captured as a CUDA graph ({type(e).__name__}: {e}); "
                              "running eagerly (mark processors graph_safe = False to skip the attempt)",
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
