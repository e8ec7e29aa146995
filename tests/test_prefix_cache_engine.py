"""The prefix cache in the engine (float32, CPU): greedy tokens identical with and without it, equal to
transformers, for prompts sharing 0, 1 and many pages, across evictions and preemption, with n > 1, with Quest."""
from __future__ import annotations

import pytest
import torch
from checkpoints import hf_greedy, make_checkpoint

from litesys import LLM, SamplingParams
from litesys.attention.sparse.config import SparseConfig
from litesys.engine.config import EngineConfig
from litesys.engine.prefix_cache import CachingAllocator
from litesys.engine.progress import ProgressBar

PS = 4
BASE = dict(device="cpu", dtype=torch.float32, max_seq_len=96, page_size=PS)
GREEDY = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True, repeat_check=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one intra-op thread


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("pc") / "m", "qwen3", with_tokenizer=False, vocab_size=1024)


def _rand(n: int, seed: int) -> list[int]:
    return torch.randint(0, 1024, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


SHARED = _rand(5 * PS, 100)  # a 5-page "system prompt"
PROMPTS = {
    "none": [_rand(9, 1), _rand(13, 2), _rand(6, 3)],  # nothing shared
    "one page": [SHARED[:PS] + _rand(7, 4), SHARED[:PS] + _rand(10, 5), SHARED[:PS] + _rand(1, 6)],
    "many pages": [SHARED + _rand(3, 7), SHARED + _rand(9, 8), SHARED, SHARED[:3 * PS],  # whole-page prompts
                   SHARED + _rand(3, 7)],  # a repeat: every full page cached, its last token still prefilled
}


def tokens(outs) -> list[list[list[int]]]:
    return [[s.token_ids for s in o.samples] for o in outs]


def generate(ckpt, prompts, params=GREEDY, calls: int = 1, **kw):
    """The tokens of ``calls`` successive generate calls (the cache persists between them), and the LLM."""
    llm = LLM(str(ckpt), **{**BASE, **kw})
    return [tokens(llm.generate(prompts, params)) for _ in range(calls)], llm


@pytest.mark.parametrize("share", list(PROMPTS))
def test_greedy_equals_uncached_and_transformers(ckpt, share):
    prompts = PROMPTS[share]
    ref = hf_greedy(ckpt, prompts, GREEDY.max_new_tokens)
    (off,), llm_off = generate(ckpt, prompts, enable_prefix_cache=False)
    assert not isinstance(llm_off.engine.allocator, CachingAllocator) and llm_off.engine.counts.prefix_hit_tokens == 0
    # one prompt per prefill step: later prompts find the earlier ones' pages; the second call finds everything
    (first, second), llm = generate(ckpt, prompts, calls=2, max_num_batched_tokens=PS * 6)
    assert off == first == second == [[r] for r in ref]
    c = llm.engine.counts  # the second call's counters
    assert c.prefix_tokens == sum(map(len, prompts))
    assert c.prefix_hit_tokens == sum((len(p) - 1) // PS for p in prompts) * PS  # all but the last token's page


def test_within_one_call_later_prompts_hit(ckpt):
    prompts = PROMPTS["many pages"]
    (out,), llm = generate(ckpt, prompts, max_num_batched_tokens=PS * 6)
    assert out == generate(ckpt, prompts, enable_prefix_cache=False)[0][0]
    # the first prompt computes the 5 shared pages; the next reuse 5, 4 and 2 (whole-page prompts: their last page is
    # prefilled for the logits) and 5
    assert llm.engine.counts.prefix_hit_tokens == (5 + 4 + 2 + 5) * PS


def test_evictions_preemption_and_n_samples(ckpt):
    """A pool too small for the cache and the batch: cached pages are evicted (least recently used first),
    sequences preempted and recomputed (their prompts found in the cache again), n = 3 samples share pages."""
    prompts = [SHARED + _rand(5, 20 + i) for i in range(3)] + [_rand(30, 30 + i) for i in range(3)]
    params = SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True, repeat_check=False, n=3)
    small = dict(num_kv_pages=40, swap_space_gb=0, max_num_batched_tokens=32)
    (off,), _ = generate(ckpt, prompts, params, enable_prefix_cache=False, **small)
    (first,), llm = generate(ckpt, prompts, params, **small)
    alloc = llm.engine.allocator
    assert off == first and all(len(set(map(tuple, s))) == 1 for s in off)  # greedy: 3 equal samples
    assert llm.engine.stats["preemptions"] > 0 and alloc.evictions > 0 and llm.engine.counts.prefix_hit_tokens > 0
    assert alloc.num_free == llm.kv.num_pages - 1 and all(alloc.refcount[p] == 1 for p in alloc.node_of)
    assert sum(alloc.refcount) == alloc.num_cached  # nothing but the cache holds a page after the run


def test_quest_reuses_cached_page_summaries(ckpt):
    """Quest selects 2 pages of many: wrong summaries for cached pages would change the selection. Tokens equal the
    uncached run, and every cached page's summary equals its keys' min/max."""
    quest = SparseConfig(quest_topk_blocks=2, quest_block_size=PS, attn_sink=0, attn_layer_skip=[])
    prompts = PROMPTS["many pages"][:2] + PROMPTS["one page"][:2]
    params = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True, repeat_check=False, n=2)
    (off,), _ = generate(ckpt, prompts, params, sparse=quest, enable_prefix_cache=False)
    (first,), llm = generate(ckpt, prompts, params, sparse=quest, max_num_batched_tokens=PS * 8)
    assert off == first
    kv, method, pages = llm.kv, llm.engine.attn.method, sorted(llm.engine.allocator.node_of)
    assert pages and llm.engine.counts.prefix_hit_tokens > 0
    for layer in range(kv.num_layers):
        k = kv.k[layer][pages]  # [n, page, Hkv, D]: cached pages are full
        assert torch.equal(method.kmin[layer][pages], k.amin(dim=1))
        assert torch.equal(method.kmax[layer][pages], k.amax(dim=1))


def test_hit_rate_in_the_stats_and_the_bar(ckpt):
    llm = LLM(str(ckpt), **BASE, max_num_batched_tokens=PS * 6)
    seen = []
    llm.generate(PROMPTS["many pages"], GREEDY, on_progress=seen.append)
    last = seen[-1]
    assert (last.prefix_hit_tokens, last.prefix_tokens) == ((5 + 4 + 2 + 5) * PS, sum(map(len, PROMPTS["many pages"])))
    assert f"cache={last.prefix_hit_rate:.0%}" in ProgressBar(None, "", "", enabled=False).describe(last)


def test_deterministic_mode_is_bitwise(ckpt, monkeypatch):
    """deterministic=True: every logits row of a cached run equals the uncached run's, bit for bit."""
    from litesys.models.qwen3 import Qwen3ForCausalLM

    rows: list[torch.Tensor] = []
    orig = Qwen3ForCausalLM.compute_logits
    monkeypatch.setattr(Qwen3ForCausalLM, "compute_logits", lambda self, h: rows.append(orig(self, h)) or rows[-1])
    prompts = PROMPTS["many pages"]
    params = SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True, repeat_check=False)
    runs = []
    for cache in (False, True):
        rows.clear()
        # one prompt per step, none chunked (29 tokens at most): both runs take the same steps
        generate(ckpt, prompts, params, deterministic=True, enable_prefix_cache=cache, max_num_batched_tokens=30)
        runs.append(list(rows))
    assert len(runs[0]) == len(runs[1]) and all(torch.equal(a, b) for a, b in zip(*runs))


def test_fp8_pages_are_reused_as_stored(ckpt):
    """fp8 KV pages: the cached rows are gathered as the quantised bytes with the layer's fixed scales."""
    prompts = PROMPTS["many pages"]
    (off,), _ = generate(ckpt, prompts, kv_cache_dtype="fp8_e4m3", enable_prefix_cache=False)
    (first, second), llm = generate(ckpt, prompts, calls=2, kv_cache_dtype="fp8_e4m3", max_num_batched_tokens=PS * 6)
    assert off == first == second and llm.engine.counts.prefix_hit_tokens > 0


def test_the_switch_is_checked_once():
    with pytest.raises(ValueError, match=r"^enable_prefix_cache must be True or False, got 'yes' \(str\)$"):
        EngineConfig(enable_prefix_cache="yes")
    assert EngineConfig().enable_prefix_cache is True
