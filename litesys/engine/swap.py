"""Swap space: a preempted sequence's pages (K, V and the method's per-page state) go to pinned host memory and
come back byte for byte, stream-ordered; over budget ``swap_out`` returns None: recompute (docs/engine.md)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from litesys.distributed import Dist, agree_min

CHUNK_BYTES = 64 << 20  # largest single copy: bounds the device-side gather buffer


@dataclass
class Swapped:  # a sequence's pages on the host: one [num_layers, n_pages, ...] byte tensor per paged tensor
    num_pages: int
    host: list[torch.Tensor]
    nbytes: int


class SwapSpace:
    def __init__(self, paged: Callable[[], list[torch.Tensor]], budget_bytes: int, dist: Dist | None = None):
        # ``paged`` is called at every swap: a method may (re)allocate its state after the engine is built
        self.paged, self.budget, self.dist = paged, int(budget_bytes), dist or Dist()
        self.used = 0
        self.stats = dict(swapped_out=0, swapped_in=0, fallbacks=0)

    def page_bytes(self) -> int:
        return sum(t[:, 0].numel() * t.element_size() for t in self.paged())

    def swap_out(self, pages: list[int]) -> Swapped | None:
        """Copy ``pages`` (all layers, every paged tensor) to host memory; None when it does not fit."""
        need = len(pages) * self.page_bytes()
        fits = self.used + need <= self.budget
        host = self._alloc(len(pages)) if fits else None
        if fits and self.dist.world > 1 and agree_min(self.dist, int(host is not None), self.paged()[0].device) == 0:
            host = None  # every rank swaps, or none does
        if host is None:
            self.stats["fallbacks"] += 1
            return None
        for src, dst in zip(self.paged(), host):
            src = src.view(torch.uint8)  # the storage's bytes: copies of it are bit-exact
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
            dst = dst.view(torch.uint8)
            idx = torch.tensor(pages, dtype=torch.int64, device=dst.device)
            for layer, a, b in self._chunks(dst, len(pages)):
                dst[layer].index_copy_(0, idx[a:b], src[layer, a:b].to(dst.device, non_blocking=True))
        self.used -= item.nbytes
        item.host = []
        self.stats["swapped_in"] += 1

    def clear(self) -> None:  # forget every swapped sequence (the engine's reset): the budget is free again
        self.used = 0

    def _alloc(self, n_pages: int) -> list[torch.Tensor] | None:
        tensors = self.paged()
        pin = tensors[0].device.type == "cuda"
        try:
            return [torch.empty((t.shape[0], n_pages, *t.view(torch.uint8).shape[2:]), dtype=torch.uint8,
                                pin_memory=pin) for t in tensors]
        except RuntimeError:  # host (pinned) memory exhausted: recompute instead
            return None

    @staticmethod
    def _chunks(t: torch.Tensor, n: int):
        """(layer, start, stop) page ranges of at most CHUNK_BYTES each."""
        per = max(1, CHUNK_BYTES // max(1, t[0, 0].numel()))
        for layer in range(t.shape[0]):
            for a in range(0, n, per):
                yield layer, a, min(n, a + per)


def paged_tensors(kv, method) -> Callable[[], list[torch.Tensor]]:
    """The pool's K and V, then the sparse method's per-page state (``method.paged_state()``)."""
    def tensors() -> list[torch.Tensor]:
        return [kv.k, kv.v, *method.paged_state()]
    return tensors
