"""Prefix cache across requests: full prompt KV pages kept after their request, keyed by their token content.

Page ``i`` of a prompt is found under ``(node of page i-1, its page_size tokens)``: a hash chain whose dict keys
compare the exact token tuples, so two different prefixes never share a page. The cache holds one reference on
each page it keeps (the pool's ref counts, as the ``n`` samples of a request share their prompt pages); a page only
the cache holds is evictable, least recently used first and leaves before their parents (a sequence holding a page
holds its whole prefix, so every evictable page becomes a leaf in turn). ``CachingAllocator`` counts evictable pages
as free and evicts when an allocation needs them: eviction comes before preemption. docs/prefix_cache.md.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import torch

from litesys.attention.kv_cache import PageAllocator
from litesys.attention.meta import AttnMeta
from litesys.kernels.common import cdiv


@dataclass
class _Node:
    page: int
    key: tuple  # (parent node id, the page's tokens)
    parent: _Node | None
    id: int
    last_used: int = 0
    children: int = 0


class CachingAllocator(PageAllocator):
    """``PageAllocator`` plus the prefix index; ``num_free`` includes the evictable cached pages."""

    def __init__(self, num_pages: int, page_size: int, reserved: int = 1):
        self.page_size, self.evictions = page_size, 0
        super().__init__(num_pages, reserved)

    # ---- the pool --------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Every sequence's reference dropped; the cached pages stay (only the cache holds them now)."""
        kept = getattr(self, "node_of", {})
        super().reset()
        if kept:
            self.free = [p for p in self.free if p not in kept]
            for p in kept:
                self.refcount[p] = 1
        self.node_of: dict[int, _Node] = kept
        self.index: dict[tuple, _Node] = {n.key: n for n in kept.values()}
        self.evictable = len(kept)
        self.heap: list[tuple[int, int, _Node]] = []  # (last_used, id, node): evictable leaves, stale entries skipped
        for n in kept.values():
            self._push_if_leaf(n)

    def clear(self) -> None:
        """Drop the cache too: every page free (the engine's recovery after an error)."""
        self.node_of = {}
        self.reset()

    @property
    def num_free(self) -> int:
        return len(self.free) + self.evictable

    @property
    def num_cached(self) -> int:
        return len(self.node_of)

    def alloc(self, n: int) -> list[int]:
        while len(self.free) < n and self._evict_one():
            pass
        return super().alloc(n)

    def share(self, pages: list[int]) -> None:
        for p in pages:
            if self.refcount[p] == 1 and p in self.node_of:
                self.evictable -= 1  # in use again
        super().share(pages)

    def release(self, pages: list[int]) -> None:
        super().release(pages)
        for p in pages:
            node = self.node_of.get(p)
            if node is not None and self.refcount[p] == 1:
                self.evictable += 1  # only the cache holds it now
                self._push_if_leaf(node)

    # ---- the index -------------------------------------------------------------------------------------------
    def acquire(self, tokens: list[int], max_pages: int) -> list[int]:
        """The pages of the longest cached full-page prefix of ``tokens`` (at most ``max_pages``), each with one
        more reference for the caller (it releases them like its own pages)."""
        ps, parent, pages, clock = self.page_size, None, [], next(_CLOCK)
        for i in range(min(max_pages, len(tokens) // ps)):
            node = self.index.get((parent.id if parent else -1, tuple(tokens[i * ps:(i + 1) * ps])))
            if node is None:
                break
            node.last_used = clock
            pages.append(node.page)
            parent = node
        self.share(pages)
        return pages

    def insert(self, tokens: list[int], pages: list[int]) -> None:
        """Cache the full pages of ``tokens`` (``pages[i]`` holds tokens ``i*ps ..``, as a prefill wrote them).
        A prefix already cached keeps its pages; a new page gets the cache's reference."""
        ps, parent, clock = self.page_size, None, next(_CLOCK)
        for i in range(min(len(pages), len(tokens) // ps)):
            key = (parent.id if parent else -1, tuple(tokens[i * ps:(i + 1) * ps]))
            node = self.index.get(key)
            if node is None:
                if pages[i] in self.node_of:  # cached under another prefix: cannot be (content is the key)
                    raise AssertionError(f"page {pages[i]} cached twice")
                node = _Node(pages[i], key, parent, next(_IDS))
                self.index[key], self.node_of[pages[i]] = node, node
                super().share([pages[i]])  # the cache's own reference (the page is in use: not evictable)
                if parent is not None:
                    parent.children += 1
            node.last_used = clock
            parent = node

    # ---- eviction --------------------------------------------------------------------------------------------
    def _evictable_leaf(self, node: _Node) -> bool:
        return node.children == 0 and self.refcount[node.page] == 1 and self.node_of.get(node.page) is node

    def _push_if_leaf(self, node: _Node) -> None:
        if self._evictable_leaf(node):
            heapq.heappush(self.heap, (node.last_used, node.id, node))

    def _evict_one(self) -> bool:
        """Free the least recently used evictable leaf; False when none is left."""
        while self.heap:
            used, _, node = heapq.heappop(self.heap)
            if not self._evictable_leaf(node):
                continue  # stale: in use again, evicted, or has children now
            if used != node.last_used:  # touched since it was pushed: back in at its new time
                heapq.heappush(self.heap, (node.last_used, node.id, node))
                continue
            del self.index[node.key], self.node_of[node.page]
            self.evictable -= 1
            self.evictions += 1
            super().release([node.page])
            if node.parent is not None:
                node.parent.children -= 1
                self._push_if_leaf(node.parent)
            return True
        return False


_CLOCK = itertools.count(1)  # LRU time: one tick per lookup or insert
_IDS = itertools.count()  # node ids are never reused, so a key never points at a page's later content


def prefill_layout(items: list, allocator: PageAllocator, attn, device: torch.device, max_tokens: int,
                   counts=None) -> tuple[torch.Tensor, torch.Tensor, AttnMeta]:
    """One prefill step of ``items`` (scheduler.PrefillItem), each from ``it.done`` to at most ``max_tokens`` further
    (a long prompt's chunk); a first step starts with the item's cached prefix pages (pinned; none without the
    cache). Allocates the pages the step writes, appends them to ``it.pages`` and advances ``it.done`` ->
    (ids, positions, meta). Items that start past position 0 make the step attend over their pages (the paged
    prefill kernel: queries = the new tokens only); a step of whole prompts keeps the packed varlen prefill."""
    ps = attn.kv.page_size
    for it in items:
        if it.done == 0 and not it.pages:  # its first step: reuse the cached prefix
            it.pages = _cached_prefix(allocator, it, ps)
            it.done = len(it.pages) * ps
            if counts is not None and it.swapped is None:
                counts.prefix_hit_tokens += it.done
                counts.prefix_tokens += len(it.tokens)
    starts = [it.done for it in items]
    ends = [min(len(it.tokens), s + max_tokens) for it, s in zip(items, starts)]
    for it, e in zip(items, ends):  # may evict cached pages, never the pinned ones
        it.pages += allocator.alloc(cdiv(e, ps) - len(it.pages))
    ids = torch.tensor([t for it, s, e in zip(items, starts, ends) for t in it.tokens[s:e]], dtype=torch.int64)
    positions = torch.cat([torch.arange(s, e) for s, e in zip(starts, ends)])
    slots = torch.cat([torch.tensor(it.pages, dtype=torch.int64)[pos // ps] * ps + pos % ps
                       for it, pos in zip(items, positions.split([e - s for s, e in zip(starts, ends)]))])
    cu = torch.tensor([0, *itertools.accumulate(e - s for s, e in zip(starts, ends))], dtype=torch.int32)
    table = lengths = None
    if any(starts):  # the new rows attend over their sequences' pages (cached prefix, earlier chunks, themselves)
        table = torch.zeros(len(items), max(len(it.pages) for it in items), dtype=torch.int32)
        for b, it in enumerate(items):
            table[b, :len(it.pages)] = torch.tensor(it.pages, dtype=torch.int32)
        table, lengths = table.to(device), torch.tensor(ends, dtype=torch.int32, device=device)
    meta = AttnMeta(True, slots.to(device), ps, attn.num_q_heads, attn.num_kv_heads, cu_seqlens=cu.to(device),
                    max_seqlen=max(e - s for s, e in zip(starts, ends)), page_table=table, lengths=lengths)
    for it, e in zip(items, ends):
        it.done = e
    return ids.to(device), positions.to(device), meta


def _cached_prefix(allocator: PageAllocator, item, ps: int) -> list[int]:
    """The cached full pages of the item's prompt (a recompute's generated tokens are never looked up: a sparse
    replay rewrites them), leaving at least one token to prefill for the logits."""
    if not isinstance(allocator, CachingAllocator) or item.swapped is not None:
        return []
    prompt = (item.request or item.seq.req).prompt
    return allocator.acquire(item.tokens, min(len(prompt) // ps, (len(item.tokens) - 1) // ps))


def cache_prompts(allocator: PageAllocator, items: list) -> None:
    """After an item's last prefill step: the full pages of its prompt into the cache (no-op without it)."""
    if isinstance(allocator, CachingAllocator):
        for it in items:
            allocator.insert((it.request or it.seq.req).prompt, it.pages)
