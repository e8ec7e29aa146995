"""Swap space: a preempted sequence's pages go to host memory and come back byte for byte.

What is copied is every *paged* tensor: ``[num_layers, num_pages, ...]`` tensors indexed by physical page, i.e.
the KV cache's ``k`` and ``v`` plus whatever the attention selector keeps per page (``paged_state()``: Quest's
key min/max summaries). Copies go through ``uint8`` views, so any dtype (fp8 included) round-trips exactly.

Host buffers are pinned on CUDA (plain memory on CPU) and allocated per swapped sequence from PyTorch's caching
host allocator, which keeps a block alive until the asynchronous copies that use it have run. Both directions
are stream-ordered and never read on the host: no synchronisation. A swap-out that would exceed the budget
(``swap_space_gb``), or whose host allocation fails, returns None: the engine falls back to recomputing.
Under tensor parallelism every rank holds the same number of bytes, so the budget decides alike on all of them;
an allocation failure is agreed on (one collective, at preemptions only).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from litesys.models.layers import Dist

CHUNK_BYTES = 64 << 20  # largest single copy: bounds the device-side gather buffer


@dataclass
class Swapped:
    """A sequence's pages on the host: one ``[num_layers, n_pages, ...]`` byte tensor per paged tensor."""

    num_pages: int
    host: list[torch.Tensor]
    nbytes: int


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The tensor's storage as uint8 (last dim widened by the element size): copies of it are bit-exact."""
    return t.view(torch.uint8)


class SwapSpace:
    def __init__(self, paged: Callable[[], list[torch.Tensor]], budget_bytes: int, dist: Dist | None = None):
        # ``paged`` is called at every swap: a selector may (re)allocate its state after the engine is built
        self.paged, self.budget, self.dist = paged, int(budget_bytes), dist or Dist()
        self.used = 0
        self.stats = dict(swapped_out=0, swapped_in=0, fallbacks=0)

    def page_bytes(self) -> int:
        return sum(t[:, 0].numel() * t.element_size() for t in self.paged())

    def swap_out(self, pages: list[int]) -> Swapped | None:
        """Copy ``pages`` (all layers, every paged tensor) to host memory; None when it does not fit."""
        need = len(pages) * self.page_bytes()
        host = self._alloc(len(pages)) if self.used + need <= self.budget else None
        if self.dist.world > 1 and self.used + need <= self.budget:  # every rank swaps, or none does
            from litesys.engine.distributed import agree_min
            if agree_min(self.dist, int(host is not None), self.paged()[0].device) == 0:
                host = None
        if host is None:
            self.stats["fallbacks"] += 1
            return None
        for src, dst in zip(self.paged(), host):
            src = _bytes(src)
            idx = torch.tensor(pages, dtype=torch.int64, device=src.device)
            for layer, a, b in self._chunks(src, len(pages)):
                dst[layer, a:b].copy_(src[layer].index_select(0, idx[a:b]), non_blocking=True)
        self.used += need
        self.stats["swapped_out"] += 1
        return Swapped(len(pages), host, need)

    def swap_in(self, item: Swapped, pages: list[int]) -> None:
        """Copy ``item`` back into the (new) physical ``pages``, in order, and free its host memory."""
        if len(pages) != item.num_pages:
            raise AssertionError(f"swap-in into {len(pages)} pages of a {item.num_pages}-page sequence")
        for dst, src in zip(self.paged(), item.host):
            dst = _bytes(dst)
            idx = torch.tensor(pages, dtype=torch.int64, device=dst.device)
            for layer, a, b in self._chunks(dst, len(pages)):
                dst[layer].index_copy_(0, idx[a:b], src[layer, a:b].to(dst.device, non_blocking=True))
        self.drop(item)
        self.stats["swapped_in"] += 1

    def drop(self, item: Swapped) -> None:
        self.used -= item.nbytes
        item.host = []

    def clear(self) -> None:
        """Forget every swapped sequence (the engine's reset): the budget is free again."""
        self.used = 0

    def _alloc(self, n_pages: int) -> list[torch.Tensor] | None:
        tensors = self.paged()
        pin = tensors[0].device.type == "cuda"
        try:
            return [torch.empty((t.shape[0], n_pages, *_bytes(t).shape[2:]), dtype=torch.uint8, pin_memory=pin)
                    for t in tensors]
        except RuntimeError:  # host (pinned) memory exhausted: recompute instead
            return None

    @staticmethod
    def _chunks(t: torch.Tensor, n: int):
        """(layer, start, stop) page ranges of at most CHUNK_BYTES each."""
        per = max(1, CHUNK_BYTES // max(1, t[0, 0].numel()))
        for layer in range(t.shape[0]):
            for a in range(0, n, per):
                yield layer, a, min(n, a + per)


def paged_tensors(kv, selector) -> Callable[[], list[torch.Tensor]]:
    """The pool's K and V, then the selector's per-page state (``paged_state()``, if it has any)."""
    def tensors() -> list[torch.Tensor]:
        extra = selector.paged_state() if selector is not None and hasattr(selector, "paged_state") else []
        return [kv.k, kv.v, *extra]
    return tensors
