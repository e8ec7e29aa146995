"""The prefix cache's index and ref counts on hand-built cases (litesys/engine/prefix_cache.py)."""
import pytest
import torch

from litesys.engine.prefix_cache import CachingAllocator
from litesys.kernels.ref import ops_torch

PS = 4


def toks(*pages: int) -> list[int]:
    """One page of PS tokens per value (page content ``v`` = [v, v+1, v+2, v+3])."""
    return [t for v in pages for t in range(v, v + PS)]


def cached_prompt(alloc: CachingAllocator, tokens: list[int]) -> list[int]:
    """A request's prefill: its pages allocated, written, inserted, then released when it finishes."""
    pages = alloc.alloc(-(-len(tokens) // PS))
    alloc.insert(tokens, pages)
    alloc.release(pages)
    return pages


def test_hits_partial_hits_and_misses():
    a = CachingAllocator(32, PS)
    prompt = toks(0, 10, 20) + [7, 7]  # 3 full pages + a partial one
    pages = cached_prompt(a, prompt)
    assert a.num_cached == 3 and a.num_free == 31  # the partial page is free again; cached pages count as free
    assert a.acquire(prompt, 99) == pages[:3]
    assert a.acquire(toks(0, 10, 99), 99) == pages[:2]  # differs in page 2
    assert a.acquire(toks(1, 10, 20), 99) == []  # differs in page 0: nothing after it matches either
    assert a.acquire(toks(10, 20), 99) == []  # same page content at another position is another key
    assert a.acquire(prompt[:-2], 2) == pages[:2]  # the caller's cap (one token must be left to prefill)
    assert a.acquire(toks(0, 10)[:-1], 99) == pages[:1]  # only full pages of the query count


def test_equal_hash_different_tokens_do_not_match():
    a = CachingAllocator(8, PS)
    assert hash((-1,) * PS) == hash((-2,) * PS)  # CPython: hash(-1) == hash(-2)
    cached_prompt(a, [-1] * PS + [5])
    assert a.acquire([-2] * PS + [5], 1) == []
    assert len(a.acquire([-1] * PS + [5], 1)) == 1


def test_ref_counts_never_free_a_page_in_use():
    a = CachingAllocator(8, PS)  # 7 usable pages
    prompt = toks(0, 10)
    pages = a.alloc(2)
    a.insert(prompt, pages)
    assert [a.refcount[p] for p in pages] == [2, 2] and a.num_free == 5  # in use: not evictable
    hit = a.acquire(prompt, 2)  # a second request on the same prefix
    assert hit == pages and [a.refcount[p] for p in pages] == [3, 3]
    a.release(pages)  # the first request finishes
    assert a.num_free == 5
    with pytest.raises(RuntimeError, match="KV pool exhausted"):
        a.alloc(6)  # the pinned pages cannot be evicted
    assert a.acquire(prompt, 2) == pages  # still cached, content intact
    a.release(hit)
    a.release(pages)
    assert a.num_free == 7 and a.evictable == 2
    got = a.alloc(7)  # now both cached pages are evicted
    assert sorted(got) == list(range(1, 8)) and a.num_cached == 0 and a.acquire(prompt, 2) == []
    a.release(got)
    assert a.num_free == 7 and sum(a.refcount) == 0


def test_eviction_is_lru_and_leaves_first():
    a = CachingAllocator(9, PS)  # 8 usable pages
    pa = cached_prompt(a, toks(0, 10, 20))  # chain A: 3 pages
    pb = cached_prompt(a, toks(0, 30))  # chain B shares A's first page, adds one
    assert pb[0] != pa[0]  # B computed its own copy of page 0 (it was not looked up) ...
    assert a.num_cached == 4  # ... and the cache kept A's: B's duplicate went back to the free list
    a.release(a.acquire(toks(0, 10, 20), 3))  # touch chain A: B's leaf is now the least recently used
    held = a.alloc(len(a.free))  # the free list is empty: each allocation below evicts exactly one page
    order = []
    for _ in range(4):
        before = set(a.node_of)
        held += a.alloc(1)
        order.extend(before - set(a.node_of))
    # B's leaf (page 30) first, then A from its leaf up; A's first page (the parent of both) last
    assert order == [pb[1], pa[2], pa[1], pa[0]]


def test_reset_keeps_the_cache_clear_drops_it():
    a = CachingAllocator(8, PS)
    prompt = toks(0, 10)
    pages = a.alloc(3)
    a.insert(prompt, pages)
    a.reset()  # the engine's start of a run: every sequence's reference gone, the cache's kept
    assert [a.refcount[p] for p in pages] == [1, 1, 0] and a.num_free == 7 and len(a.free) == 5
    assert a.acquire(prompt, 2) == pages[:2]
    a.clear()
    assert a.num_cached == 0 and sum(a.refcount) == 0 and a.num_free == 7 and a.acquire(prompt, 2) == []


@pytest.mark.parametrize("cached_pages", [0, 1, 3])
def test_paged_prefill_over_cached_pages_equals_whole_prefill(cached_pages):
    """The new tokens' prefill over cached pages (paged prefill, queries = new tokens only) == the whole prompts'
    prefill, rows of the new tokens."""
    torch.manual_seed(0)
    hq, hkv, d, npages = 4, 2, 8, 16
    k_cache, v_cache = torch.randn(npages, PS, hkv, d), torch.randn(npages, PS, hkv, d)
    lens = [cached_pages * PS + 5, 2 * PS + 1]  # two prompts; the second has 1 cached page
    cached = [list(range(1, 1 + cached_pages)), [9]]
    fresh = [[12, 13], [14, 15]]  # the new tokens' pages
    ks, vs, qs, new_rows = [], [], [], []
    for pages, own, n in zip(cached, fresh, lens):
        c = len(pages) * PS
        kn, vn = torch.randn(n - c, hkv, d), torch.randn(n - c, hkv, d)
        slots = (torch.tensor(own).repeat_interleave(PS) * PS + torch.arange(2 * PS) % PS)[:n - c]
        for cache, x in ((k_cache, kn), (v_cache, vn)):  # written into the new pages, as attention does first
            cache.view(-1, hkv, d)[slots] = x
        ks.append(torch.cat([k_cache[pages].reshape(-1, hkv, d), kn]))
        vs.append(torch.cat([v_cache[pages].reshape(-1, hkv, d), vn]))
        qs.append(torch.randn(n, hq, d))
        new_rows.append((c, n))
    cu = torch.tensor([0, lens[0], sum(lens)], dtype=torch.int32)
    whole = ops_torch.prefill_attention(torch.cat(qs), torch.cat(ks), torch.cat(vs), cu, max(lens), 0.3)
    ref = torch.cat([whole[int(cu[i]) + c:int(cu[i]) + n] for i, (c, n) in enumerate(new_rows)])
    table = torch.tensor([c + f + [0] * (6 - len(c) - len(f)) for c, f in zip(cached, fresh)], dtype=torch.int32)
    q_new = torch.cat([q[c:n] for q, (c, n) in zip(qs, new_rows)])
    cu_new = torch.tensor([0, lens[0] - new_rows[0][0], len(q_new)], dtype=torch.int32)
    out = ops_torch.paged_prefill_attention(q_new, k_cache, v_cache, cu_new, table, torch.tensor(lens), 5, 0.3)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
