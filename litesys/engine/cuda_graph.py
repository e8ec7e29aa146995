"""CUDA graphs of the whole decode step (``Engine.decode_step``) per padded batch bucket, sampler code path and, for a
sparse method whose shapes follow ``max_len``, length bucket, captured the first time each is needed. The engine
owns this and passes its step to each call (docs/engine.md)."""
from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from litesys.engine.config import GRAPH_BATCH_SIZES, GRAPH_BATCH_STEP, GRAPH_MIN_LEN


class DecodeGraphs:
    def __init__(self, max_batch: int, max_len: int, attn):  # attn: its sparse method decides the keys
        past = range(GRAPH_BATCH_SIZES[-1] + GRAPH_BATCH_STEP, max_batch + GRAPH_BATCH_STEP, GRAPH_BATCH_STEP)
        self.sizes = sorted({min(s, max_batch) for s in (*GRAPH_BATCH_SIZES, *past)})  # padded batch buckets
        self.max_len, self.attn = max_len, attn
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.pool = None
        self.eager_only = False  # set when a step turned out not to be capturable

    def run(self, step: Callable[[int, int], None], batch: int, max_len: int, sampler_key: tuple) -> bool:
        """``step(batch, max_len)`` (device state only) as the graph of its key (padded batch, the max_len it runs
        with, sampler key), captured first if new; False: not run (the caller runs it eagerly)."""
        method = self.attn.method  # read each step: a caller may swap it (benchmarks/throughput.py)
        if self.eager_only or batch > self.sizes[-1] or not method.graph_safe:
            return False
        length = self.max_len  # a dense step's shapes do not follow max_len; a raw-logits one's: power-of-two buckets
        if method.graph_by_length:
            length = min(max(GRAPH_MIN_LEN, 1 << (max_len - 1).bit_length()), self.max_len)
        bs = next(s for s in self.sizes if s >= batch)
        key = (bs, length, sampler_key)
        if key in self.graphs:
            self.graphs[key].replay()
            return True
        with torch.inference_mode():
            step(bs, length)  # this step's work, and the capture's warm-up (kernel compilation, workspaces)
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            try:  # recorded, not run: the device state is left as the eager step made it
                with torch.cuda.graph(g, pool=self.pool):
                    step(bs, length)
            except Exception as e:  # a processor that syncs with the host or has data-dependent shapes
                warnings.warn(f"decode step could not be captured as a CUDA graph ({type(e).__name__}: {e}); "
                              "running eagerly (set graph_safe = False on the method or processor to skip the attempt)",
                              stacklevel=2)
                self.eager_only = True
                torch.cuda.synchronize()
                return True
        self.pool, self.graphs[key] = g.pool(), g
        return True

    def clear(self) -> None:
        """Drop every graph and its memory pool (``LLM.close``)."""
        self.graphs.clear()
        self.pool = None
