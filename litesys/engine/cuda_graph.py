"""CUDA-graph capture of the decode forward, one graph per padded batch-size bucket.

The decode forward reads only the engine's static slot tensors (``SlotState``), so a captured graph replays
with whatever those tensors hold: rows past the live batch point at the scratch page and are ignored.
"""
from __future__ import annotations

import torch


def buckets(max_batch: int) -> list[int]:
    sizes = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256]
    sizes += list(range(320, max_batch + 64, 64))
    return sorted({min(s, max_batch) for s in sizes})


class DecodeGraphs:
    def __init__(self, max_batch: int):
        self.sizes = buckets(max_batch)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    @torch.inference_mode()
    def capture(self, engine) -> None:
        pool = None
        max_len = engine.max_seq_len
        for bs in reversed(self.sizes):  # largest first, so smaller graphs reuse its memory pool
            engine.decode_forward(bs, max_len)  # warm-up: kernel compilation, workspace allocation
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=pool):
                self.outputs[bs] = engine.decode_forward(bs, max_len)
            pool = g.pool()
            self.graphs[bs] = g
        torch.cuda.synchronize()

    def can_run(self, batch: int, attn) -> bool:
        return batch <= self.sizes[-1] and not attn.processors and attn.selector is None

    def run(self, batch: int, max_len: int) -> torch.Tensor:
        bs = next(s for s in self.sizes if s >= batch)
        self.graphs[bs].replay()
        return self.outputs[bs]
