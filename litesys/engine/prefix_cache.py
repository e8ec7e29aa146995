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


@dataclass
class CachedContext:
    """A prefill whose prompts start with cached pages: the step's new tokens and the cached ones laid out as the
    whole prompts, so dense prefill attention runs over exactly what a prefill of the whole prompts would see."""

    new_pos: torch.Tensor  # [T_new] int64: row of each new token in the whole-prompt packing
    cached_pos: torch.Tensor  # [P] int64: row of each cached token there
    cached_slots: torch.Tensor  # [P] int64: its flat KV slot
    cu_seqlens: torch.Tensor  # [B+1] int32: whole-prompt prefix sums
    max_seqlen: int
    total: int  # whole-prompt tokens (on the host: no device read per layer)

    @classmethod
    def build(cls, cached_pages: list[list[int]], new_lens: list[int], page_size: int,
              device: torch.device) -> CachedContext:
        new_pos, cached_pos, slots, cu, at = [], [], [], [0], 0
        for pages, n in zip(cached_pages, new_lens):
            c = len(pages) * page_size
            if c:
                cached_pos.append(torch.arange(at, at + c))
                slots.append((torch.tensor(pages, dtype=torch.int64) * page_size).repeat_interleave(page_size)
                             + torch.arange(c) % page_size)
            new_pos.append(torch.arange(at + c, at + c + n))
            at += c + n
            cu.append(at)
        cat = (lambda xs: torch.cat(xs).to(device) if xs else torch.zeros(0, dtype=torch.int64, device=device))
        lens = [b - a for a, b in zip(cu[:-1], cu[1:])]
        return cls(cat(new_pos), cat(cached_pos), cat(slots), torch.tensor(cu, dtype=torch.int32, device=device),
                   max(lens), at)

    def whole(self, new: torch.Tensor, cache: torch.Tensor | None) -> torch.Tensor:
        """[T_whole, H, D]: ``new`` rows at their places, the cached rows gathered from ``cache`` (one layer's
        [num_pages, page_size, H, D]; None: zeros, e.g. the queries of cached tokens, whose outputs are unused)."""
        raw = new.view(torch.uint8) if new.element_size() == 1 else new  # fp8: index_copy_ has no fp8 kernel
        out = raw.new_zeros((self.total, *new.shape[1:]))
        out.index_copy_(0, self.new_pos, raw)
        if cache is not None and len(self.cached_pos):
            flat = cache.reshape(-1, *cache.shape[2:])
            flat = flat.view(torch.uint8) if flat.element_size() == 1 else flat
            out.index_copy_(0, self.cached_pos, flat.index_select(0, self.cached_slots).to(out.dtype))
        return out.view(new.dtype)

    def attend(self, ops, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
               v_cache: torch.Tensor, scale: float, k_scale: torch.Tensor | None,
               v_scale: torch.Tensor | None) -> torch.Tensor:
        """Prefill attention of the new tokens (q/k/v [T_new, H, D], k/v as the cache stores them) over their
        cached prefix and themselves -> [T_new, Hq, D]."""
        out = ops.prefill_attention(self.whole(q, None), self.whole(k, k_cache), self.whole(v, v_cache),
                                    self.cu_seqlens, self.max_seqlen, scale, k_scale, v_scale)
        return out.index_select(0, self.new_pos)


def prefill_layout(items: list, allocator: PageAllocator, attn, device: torch.device,
                   counts=None) -> tuple[torch.Tensor, torch.Tensor, AttnMeta, list[list[int]]]:
    """One prefill step of ``items`` (scheduler.PrefillItem): each item's cached prefix pages (pinned; none without
    the cache), then its new tokens on fresh pages -> (ids, positions, meta, each item's pages in order)."""
    ps = attn.kv.page_size
    cached = [_cached_prefix(allocator, it, ps) for it in items]
    starts = [len(c) * ps for c in cached]  # new tokens start on a fresh page after the cached ones
    lens = [len(it.tokens) - s for it, s in zip(items, starts)]
    if counts is not None:
        counts.prefix_hit_tokens += sum(starts)
        counts.prefix_tokens += sum(len(it.tokens) for it in items if it.swapped is None)
    fresh = [allocator.alloc(cdiv(n, ps)) for n in lens]  # may evict cached pages, never the pinned ones
    ids = torch.tensor([t for it, s in zip(items, starts) for t in it.tokens[s:]], dtype=torch.int64)
    positions = torch.cat([torch.arange(s, s + n) for s, n in zip(starts, lens)])
    slots = torch.cat([torch.tensor(pl, dtype=torch.int64).repeat_interleave(ps)[:n] * ps + torch.arange(n) % ps
                       for pl, n in zip(fresh, lens)])
    cu = torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32)
    context = CachedContext.build(cached, lens, ps, device) if any(starts) else None
    meta = AttnMeta(True, slots.to(device), ps, attn.num_q_heads, attn.num_kv_heads, cu_seqlens=cu.to(device),
                    max_seqlen=max(lens), context=context)
    return ids.to(device), positions.to(device), meta, [c + f for c, f in zip(cached, fresh)]


def _cached_prefix(allocator: PageAllocator, item, ps: int) -> list[int]:
    """The cached full pages of the item's prompt (a recompute's generated tokens are never looked up: a sparse
    replay rewrites them), leaving at least one token to prefill for the logits."""
    if not isinstance(allocator, CachingAllocator) or item.swapped is not None:
        return []
    prompt = (item.request or item.seq.req).prompt
    return allocator.acquire(item.tokens, min(len(prompt) // ps, (len(item.tokens) - 1) // ps))


def cache_prompts(allocator: PageAllocator, items: list, page_lists: list[list[int]]) -> None:
    """After a prefill: the full pages of each item's prompt into the cache (no-op without it)."""
    if isinstance(allocator, CachingAllocator):
        for it, pages in zip(items, page_lists):
            allocator.insert((it.request or it.seq.req).prompt, pages)
