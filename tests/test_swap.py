"""Preemption keeps a sequence's state: pages swapped to host memory and back byte for byte (CPU, fp32).

With a KV pool small enough to force preemptions, dense attention and every sparse method give the tokens of a
run whose pool never preempts; with no swap space the fallback (recompute, the generated positions through the
decode path of the sequence's method) gives them too, and the plain dense recompute the engine did before does
not (the issue's failure: the comparison can fail).
"""
from __future__ import annotations

import pytest
import sparse_cases
import torch
from checkpoints import make_checkpoint
from sparse_cases import PAGE

from litesys import LLM, SamplingParams
from litesys.attention.kv_cache import KVCache
from litesys.attention.sparse import SparseConfig
from litesys.engine.engine import Engine
from litesys.engine.swap import SwapSpace, paged_tensors
from litesys.kernels.common import to_transposed_pages

VOCAB = 1024
METHODS = {"dense": None, **sparse_cases.METHODS}
GREEDY = SamplingParams(temperature=0, max_new_tokens=40, ignore_eos=True, repeat_check=False)
SAMPLED = SamplingParams(temperature=0.8, max_new_tokens=40, ignore_eos=True, repeat_check=False, seed=3)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(make_checkpoint(tmp_path_factory.mktemp("swap") / "m", "qwen3", with_tokenizer=False,
                               vocab_size=VOCAB, num_attention_heads=4, num_key_value_heads=2, head_dim=16))


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (20, 12, 26)]


def _run(path: str, method: str, pages: int, params: SamplingParams, swap_gb: float = 1.0) -> tuple[list, dict]:
    kw = METHODS[method]
    llm = LLM(path, device="cpu", dtype=torch.float32, max_seq_len=72, page_size=PAGE, num_kv_pages=pages,
              sparse=None if kw is None else SparseConfig(**kw), swap_space_gb=swap_gb)
    outs = llm.generate(_prompts(), params)
    swap = llm.engine.swap.stats if llm.engine.swap is not None else {}
    return [o.token_ids for o in outs], {**llm.engine.stats, **swap}


@pytest.fixture(scope="module")
def reference(ckpt):
    """Tokens of a pool that never preempts."""
    out = {}
    for method in METHODS:
        for name, params in (("greedy", GREEDY), ("sampled", SAMPLED)):
            out[method, name], stats = _run(ckpt, method, 200, params)
            assert stats["preemptions"] == 0
    return out


@pytest.mark.parametrize("method", list(METHODS))
def test_swapped_preemption_keeps_tokens(ckpt, reference, method):
    for name, params in (("greedy", GREEDY), ("sampled", SAMPLED)):
        tokens, stats = _run(ckpt, method, 22, params)
        assert stats["preemptions"] > 0 and stats["swapped_in"] == stats["swapped_out"] == stats["preemptions"]
        assert tokens == reference[method, name], f"{method} ({name}) changed after a swapped preemption"


def test_recompute_fallback_uses_the_sparse_decode_path(ckpt, reference, monkeypatch):
    for method in METHODS:
        tokens, stats = _run(ckpt, method, 22, GREEDY, swap_gb=0)
        assert stats["preemptions"] > 0 and "swapped_out" not in stats
        assert tokens == reference[method, "greedy"], f"{method}: recompute changed the tokens"
    # the old recompute (dense prefill of the generated tokens) changes sparse methods' tokens
    monkeypatch.setattr(Engine, "_replay_recomputed", lambda self, items, logits: logits)
    changed = [m for m in METHODS if _run(ckpt, m, 22, GREEDY, swap_gb=0)[0] != reference[m, "greedy"]]
    assert "dense" not in changed and len(changed) >= 3, changed


def test_tiny_budget_falls_back_to_recompute(ckpt, reference):
    # room for no sequence's pages: every preemption recomputes (and the tokens stay right)
    tokens, stats = _run(ckpt, "topk", 22, GREEDY, swap_gb=1e-9)
    assert stats["preemptions"] == stats["fallbacks"] > 0 and stats["swapped_out"] == 0
    assert tokens == reference["topk", "greedy"]


@pytest.mark.parametrize("dtype,transposed_v", [(torch.float32, False), (torch.bfloat16, False),
                                                (torch.float8_e4m3fn, False), (torch.float8_e4m3fn, True)])
def test_swap_round_trip_is_byte_exact(dtype, transposed_v):
    kv = KVCache(3, 16, PAGE, 2, 8, torch.float32, "cpu")
    kv.k = torch.randint(0, 256, (3, 16, PAGE, 2, 8), dtype=torch.uint8).view(dtype)  # every bit pattern
    kv.v = torch.randint(0, 256, (3, 16, PAGE, 2, 8), dtype=torch.uint8).view(dtype)
    if transposed_v:  # fp8 V pages as the pool stores them ([..., Hkv, D, page] under the usual shape)
        kv.v = to_transposed_pages(kv.v)

    class Summaries:  # a selector's per-page state, e.g. Quest's key min/max
        summary = torch.randn(3, 16, 2, 8)

        def paged_state(self):
            return [self.summary]

    sel = Summaries()
    tensors = paged_tensors(kv, sel)
    before = [t[:, [3, 5, 7]].view(torch.uint8).clone() for t in tensors()]
    space = SwapSpace(tensors, budget_bytes=1 << 20)
    item = space.swap_out([3, 5, 7])
    assert item is not None and space.used == 3 * space.page_bytes() == item.nbytes
    for t in tensors():
        t.view(torch.uint8).random_(0, 256)  # the pages are reused by others meanwhile
    space.swap_in(item, [10, 2, 9])
    assert space.used == 0
    for t, b in zip(tensors(), before):
        assert torch.equal(t[:, [10, 2, 9]].view(torch.uint8), b)
    assert SwapSpace(tensors, budget_bytes=space.page_bytes() * 2).swap_out([1, 2, 3]) is None  # over budget


def test_negative_swap_space_is_a_one_line_error(ckpt):
    with pytest.raises(ValueError, match="swap_space_gb must be >= 0"):
        LLM(ckpt, device="cpu", dtype=torch.float32, max_seq_len=64, num_kv_pages=32, swap_space_gb=-1)


def _space(slots: int) -> tuple[SwapSpace, KVCache]:
    kv = KVCache(2, 16, PAGE, 2, 8, torch.float32, "cpu")

    class NoState:
        def paged_state(self):
            return []

    space = SwapSpace(paged_tensors(kv, NoState()), budget_bytes=1)
    return SwapSpace(paged_tensors(kv, NoState()), budget_bytes=slots * space.page_bytes()), kv


def test_swaps_reuse_the_pool_allocated_once():
    space, kv = _space(slots=7)
    pool, ptr = space.pool, space.pool.data_ptr()
    assert pool.numel() == 7 * space.page_bytes()  # allocated when built, before any swap
    g = torch.Generator().manual_seed(1)
    held = {}  # name -> (item, bytes of its pages)
    moved, split = 0, False
    for step in range(40):  # out and in in a shifting order: the free slots fragment, sequences span several runs
        if len(held) < 4 and (step % 3 or not held):
            n = int(torch.randint(1, 5, (1,), generator=g))
            pages = torch.randperm(15, generator=g)[:n].add(1).tolist()
            kv.k.view(torch.uint8).random_(0, 256, generator=g)
            kv.v.view(torch.uint8).random_(0, 256, generator=g)
            expect = [t[:, pages].view(torch.uint8).clone() for t in (kv.k, kv.v)]
            item = space.swap_out(pages)
            if item is None:  # full pool: the caller recomputes
                assert space.slots.num_free < n
                continue
            held[step], moved = (item, expect), moved + n
            split |= any(b != a + 1 for a, b in zip(item.slots, item.slots[1:]))
        else:
            key = min(held) if step % 2 else max(held)
            item, expect = held.pop(key)
            pages = torch.randperm(15, generator=g)[:item.num_pages].add(1).tolist()
            space.swap_in(item, pages)
            assert all(torch.equal(t[:, pages].view(torch.uint8), e) for t, e in zip((kv.k, kv.v), expect))
    assert moved > 3 * 7 and space.stats["fallbacks"] > 0 and split  # far more pages than the pool holds
    assert space.pool is pool and pool.data_ptr() == ptr and pool.numel() == 7 * space.page_bytes()


def test_full_pool_recomputes_and_a_pool_too_large_is_a_one_line_error(ckpt, reference):
    page = 2 * 2 * PAGE * 2 * 16 * 4  # K and V, 2 layers, PAGE slots, 2 KV heads of 16 fp32
    # 12 slots, room for one preempted sequence (9-10 pages): the preemptions that find the pool full recompute
    tokens, stats = _run(ckpt, "dense", 22, GREEDY, swap_gb=12 * page / 2**30)
    assert stats["swapped_out"] > 0 and stats["fallbacks"] > 0 and stats["swapped_in"] == stats["swapped_out"]
    assert tokens == reference["dense", "greedy"]
    with pytest.raises(ValueError, match=r"^swap_space_gb=1e\+09: cannot allocate .* lower it"):
        LLM(ckpt, device="cpu", dtype=torch.float32, max_seq_len=72, page_size=PAGE, num_kv_pages=22,
            swap_space_gb=1e9)
