"""Chunked prefill and mixed prefill+decode steps in the engine (float32, CPU): greedy tokens identical to the whole
prefill and to transformers for chunks of 1 page, 3 pages and odd sizes, with and without the prefix cache; running
sequences decode between a long prompt's chunks; chunked recomputes, n > 1, Quest, a processor method, fp8 pages,
and deterministic mode bitwise."""
from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from checkpoints import hf_greedy, make_checkpoint

from litesys import LLM, SamplingParams
from litesys.attention.sparse.config import SparseConfig
from litesys.engine import engine as engine_module
from litesys.engine.engine import Engine

PS = 4
BASE = dict(device="cpu", dtype=torch.float32, max_seq_len=128, page_size=PS)
WHOLE = 10_000  # a budget no prompt reaches: every prompt prefilled whole
GREEDY = SamplingParams(temperature=0, max_new_tokens=10, ignore_eos=True, repeat_check=False)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models, many tiny ops


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cp") / "m", "qwen3", with_tokenizer=False, vocab_size=1024)


def _rand(n: int, seed: int) -> list[int]:
    return torch.randint(0, 1024, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


SHARED = _rand(6 * PS, 50)
PROMPTS = [_rand(37, 1), _rand(9, 2), SHARED + _rand(26, 3), SHARED + _rand(5, 4), _rand(2 * PS, 5)]


class Log:
    """The engine's steps: ("decode", batch) and ("prefill", tokens prefilled this step, per item)."""

    def __init__(self, monkeypatch):
        self.steps: list[tuple] = []
        decode, layout = Engine._decode, engine_module.prefill_layout

        def logged_decode(eng):
            self.steps.append(("decode", len(eng.running)))
            decode(eng)

        def logged_layout(*args, **kw):
            out = layout(*args, **kw)
            self.steps.append(("prefill", out[2].cu_seqlens.diff().tolist()))
            return out
        monkeypatch.setattr(Engine, "_decode", logged_decode)
        monkeypatch.setattr(engine_module, "prefill_layout", logged_layout)

    def chunks(self) -> list[int]:
        return [n for kind, v in self.steps if kind == "prefill" for n in v]

    def mixed(self) -> int:
        """Decode steps taken while a long prompt was between its chunks (a decode right before a chunk)."""
        return sum(1 for a, b in zip(self.steps, self.steps[1:]) if a[0] == "decode" and b[0] == "prefill")


def tokens(outs) -> list[list[list[int]]]:
    return [[s.token_ids for s in o.samples] for o in outs]


def run(ckpt, prompts, budget: int, params=GREEDY, **kw):
    llm = LLM(str(ckpt), **{**BASE, "max_num_batched_tokens": budget, **kw})
    return tokens(llm.generate(prompts, params)), llm


@pytest.fixture(scope="module")
def reference(ckpt):
    return [[r] for r in hf_greedy(ckpt, PROMPTS, GREEDY.max_new_tokens)]


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("budget", [PS, 3 * PS, 7, 23])
def test_chunked_equals_whole_prefill_and_transformers(ckpt, reference, monkeypatch, budget, cache):
    whole, _ = run(ckpt, PROMPTS, WHOLE, enable_prefix_cache=cache)
    log = Log(monkeypatch)
    out, llm = run(ckpt, PROMPTS, budget, enable_prefix_cache=cache)
    assert out == whole == reference
    chunks = log.chunks()
    assert max(chunks) <= budget and sum(chunks) == sum(map(len, PROMPTS)) - llm.engine.counts.prefix_hit_tokens
    assert len(chunks) > len(PROMPTS)  # prompts longer than the budget went in several chunks
    assert log.mixed() > 0  # and the sequences already running kept decoding meanwhile
    if cache:
        assert llm.engine.counts.prefix_hit_tokens > 0


def test_mixed_steps_decode_every_step_of_a_long_prefill(ckpt, monkeypatch):
    """Two short prompts run; a 90-token prompt arrives with a budget of 8: each of its 12 chunks comes right after
    a decode step of the running pair; tokens equal the unmixed run (one whole prefill) and transformers."""
    prompts = [_rand(5, 10), _rand(6, 11), _rand(90, 12)]
    params = SamplingParams(temperature=0, max_new_tokens=20, ignore_eos=True, repeat_check=False)
    whole, _ = run(ckpt, prompts, WHOLE, params)
    log = Log(monkeypatch)
    out, _ = run(ckpt, prompts, 8, params)
    assert out == whole == [[r] for r in hf_greedy(ckpt, prompts, 20)]
    long_at = [i for i, (kind, v) in enumerate(log.steps) if kind == "prefill" and v and v[0] == 8]
    assert len(long_at) == 11  # 11 chunks of 8, then its last of 2
    assert all(log.steps[i - 1] == ("decode", 2) for i in long_at[1:])  # every later chunk: a mixed step


def test_chunked_recompute_and_samples(ckpt, monkeypatch):
    """A small pool without swap: sequences are preempted and recomputed (prompt + generated, longer than the budget:
    chunked too); a chunk short of pages waits while the others decode; n = 3 samples of a chunked prompt share its
    full pages and copy its partly filled last one."""
    from litesys.engine.scheduler import Scheduler

    prompts = [_rand(30, 20 + i) for i in range(3)] + [SHARED + _rand(3, 30)]
    params = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True, repeat_check=False, n=3)
    small = dict(num_kv_pages=40, swap_space_gb=0)
    whole, _ = run(ckpt, prompts, WHOLE, params, enable_prefix_cache=False)
    log, admit, waits = Log(monkeypatch), Scheduler.admit, []
    monkeypatch.setattr(Scheduler, "admit", lambda self, *a: (out := admit(self, *a)) or waits.append(self.partial)
                        or out)
    out, llm = run(ckpt, prompts, 7, params, **small)
    assert out == whole and all(len(set(map(tuple, s))) == 1 for s in out)
    assert llm.engine.stats["preemptions"] > 0 and max(log.chunks()) == 7
    assert any(w is not None for w in waits)  # a half-prefilled prompt waited for pages
    assert llm.engine.allocator.num_free == llm.kv.num_pages - 1  # every page back (cached ones are evictable)


@pytest.mark.parametrize("method", ["quest", "topk"])
def test_sparse_methods_under_chunking(ckpt, method):
    """Quest's per-page summaries written chunk by chunk equal a whole prefill's (and every cached page's summary
    is its keys' min/max); a processor method; both with replayed recomputes in a small pool."""
    sparse = dict(quest=SparseConfig(quest_topk_blocks=2, quest_block_size=PS, attn_sink=0, attn_layer_skip=[]),
                  topk=SparseConfig(attn_topk=6, attn_local=4, attn_sink=0, attn_layer_skip=[]))[method]
    prompts = PROMPTS[:3]
    params = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True, repeat_check=False, n=2)
    whole, _ = run(ckpt, prompts, WHOLE, params, sparse=sparse)
    out, llm = run(ckpt, prompts, 7, params, sparse=sparse)
    assert out == whole
    tight, llm_tight = run(ckpt, prompts, 7, params, sparse=sparse, num_kv_pages=40, swap_space_gb=0)
    assert tight == whole and llm_tight.engine.stats["preemptions"] > 0
    if method == "quest":
        kv, m, pages = llm.kv, llm.engine.attn.method, sorted(llm.engine.allocator.node_of)
        assert pages
        for layer in range(kv.num_layers):
            k = kv.k[layer][pages]
            assert torch.equal(m.kmin[layer][pages], k.amin(dim=1)) and torch.equal(m.kmax[layer][pages], k.amax(1))


def test_fp8_pages(ckpt):
    """fp8 KV pages with fixed scales (the first prefill would calibrate them on a chunk otherwise): chunks attend to
    the quantised bytes of earlier chunks exactly as a whole prefill attends to its own."""
    outs = []
    for budget in (WHOLE, 7, PS):
        llm = LLM(str(ckpt), **BASE, max_num_batched_tokens=budget, kv_cache_dtype="fp8_e4m3")
        shape = llm.kv.k_scale.shape
        llm.kv.set_scales(torch.full(shape, 0.05), torch.full(shape, 0.02))
        outs.append(tokens(llm.generate(PROMPTS, GREEDY)))
    assert outs[0] == outs[1] == outs[2]


def test_deterministic_mode_is_bitwise(ckpt):
    """deterministic=True: every sequence's logits at every step, chunked (7 and 1 page) and mixed, equal the whole
    prefill's bit for bit."""
    runs = []
    for budget in (WHOLE, 7, PS):
        llm = LLM(str(ckpt), **BASE, max_num_batched_tokens=budget, deterministic=True)
        eng, rows = llm.engine, defaultdict(list)
        step = eng.sampler.step

        def spy(logits, sl, eng=eng, rows=rows, step=step):
            for i, b in enumerate(range(sl.start, sl.stop)):
                rows[eng.running[b].req.index].append(logits[i].clone())
            return step(logits, sl)
        eng.sampler.step = spy
        llm.generate(PROMPTS, GREEDY)
        runs.append({k: v[:GREEDY.max_new_tokens] for k, v in rows.items()})
    assert sorted(runs[0]) == list(range(len(PROMPTS))) and all(len(v) == 10 for v in runs[0].values())
    for other in runs[1:]:
        assert other.keys() == runs[0].keys()
        assert all(torch.equal(a, b) for k in runs[0] for a, b in zip(runs[0][k], other[k], strict=True))


def test_memory_profile_runs_the_largest_mixed_step(ckpt, monkeypatch):
    """The planner's profile (GPU only in the engine; here its steps on CPU): a decode batch of max_num_seqs rows
    over the full page-table width, then a paged prefill chunk of max_num_batched_tokens."""
    from litesys.engine import build

    llm = LLM(str(ckpt), **BASE)
    model, seen = llm.engine.model, []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda ids, pos, meta, attn: seen.append(meta) or forward(ids, pos, meta,
                                                                                                      attn))
    build._largest_step(model, model.cfg, torch.device("cpu"), torch.float32, torch.float32, PS, 48, 6, 33)
    decode, chunk = seen
    assert not decode.is_prefill and decode.page_table.shape == (6, 33) and len(decode.slot_mapping) == 6
    assert chunk.is_prefill and chunk.max_seqlen == 48 and chunk.page_table is not None
    assert chunk.cu_seqlens.tolist() == [0, 48] and chunk.lengths.tolist() == [48]


def test_quest_summaries_of_a_chunked_prompt_equal_the_whole_prefill(ckpt):
    """One 50-token prompt alone (its pages 1..13 in every run, the last partly filled): after chunks of 7 tokens or
    one page, every page's summary is its filled keys' min/max and (deterministic mode: the same K bits) equals the
    whole prefill's, bit for bit."""
    quest = SparseConfig(quest_topk_blocks=2, quest_block_size=PS, attn_sink=0, attn_layer_skip=[])
    one = SamplingParams(temperature=0, max_new_tokens=1, ignore_eos=True, repeat_check=False)
    pages = list(range(1, 14))
    summaries = []
    for budget in (WHOLE, 7, PS):
        _, llm = run(ckpt, [PROMPTS[2]], budget, one, sparse=quest, enable_prefix_cache=False, deterministic=True)
        m, k = llm.engine.attn.method, llm.kv.k[:, pages].flatten(1, 2)[:, :50]  # [layers, 50 positions, Hkv, D]
        ends = list(range(0, 50, PS))
        assert torch.equal(m.kmin[:, pages], torch.stack([k[:, a:a + PS].amin(1) for a in ends], 1))
        assert torch.equal(m.kmax[:, pages], torch.stack([k[:, a:a + PS].amax(1) for a in ends], 1))
        summaries.append((m.kmin[:, pages].clone(), m.kmax[:, pages].clone()))
    assert summaries[0][0].isfinite().all()
    for lo, hi in summaries[1:]:
        assert torch.equal(lo, summaries[0][0]) and torch.equal(hi, summaries[0][1])
