"""An ``LLM`` survives exceptions inside ``generate``, frees itself without the garbage collector, and reports
progress at the engine's checks."""
from __future__ import annotations

import gc
import re
import weakref

import pytest
import torch
from checkpoints import make_checkpoint

from litesys import LLM, SamplingParams
from litesys.engine.progress import ProgressBar, ProgressStats

# page_size 4 and 12 pages: six sequences of up to 32 tokens cannot all fit, so runs preempt and recompute
SETTINGS = dict(device="cpu", dtype=torch.float32, max_seq_len=40, page_size=4, num_kv_pages=12)
PROMPTS = [[11, 12, 13, 14, 15], [21, 22, 23], [31, 32, 33, 34, 35, 36, 37, 38, 39]]
# sampled (no per-request seed: the run seed and the request counter decide), non-default repetition settings
PARAMS = SamplingParams(temperature=0.8, top_k=50, max_new_tokens=24, n=2, ignore_eos=True,
                        repeat_check_window=16, repeat_block_size=4)


class Boom(Exception):
    pass


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # a small vocabulary and no tokenizer keep it fast; text-prompt errors are tested in test_engine_api.py
    return make_checkpoint(tmp_path_factory.mktemp("rec") / "m", "qwen3", with_tokenizer=False, vocab_size=1024,
                           num_hidden_layers=1, hidden_size=32, intermediate_size=64, head_dim=16)


def tokens(outs) -> list[list[list[int]]]:
    return [[s.token_ids for s in o.samples] for o in outs]


@pytest.fixture(scope="module")
def reference(ckpt):
    """What a fresh LLM generates first (and that the run really preempts)."""
    llm = LLM(str(ckpt), **SETTINGS)
    outs = llm.generate(PROMPTS, PARAMS)
    assert llm.engine.stats["preemptions"] > 0
    return tokens(outs)


def assert_clean(llm: LLM) -> None:
    eng = llm.engine
    assert eng.running == [] and not eng.scheduler.waiting and eng.sampler.rep_groups == []
    assert eng.allocator.num_free == eng.kv.num_pages - 1 and sum(eng.allocator.refcount) == 0
    assert int(eng.slots.gen_len.abs().sum()) == 0 and int(eng.slots.finish_code.abs().sum()) == 0


def _raise_in_on_finish(llm):
    def on_finish(i, out):
        raise Boom("callback")
    return dict(on_finish=on_finish), Boom


def _ctrl_c_mid_run(llm):
    calls = []

    def on_progress(stats):
        calls.append(stats)
        if len(calls) == 5:  # several decode steps in: sequences running, none finished
            assert stats.finished == 0 and stats.running > 0
            raise KeyboardInterrupt
    return dict(on_progress=on_progress), KeyboardInterrupt


def _tokenizer_fails(llm):
    def decode(ids):
        raise Boom("tokenizer")
    llm.decode = decode  # the first finished sample's text: inside the engine loop
    llm._has_tokenizer = lambda: True
    return {}, Boom


@pytest.mark.parametrize("failure", [_raise_in_on_finish, _ctrl_c_mid_run, _tokenizer_fails])
def test_generate_after_an_exception_matches_a_fresh_llm(ckpt, reference, failure):
    llm = LLM(str(ckpt), **SETTINGS)
    kwargs, exc = failure(llm)
    with pytest.raises(exc):
        llm.generate(PROMPTS, PARAMS, **kwargs)
    llm.__dict__.pop("decode", None)
    llm.__dict__.pop("_has_tokenizer", None)
    assert_clean(llm)
    assert tokens(llm.generate(PROMPTS, PARAMS)) == reference  # same seeds: a failed call does not count
    assert tokens(llm.generate(PROMPTS, PARAMS)) != reference  # a completed one does (next request indices)


def test_nan_temperature_is_refused_and_the_llm_still_works(ckpt, reference):
    llm = LLM(str(ckpt), **SETTINGS)
    bad = SamplingParams(max_new_tokens=4)
    object.__setattr__(bad, "temperature", float("nan"))  # forced past the frozen dataclass: generate validates
    with pytest.raises(ValueError, match="temperature must be a finite number") as e:
        llm.generate(PROMPTS, [PARAMS, PARAMS, bad])
    assert "\n" not in str(e.value)
    assert_clean(llm)
    assert tokens(llm.generate(PROMPTS, PARAMS)) == reference


def test_del_frees_the_engine_without_the_garbage_collector(ckpt):
    gc.collect()
    gc.disable()  # a reference cycle would keep everything below alive until a collection
    try:
        llm = LLM(str(ckpt), **SETTINGS)
        seen = []
        llm.generate(PROMPTS, PARAMS, progress=True, on_finish=lambda i, o: seen.append(i),
                     on_progress=seen.append)
        try:
            llm.generate(PROMPTS, PARAMS, on_finish=_raise_in_on_finish(llm)[0]["on_finish"])
        except Boom:
            pass
        refs = [weakref.ref(x) for x in (llm, llm.engine, llm.model, llm.kv, llm.attn, llm.engine.slots,
                                         llm.kv.k, llm.model.embed)]
        del llm
        alive = [r() for r in refs if r() is not None]
        assert not alive, f"kept alive by a reference cycle: {[type(x).__name__ for x in alive]}"
    finally:
        gc.enable()


def test_close_and_context_manager_free_and_refuse_later_use(ckpt):
    with LLM(str(ckpt), **SETTINGS) as llm:
        out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_new_tokens=3, ignore_eos=True))
        model = weakref.ref(llm.model)
    assert len(out[0].token_ids) == 3
    assert model() is None and llm.engine is None and llm.kv is None
    for use in (lambda: llm.generate([[1, 2, 3]]), lambda: llm.encode("hi"), lambda: llm.tokenizer):
        with pytest.raises(RuntimeError, match="this LLM is closed.*create a new") as e:
            use()
        assert "\n" not in str(e.value)
    llm.close()  # idempotent


def test_progress_tokens_grow_before_any_sample_finishes(ckpt):
    llm = LLM(str(ckpt), **SETTINGS)
    seen: list[ProgressStats] = []
    outs = llm.generate(PROMPTS, PARAMS, on_progress=seen.append)
    gen = [s.generated for s in seen]
    assert gen == sorted(gen) and len(seen) > 10
    early = [s for s in seen if s.finished == 0]
    assert len(early) >= 5 and len({s.generated for s in early}) == len(early)  # strictly increasing
    assert all(s.budget == 2 * 24 * 3 and s.samples == 6 for s in seen)
    last = seen[-1]
    assert last.finished == 6 and last.running == 0 and last.budget_left == 0
    assert last.generated == sum(len(t) for o in outs for t in (s.token_ids for s in o.samples)) == 6 * 24
    assert all(s.budget_done >= s.generated for s in seen)


def test_progress_bar_shows_engine_tok_s_batch_and_token_eta():
    now = [100.0]
    bar = ProgressBar(8, "generate", "req", enabled=False, clock=lambda: now[0])
    now[0] = 105.0  # 5 s in: 500 tokens -> 100 tok/s; 1,500 - 700 = 800 tokens left -> 8 s
    bar.update(ProgressStats(generated=500, running=4, finished=0, samples=8, budget=1500, budget_done=700))
    assert bar.postfix == "tok/s=100 batch=4 eta=00:08"
    bar.done(1, extra="problems=1/4")
    assert bar.postfix == "problems=1/4 tok/s=100 batch=4 eta=00:08"
    now[0] = 105.2  # redraws are throttled, the latest stats are kept
    bar.update(ProgressStats(generated=600, running=3, finished=1, samples=8, budget=1500, budget_done=900))
    assert bar.postfix.endswith("eta=00:08")
    bar.close()
    assert bar.postfix == "problems=1/4 tok/s=115 batch=3 eta=00:05"


def test_generate_progress_bar_tok_s_is_not_zero_at_the_end(ckpt, monkeypatch, capsys):
    monkeypatch.setenv("LITESYS_NO_PROGRESS", "0")
    llm = LLM(str(ckpt), **SETTINGS)
    llm.generate(PROMPTS, PARAMS, progress=True)
    err = capsys.readouterr().err
    assert "3/3 req" in err and "batch=" in err and "eta=" in err
    assert int(re.findall(r"tok/s=(\d+)", err)[-1]) > 0


def test_eval_bar_ticks_per_sample_with_the_engines_numbers(ckpt, tmp_path, monkeypatch, capsys):
    from litesys.eval.runner import Job, WorkItem, read_samples, run_shard

    monkeypatch.setenv("LITESYS_NO_PROGRESS", "0")
    items = [WorkItem(f"p{i}", t, prompt, SamplingParams(temperature=0.8, max_new_tokens=24, ignore_eos=True,
                                                          seed=10 * i + t), {})
             for i, prompt in enumerate(PROMPTS) for t in range(2)]
    run_shard(Job(items, lambda device: LLM(str(ckpt), **SETTINGS), desc="evalbar"), items, tmp_path, 0, "cpu")
    err = capsys.readouterr().err
    assert len(read_samples(tmp_path)) == 6
    assert "evalbar" in err and "6/6 sample" in err and "problems=3/3" in err and "batch=" in err
    assert int(re.findall(r"tok/s=(\d+)", err)[-1]) > 0 and "eta=" in err
