"""Swap space: a preempted sequence's pages (K, V and the method's per-page state) go to host memory and come back
byte for byte, stream-ordered. The host pool (pinned on CUDA) is allocated once, when the engine is built, and cut
into page slots (a free list); too few free slots: ``swap_out`` returns None and the sequence is recomputed."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

import torch

from litesys.attention.kv_cache import PageAllocator
from litesys.distributed import Dist, agree_min

CHUNK_BYTES = 64 << 20  # largest single copy: bounds the device-side gather buffer


@dataclass
class Swapped:  # a sequence's pages on the host: its i-th page in host slot ``slots[i]``
    num_pages: int
    slots: list[int]
    nbytes: int


class SwapSpace:
    def __init__(self, paged: Callable[[], list[torch.Tensor]], budget_bytes: int, dist: Dist | None = None):
        self.paged, self.budget, self.dist = paged, int(budget_bytes), dist or Dist()
        self.stats = dict(swapped_out=0, swapped_in=0, fallbacks=0)
        self.pool = self._allocate()
        sizes = [t[:, 0].numel() * t.element_size() for t in paged()]  # per paged tensor: one page, every layer
        self.slot_bytes = sum(sizes)
        n = self.budget // max(1, self.slot_bytes)  # page slots
        ends = accumulate(b * n for b in sizes)  # slot-major views: consecutive slots take one copy
        self.views = [self.pool[e - n * b:e].view(n, b) for b, e in zip(sizes, ends)]
        self.slots = PageAllocator(n, reserved=0)

    def page_bytes(self) -> int:  # one page of every paged tensor, every layer: one host slot
        return self.slot_bytes

    @property
    def used(self) -> int:  # bytes held by swapped-out sequences
        return (self.slots.num_pages - self.slots.num_free) * self.slot_bytes

    def swap_out(self, pages: list[int]) -> Swapped | None:
        """Copy ``pages`` (all layers, every paged tensor) to free host slots; None when too few are free."""
        assert len(self.paged()) == len(self.views), "a paged tensor appeared after the swap space was built"
        if self.slots.num_free < len(pages):  # every rank has the same shapes and slots: all decide alike
            self.stats["fallbacks"] += 1
            return None
        item = Swapped(len(pages), self.slots.alloc(len(pages)), len(pages) * self.page_bytes())
        for src, dst in zip(self.paged(), self.views):
            src = src.view(torch.uint8).transpose(0, 1)  # [pages, layers, ...]: a slot's byte order
            idx = torch.tensor(pages, dtype=torch.int64, device=src.device)
            for a, s, n in self._runs(item.slots, dst.shape[1]):
                dst[s:s + n].copy_(src[idx[a:a + n]].reshape(n, -1), non_blocking=True)
        self.stats["swapped_out"] += 1
        return item

    def swap_in(self, item: Swapped, pages: list[int]) -> None:
        """Copy ``item`` back into the (new) physical ``pages``, in order, and free its host slots."""
        if len(pages) != item.num_pages:
            raise AssertionError(f"swap-in into {len(pages)} pages of a {item.num_pages}-page sequence")
        for dst, src in zip(self.paged(), self.views):
            dst = dst.view(torch.uint8).transpose(0, 1)
            idx = torch.tensor(pages, dtype=torch.int64, device=dst.device)
            for a, s, n in self._runs(item.slots, src.shape[1]):
                dst[idx[a:a + n]] = src[s:s + n].to(dst.device, non_blocking=True).view(n, *dst.shape[1:])
        # copies into the freed slots later are stream-ordered after these; reversed: the next alloc runs upward
        self.slots.release(item.slots[::-1])
        self.stats["swapped_in"] += 1

    def clear(self) -> None:  # forget every swapped sequence (the engine's reset): every slot free again
        self.slots.reset()

    def _allocate(self) -> torch.Tensor:
        dev = self.paged()[0].device
        try:
            pool = torch.empty(self.budget, dtype=torch.uint8, pin_memory=dev.type == "cuda")
        except RuntimeError:  # host (pinned) memory short
            pool = None
        if agree_min(self.dist, int(pool is not None), dev) == 0:  # every rank raises: none waits in a collective
            raise ValueError(f"swap_space_gb={self.budget / 2**30:g}: cannot allocate that much host memory; "
                             "lower it (0: recompute preempted sequences)")
        if pool.is_pinned():
            pool[::4096].zero_()  # a byte per host page: the first swap-out faults nothing in
        return pool

    @staticmethod
    def _runs(slots: list[int], slot_bytes: int):
        """(first page of the sequence, first slot, slots) of each copy: consecutive slots, at most CHUNK_BYTES."""
        per, a = max(1, CHUNK_BYTES // slot_bytes), 0
        while a < len(slots):
            n = 1
            while n < per and a + n < len(slots) and slots[a + n] == slots[a] + n:
                n += 1
            yield a, slots[a], n
            a += n


def paged_tensors(kv, method) -> Callable[[], list[torch.Tensor]]:
    """The pool's K and V, then the sparse method's per-page state (``method.paged_state()``)."""
    return lambda: [kv.k, kv.v, *method.paged_state()]  # read at each call: the method's state may be rebound
