"""The one-function decode step (``Engine.decode_step``: forward, sampler, stop checks and bookkeeping over device
state, what one CUDA graph holds) against an eager reference written stage by stage with the stop checks in plain
Python: token for token, greedy and sampled with mixed per-row params, refills and preemption, dense and Quest, run
as is (CPU) and at the padded batch and length buckets a CUDA graph would replay; and it never reads the device."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from checkpoints import make_checkpoint

from litesys import LLM, SamplingParams
from litesys.attention.meta import AttnMeta
from litesys.attention.sparse import SparseConfig
from litesys.engine import cuda_graph
from litesys.engine.cuda_graph import DecodeGraphs
from litesys.engine.sampler import LENGTH, REPETITION, RUNNING, STOP, SamplingTensors, sample, seed_hash

# check_every=3: finished rows run up to two more steps before the host collects them
SETTINGS = dict(device="cpu", dtype=torch.float32, max_seq_len=64, page_size=4, max_num_seqs=6, check_every=3)
SAMPLED = SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=40, repeat_check=False)
MIXED = [SAMPLED, SamplingParams(temperature=0, max_new_tokens=30), dataclasses.replace(SAMPLED, min_p=0.2, top_k=0),
         SamplingParams(temperature=1.0, top_p=0.8, max_new_tokens=25, ignore_eos=True, repeat_check_window=8,
                        repeat_block_size=2, n=2),
         dataclasses.replace(SAMPLED, temperature=0.9, top_k=5, max_new_tokens=33)]
CASES = {"greedy": [SamplingParams(temperature=0, max_new_tokens=40, ignore_eos=True)] * 5, "sampled": [SAMPLED] * 5,
         "mixed": MIXED}
QUEST = SparseConfig(quest_topk_blocks=2, quest_block_size=4)


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one intra-op thread


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    # eos 7 is in the vocabulary's likely range, so some samples stop early
    return str(make_checkpoint(tmp_path_factory.mktemp("step") / "m", "qwen3", with_tokenizer=False, vocab_size=96,
                               num_hidden_layers=2, hidden_size=32, intermediate_size=64, head_dim=16,
                               eos_token_id=7))


def prompts(n: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(3)
    return [torch.randint(8, 96, (int(k),), generator=g).tolist() for k in torch.randint(3, 14, (n,), generator=g)]


def reference_step(eng, B: int, max_len: int) -> None:
    """A decode step as separate stages over the live rows 0..B-1: forward, lengths, sample, then append, length,
    EOS and repetition checks row by row in Python (independent of ``Sampler.step``)."""
    st, ps, rows = eng.slots, eng.page_size, torch.arange(B)
    pos = st.seq_len[:B].clone()
    slot = st.page_table[rows, pos // ps].long() * ps + pos % ps
    meta = AttnMeta(False, slot, ps, eng.attn.num_q_heads, eng.attn.num_kv_heads, page_table=st.page_table[:B],
                    lengths=(pos + 1).int(), max_len=max_len, seq_ids=st.seed[:B].clone())
    logits = eng.model.compute_logits(eng.model.forward(st.last_token[:B].clone(), pos, meta, eng.attn))
    st.seq_len[:B] += 1
    s = eng.sampler
    params = SamplingTensors(*(getattr(st, n)[:B].clone() for n in ("temperature", "top_k", "top_p", "min_p")),
                             seed_hash(st.seed[:B]))
    toks = sample(logits, params, st.gen_len[:B].clone(), s.all_greedy, s.need_full_sort, s.max_top_k).tolist()
    eos = set(s.eos.tolist())
    for b, tok in enumerate(toks):
        st.last_token[b] = tok
        if int(st.finish_code[b]) != RUNNING:
            continue
        n = int(st.gen_len[b])
        st.generated[b, n] = tok
        st.gen_len[b] = n = n + 1
        p = eng.running[b].req.params
        gen = st.generated[b, :n].tolist()
        code = RUNNING
        if tok in eos and not p.ignore_eos:
            code = STOP
        elif n >= int(st.max_gen[b]):
            code = LENGTH
        elif p.repeat_check and n >= p.repeat_check_window:
            win, k = gen[n - p.repeat_check_window:], p.repeat_block_size
            hits = sum(win[i:i + k] == win[-k:] for i in range(len(win) - k + 1))
            code = REPETITION if hits >= p.repeat_threshold else RUNNING
        st.finish_code[b] = code


class PaddedSteps(DecodeGraphs):
    """What the CUDA graphs replay, run eagerly (on the CPU too): each step at its graph's padded batch (the
    engine's buckets) and length (written out here: a power-of-two bucket for a raw-logits method, else the cap)."""

    min_len = cuda_graph.GRAPH_MIN_LEN

    def __init__(self, eng):
        super().__init__(eng.slots.max_slots, eng.max_pages * eng.page_size, eng.attn)
        self.keys = set()

    def run(self, step, batch: int, max_len: int, sampler_key: tuple) -> bool:
        bs = min(s for s in self.sizes if s >= batch)
        length = self.max_len
        if self.attn.method.graph_by_length:
            length = min(self.max_len, max(self.min_len, 2 ** math.ceil(math.log2(max_len))))
        self.keys.add((bs, length, sampler_key))
        step(bs, length)
        return True


def generate(ckpt, params, mode: str, sparse=None, **kw):
    llm = LLM(ckpt, **{**SETTINGS, **kw}, sparse=sparse)
    eng = llm.engine
    if mode == "reference":
        eng.decode_step = lambda B, max_len: reference_step(eng, B, max_len)
    elif mode == "padded":
        eng.graphs = PaddedSteps(eng)
    outs = llm.generate(prompts(len(params)) * 2, params * 2)  # more samples than slots: refills
    return [[(s.token_ids, s.finish_reason) for s in o.samples] for o in outs], eng


@pytest.mark.parametrize("case", list(CASES))
def test_one_function_step_equals_the_eager_reference_with_refills_and_preemption(ckpt, case):
    # 24 pages of 4 tokens for up to 6 sequences of up to ~55 tokens: preemptions (recomputed, no swap space)
    kw = dict(num_kv_pages=24, swap_space_gb=0)
    ref, ref_eng = generate(ckpt, CASES[case], "reference", **kw)
    assert ref_eng.stats["preemptions"] > 0
    for mode in ("plain", "padded"):
        got, eng = generate(ckpt, CASES[case], mode, **kw)
        assert got == ref, mode
        assert int(eng.slots.seq_len.abs().sum()) == 0  # padding rows stayed at position 0 (the scratch page)
    assert len({k[0] for k in eng.graphs.keys}) > 2  # the batch went through several padded buckets
    if case == "mixed":
        assert {r for s in ref for _, r in s} >= {"stop", "length"}


def test_quest_step_equals_the_reference_at_length_buckets_with_swap(ckpt, monkeypatch):
    monkeypatch.setattr(PaddedSteps, "min_len", 16)  # length buckets 16, 32, 64 and the cap within max_seq_len
    kw = dict(num_kv_pages=24, swap_space_gb=1)
    ref, ref_eng = generate(ckpt, MIXED, "reference", sparse=QUEST, **kw)
    assert ref_eng.stats["preemptions"] > 0
    got, eng = generate(ckpt, MIXED, "padded", sparse=QUEST, **kw)
    assert got == ref
    assert len({k[1] for k in eng.graphs.keys}) >= 2  # Quest's raw shapes follow max_len: graphs per length bucket


def test_the_step_never_reads_the_device(ckpt, monkeypatch):
    llm = LLM(ckpt, **SETTINGS, num_kv_pages=24, swap_space_gb=0)
    eng, inside, steps = llm.engine, [False], []
    real = eng.decode_step

    def forbidden(name):
        orig = getattr(torch.Tensor, name)

        def guard(self, *a, **k):
            if inside[0]:
                raise AssertionError(f"Tensor.{name} inside the decode step: a host sync")
            return orig(self, *a, **k)
        return guard

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden(name))

    def guarded(B, max_len):
        inside[0] = True
        try:
            real(B, max_len)
        finally:
            inside[0] = False
        steps.append(B)

    eng.decode_step = guarded
    eng.graphs = PaddedSteps(eng)
    llm.generate(prompts(5) * 2, MIXED * 2)
    assert len(steps) > 20
    inside[0] = True  # the guard does fire
    with pytest.raises(AssertionError, match="host sync"):
        torch.ones(1).item()
    inside[0] = False
