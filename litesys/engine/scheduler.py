"""Continuous batching decisions: admission by free slots and pages (requests pulled lazily), page growth, the
preemption choice. A waiting item is a fresh request (its ``n`` samples share the prompt's pages) or a preempted
sequence (swapped back in, or recomputed from prompt + generated tokens). An item longer than the step's token
budget is prefilled alone, a chunk of at most ``max_batched_tokens`` per step (``partial``; docs/prefix_cache.md)."""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from litesys.engine.config import KV_WATERMARK_DIVISOR
from litesys.engine.sequence import Request, Seq
from litesys.kernels.common import cdiv


@dataclass
class PrefillItem:
    tokens: list[int]  # what is prefilled
    request: Request | None = None  # fresh request: fork into n samples afterwards
    seq: Seq | None = None  # preempted sequence: resume it
    swapped: object | None = None  # its pages in host memory (engine/swap.py): copied back, not recomputed
    done: int = 0  # tokens whose K/V are in its pages (cached prefix, earlier chunks)
    pages: list[int] = field(default_factory=list)

    @property
    def num_samples(self) -> int:  # slots it will occupy
        return self.request.params.n if self.request is not None else 1


class Scheduler:
    def __init__(self, page_size: int, max_slots: int, max_batched_tokens: int, num_pages: int):
        self.page_size, self.max_slots, self.max_batched_tokens = page_size, max_slots, max_batched_tokens
        self.watermark = max(1, num_pages // KV_WATERMARK_DIVISOR)  # pages kept free for running sequences to grow
        self.waiting: deque[PrefillItem] = deque()
        self.source: Iterator[Request] | None = None  # requests not pulled yet
        self.partial: PrefillItem | None = None  # a long prompt between its chunks

    def start(self, requests: Iterable[Request]) -> None:
        """A list waits whole; any other iterable is pulled one request at a time, as slots and pages free up."""
        self.clear()
        if isinstance(requests, (list, tuple)):
            self.waiting.extend(PrefillItem(tokens=r.prompt, request=r) for r in requests)
        else:
            self.source = iter(requests)

    def clear(self) -> None:
        self.waiting.clear()
        self.source, self.partial = None, None

    def pending(self) -> bool:  # anything waiting or half prefilled, or possibly still to come from the source
        return bool(self.waiting) or self.source is not None or self.partial is not None

    def _pull(self) -> bool:
        req = next(self.source, None) if self.source is not None else None
        if req is None:
            self.source = None
            return False
        self.waiting.append(PrefillItem(tokens=req.prompt, request=req))
        return True

    def requeue(self, seq: Seq, generated: list[int], swapped: object | None = None) -> None:
        """A preempted sequence goes to the front: it was admitted before anything still waiting."""
        seq.tokens_before_preemption = generated
        self.waiting.appendleft(PrefillItem(tokens=seq.req.prompt + generated, seq=seq, swapped=swapped))

    def pages_needed(self, item: PrefillItem) -> int:
        if item.swapped is not None:
            return item.swapped.num_pages
        n = cdiv(len(item.tokens), self.page_size)
        if item.request is not None and len(item.tokens) % self.page_size:
            n += item.num_samples - 1  # each extra sample gets its own copy of the partly filled last page
        return n

    def admit(self, free_pages: int, running: int) -> list[PrefillItem]:
        """Pop the waiting items that fit this prefill step (FIFO; stops at the first that does not fit); one too
        long for the budget goes alone and continues in ``partial``, whose next chunk waits for its pages."""
        if self.partial is not None:
            it, reserve = self.partial, self.watermark if running else 0
            end = min(len(it.tokens), it.done + self.max_batched_tokens)
            need = (self.pages_needed(it) if end == len(it.tokens) else cdiv(end, self.page_size)) - len(it.pages)
            return [it] if need + reserve <= free_pages else []
        batch, tokens = [], 0
        # pull the next request only with a slot free and pages beyond the reserve (it could not start otherwise)
        while self.waiting or running < self.max_slots and free_pages > (self.watermark if running else 0) \
                and self._pull():
            item = self.waiting[0]
            need = self.pages_needed(item)
            reserve = self.watermark if running else 0
            cost = 0 if item.swapped is not None else len(item.tokens)  # of the step's token budget
            over_budget = batch and tokens + cost > self.max_batched_tokens
            if running + item.num_samples > self.max_slots or need + reserve > free_pages or over_budget:
                break
            batch.append(self.waiting.popleft())
            tokens += cost
            free_pages -= need
            running += item.num_samples
        return batch

    def page_growth(self, seq_len_host: np.ndarray, free_pages: int) -> np.ndarray | None:
        """Rows whose next token starts a new page, or None when the free pages do not cover them."""
        need = np.nonzero(seq_len_host % self.page_size == 0)[0]
        return need if len(need) <= free_pages else None

    @staticmethod
    def preemption_victim(running: list[Seq]) -> int:
        """The slot to preempt: the newest sequence (the oldest keep their progress)."""
        if len(running) <= 1:
            raise RuntimeError("the KV pool is too small for even one sequence; lower max_seq_len or give the "
                               "cache more memory")
        return max(range(len(running)), key=lambda i: running[i].order)
