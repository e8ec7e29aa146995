"""The engine's rooms: EngineConfig, lazy requests, per-run repetition groups, packed slot placement, the pure KV
plan, and the engine core's size."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from checkpoints import make_checkpoint

from litesys import LLM, SamplingParams
from litesys.engine.config import EngineConfig
from litesys.engine.memory import CPU_KV_BYTES, GpuMemory, plan_kv_pages
from litesys.engine.slots import SCALARS, Slots
from litesys.kernels.ref import step as ref_step  # the stop checks' torch path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(device="cpu", dtype=torch.float32, max_seq_len=64, page_size=4, max_num_seqs=2)
GREEDY = SamplingParams(temperature=0, max_new_tokens=6, ignore_eos=True, repeat_check=False)
PROMPTS = [[5 + i, 6, 7 + 2 * i] for i in range(7)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(make_checkpoint(tmp_path_factory.mktemp("rooms") / "m", "qwen3", with_tokenizer=False,
                               vocab_size=512, num_hidden_layers=1, hidden_size=32, intermediate_size=64, head_dim=16))


# ---- EngineConfig ------------------------------------------------------------------------------------------
def test_every_field_has_help_and_flag_metadata():
    names = [f.name for f in dataclasses.fields(EngineConfig)]
    assert names[:6] == ["device", "dtype", "max_seq_len", "model_class", "gpu_memory_utilization", "page_size"]
    assert {"swap_space_gb", "kv_cache_dtype", "deterministic", "tensor_parallel_size"} <= set(names)
    for f in dataclasses.fields(EngineConfig):
        assert set(f.metadata) == {"help", "flag"} and f.metadata["help"] and "\n" not in f.metadata["help"]
    flags = {f.name: f.metadata["flag"] for f in dataclasses.fields(EngineConfig)}
    assert flags["max_seq_len"] == "--max_len" and flags["tensor_parallel_size"] == "--tp"
    assert flags["page_size"] is None and EngineConfig().deterministic is False


def test_config_is_frozen_validated_once_and_overridable(ckpt):
    c = EngineConfig(device="cpu", max_seq_len=64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.max_seq_len = 3
    for bad, name in ((dict(page_size=0), "page_size"), (dict(swap_space_gb=-1), "swap_space_gb"),
                      (dict(kv_scales={"k_scale": 1.0}), "kv_scales"), (dict(deterministic=1), "deterministic")):
        with pytest.raises(ValueError, match=name) as e:
            EngineConfig(**bad)
        assert "\n" not in str(e.value)
    with pytest.raises(TypeError, match="unknown LLM argument 'max_len'.*max_seq_len"):
        LLM(ckpt, c, max_len=5)
    by_config = LLM(ckpt, EngineConfig(**SETTINGS))
    by_kwargs = LLM(ckpt, **SETTINGS)
    mixed = LLM(ckpt, EngineConfig(**{**SETTINGS, "max_seq_len": 32}), max_seq_len=64)  # keywords override
    assert by_config.config == by_kwargs.config == mixed.config
    outs = [[o.token_ids for o in m.generate(PROMPTS[:3], GREEDY)] for m in (by_config, by_kwargs)]
    assert outs[0] == outs[1]


# ---- lazy requests -----------------------------------------------------------------------------------------
def test_an_iterator_is_pulled_only_when_a_slot_is_free(ckpt):
    llm = LLM(ckpt, **SETTINGS)
    listed = llm.generate(PROMPTS, GREEDY)
    finished, pulls = [], []

    def prompts():
        for i, p in enumerate(PROMPTS):
            pulls.append((i, len(finished)))
            yield p

    llm2 = LLM(ckpt, **SETTINGS)  # a fresh run seed counter: the same seeds as ``listed``
    outs = llm2.generate(prompts(), GREEDY, on_finish=lambda i, o: finished.append(i))
    assert [o.token_ids for o in outs] == [o.token_ids for o in listed]
    assert sorted(finished) == list(range(len(PROMPTS)))
    # request i is pulled only once fewer than max_num_seqs=2 of the earlier ones are unfinished
    assert all(i - done < 2 for i, done in pulls), pulls
    assert pulls[-1][1] >= len(PROMPTS) - 2  # so most were pulled after others finished


def test_an_iterator_may_pair_prompts_with_their_params(ckpt):
    llm = LLM(ckpt, **SETTINGS)
    short = SamplingParams(**{**GREEDY.__dict__, "max_new_tokens": 2})
    outs = llm.generate(iter([(PROMPTS[0], short), PROMPTS[1]]), GREEDY)
    assert [len(o.token_ids) for o in outs] == [2, 6]
    with pytest.raises(ValueError, match="with an iterator of prompts, sampling_params must be one"):
        llm.generate(iter(PROMPTS), [GREEDY] * len(PROMPTS))
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        llm.generate(iter([PROMPTS[0], []]), GREEDY)
    assert llm.engine.running == [] and llm.engine.allocator.num_free == llm.kv.num_pages - 1


# ---- repetition groups belong to one run -------------------------------------------------------------------
def test_a_run_without_the_repetition_stop_runs_none_of_its_checks(ckpt, monkeypatch):
    llm = LLM(ckpt, **SETTINGS)
    calls = []
    real = ref_step.repetition_hits
    monkeypatch.setattr(ref_step, "repetition_hits", lambda *a: calls.append(1) or real(*a))
    checked = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True, repeat_check_window=8,
                             repeat_block_size=2)
    llm.generate(PROMPTS[:2], checked)
    assert calls and llm.engine.sampler.rep_groups == [(8, 2, 3)]
    calls.clear()
    llm.generate(PROMPTS[:2], GREEDY)  # repeat_check=False
    assert calls == [] and llm.engine.sampler.rep_groups == []


# ---- slots: one packed copy --------------------------------------------------------------------------------
def test_place_writes_every_column_pages_and_tokens_exactly():
    slots = Slots(4, 5, 16, torch.device("cpu"))
    slots.ints.fill_(-7)
    cols = dict(seq_len=[7, 3], last_token=[12, 0], gen_len=[2, 0], max_gen=[9, 4], finish_code=[0, 0],
                rep_group=[1, -1], ignore_eos=[True, False], temperature=[0.7, 0.0], top_k=[20, 0],
                top_p=[0.95, 1.0], min_p=[0.05, 0.0], seed=[2**62 + 5, 3], seed_hash=[7, 2**40])
    assert set(cols) == set(SCALARS)
    slots.place(1, cols, [[4, 9], [2]], [[11, 12], []])
    for name, vals in cols.items():
        got = getattr(slots, name)[1:3].tolist()
        assert got == (pytest.approx(vals) if isinstance(vals[0], float) else vals), name
    assert slots.temperature[1].item() == torch.tensor(0.7).item()  # the float's bits, not a rounded copy
    assert slots.page_table[1:3].tolist() == [[4, 9, 0, 0, 0], [2, 0, 0, 0, 0]]
    assert slots.generated[1, :2].tolist() == [11, 12] and slots.seq_len_host[1:3].tolist() == [7, 3]
    assert (slots.ints[:, [0, 3]] == -7).all()  # other slots untouched


# ---- the KV plan is a pure function ------------------------------------------------------------------------
def test_plan_kv_pages_from_shapes_and_measured_bytes():
    MiB = 1 << 20
    assert plan_kv_pages(MiB, 16, 1 << 20, 1024, 0.9, None) == CPU_KV_BYTES // MiB  # CPU: a fixed pool
    assert plan_kv_pages(MiB, 16, 64, 2, 0.9, None) == 2 * (4 + 1) + 1  # capped at every slot at full length
    gpu = GpuMemory(total=1000 * MiB, others=100 * MiB, held=200 * MiB, activations=50 * MiB, free_now=700 * MiB)
    assert plan_kv_pages(2 * MiB, 16, 1 << 20, 1024, 0.9, gpu) == (900 - 100 - 200 - 50) // 2
    with pytest.raises(ValueError, match="but only 0.10 GiB of GPU memory is free now"):
        plan_kv_pages(2 * MiB, 16, 1 << 20, 1024, 0.9, dataclasses.replace(gpu, free_now=100 * 2**20 + 5))
    with pytest.raises(ValueError, match="no GPU memory left for the KV cache"):
        plan_kv_pages(2 * MiB, 16, 1 << 20, 1024, 0.3, gpu)


# ---- the engine core stays small ---------------------------------------------------------------------------
CORE = [f"litesys/engine/{n}.py" for n in ("engine", "scheduler", "slots", "sampler", "stops", "sequence",
                                          "cuda_graph", "memory", "swap", "replay", "build", "config")]
CORE += [f"litesys/attention/{n}.py" for n in ("backend", "kv_cache", "meta")]


def test_engine_core_is_at_most_1300_lines():
    sizes = {p: len((ROOT / p).read_text().splitlines()) for p in CORE if (ROOT / p).exists()}
    assert len(sizes) >= 12, sorted(sizes)
    assert sum(sizes.values()) <= 1300, sorted(sizes.items(), key=lambda kv: -kv[1])
