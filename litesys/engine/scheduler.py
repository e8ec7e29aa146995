"""Continuous batching decisions: admission by free pages and slots, preemption of the newest sequence.

Waiting items are either a fresh request (all ``n`` samples; the prompt is prefilled once and its pages
shared) or a preempted sequence (recomputed from its prompt plus the tokens it had generated).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from litesys.engine.sequence import Request, Seq


def pages_for(tokens: int, page_size: int) -> int:
    return (tokens + page_size - 1) // page_size


@dataclass
class PrefillItem:
    tokens: list[int]  # what is prefilled
    request: Request | None = None  # fresh request: fork into n samples afterwards
    seq: Seq | None = None  # preempted sequence: resume it
    swapped: object | None = None  # its pages in host memory (engine/swap.py): copied back, not recomputed

    @property
    def prefill_tokens(self) -> int:  # what it costs of a prefill step's token budget
        return 0 if self.swapped is not None else len(self.tokens)

    @property
    def width(self) -> int:  # slots it will occupy
        return self.request.params.n if self.request is not None else 1


class Scheduler:
    def __init__(self, page_size: int, max_slots: int, max_batched_tokens: int, watermark_pages: int):
        self.page_size, self.max_slots = page_size, max_slots
        self.max_batched_tokens, self.watermark = max_batched_tokens, watermark_pages
        self.waiting: deque[PrefillItem] = deque()

    def add(self, req: Request) -> None:
        self.waiting.append(PrefillItem(tokens=req.prompt, request=req))

    def clear(self) -> None:
        self.waiting.clear()

    def requeue(self, seq: Seq, generated: list[int], swapped: object | None = None) -> None:
        """A preempted sequence goes to the front: it was admitted before anything still waiting."""
        seq.done_tokens = generated
        self.waiting.appendleft(PrefillItem(tokens=seq.req.prompt + generated, seq=seq, swapped=swapped))

    def pages_needed(self, item: PrefillItem) -> int:
        if item.swapped is not None:
            return item.swapped.num_pages
        n = pages_for(len(item.tokens), self.page_size)
        if item.request is not None and len(item.tokens) % self.page_size:
            n += item.width - 1  # each extra sample gets its own copy of the partly filled last page
        return n

    def admit(self, free_pages: int, running: int) -> list[PrefillItem]:
        """Pop the waiting items that fit this prefill step (FIFO; stops at the first that does not fit)."""
        batch: list[PrefillItem] = []
        tokens = 0
        while self.waiting:
            item = self.waiting[0]
            need = self.pages_needed(item)
            reserve = self.watermark if running + len(batch) else 0
            if running + item.width > self.max_slots or need + reserve > free_pages:
                break
            if batch and tokens + item.prefill_tokens > self.max_batched_tokens:
                break
            batch.append(self.waiting.popleft())
            tokens += item.prefill_tokens
            free_pages -= need
            running += item.width
        return batch
