"""Stops: repetition (planted and clean), EOS, with a scripted model driving the real engine."""
from __future__ import annotations

import torch

from litesys.attention.backend import Attention
from litesys.attention.kv_cache import KVCache
from litesys.engine.engine import Engine
from litesys.engine.sequence import Request
from litesys.kernels.ref.step import repetition_hits
from litesys.sampling_params import SamplingParams, derive_seed

V = 64


class ScriptedModel:
    """Next token = rule(current token); runs the real attention/KV writes so the engine path is exercised."""

    num_q_heads = num_kv_heads = 1

    def __init__(self, rule):
        self.rule = rule

    def forward(self, ids, positions, meta, attn):
        attn(0, torch.zeros(len(ids), 1, 4), torch.zeros(len(ids), 1, 4), torch.zeros(len(ids), 1, 4), meta)
        return ids.float().unsqueeze(1)

    def compute_logits(self, hidden):
        nxt = self.rule(hidden[:, 0].long())
        return torch.nn.functional.one_hot(nxt, V).float() * 10


def _run(rule, params, prompts, eos=(V - 1,), check_every=1):
    kv = KVCache(1, 64, 8, 1, 4, torch.float32, "cpu")
    eng = Engine(ScriptedModel(rule), kv, Attention(kv, 1, 1, 4, 1.0), max_slots=4, max_seq_len=256,
                 max_batched_tokens=512, eos_ids=list(eos), check_every=check_every)
    reqs = [Request(i, p, params, [derive_seed(0, i)]) for i, p in enumerate(prompts)]
    out = {}
    eng.run(reqs, lambda s, o: out.__setitem__(s.req.index, o))
    return [out[i] for i in range(len(prompts))]


def test_repetition_hits_counts_occurrences_in_window():
    period5 = torch.tensor([[10 + (i % 5) for i in range(40)]])
    clean = torch.arange(40).unsqueeze(0)
    n = torch.tensor([40])
    # window 32, block 8: the block recurs every 5 tokens -> 5 occurrences in the window
    assert repetition_hits(period5, n, 32, 8, 5).item()
    assert not repetition_hits(period5, n, 32, 8, 6).item()
    assert not repetition_hits(clean, n, 32, 8, 2).item()
    assert not repetition_hits(period5, torch.tensor([31]), 32, 8, 2).item()  # shorter than the window
    both = torch.cat([clean, period5])
    assert repetition_hits(both[[1, 0]], torch.tensor([40, 40]), 32, 8, 5).tolist() == [True, False]


def test_planted_repeat_stops_and_trims_the_block():
    loop = lambda t: 10 + (t - 10 + 1) % 5  # 10 11 12 13 14 10 ...
    p = SamplingParams(temperature=0, max_new_tokens=100, repeat_check_window=32, repeat_block_size=8)
    for check_every in (1, 3):
        (o,) = _run(loop, p, [[10]], check_every=check_every)
        assert o.finish_reason == "repetition"
        # threshold max(32 // 8 - 1, 2) = 3 is met as soon as 32 tokens exist; the last block of 8 is dropped
        assert len(o.token_ids) == 32 - 8
        assert o.token_ids[:6] == [11, 12, 13, 14, 10, 11]


def test_clean_sequence_runs_to_length_and_eos_stops():
    count = lambda t: (t + 1) % (V - 1)  # no repeats within 64 tokens
    p = SamplingParams(temperature=0, max_new_tokens=50, repeat_check_window=32, repeat_block_size=8)
    (o,) = _run(count, p, [[0]])
    assert o.finish_reason == "length" and o.token_ids == list(range(1, 51))
    to_eos = lambda t: torch.where(t >= 5, torch.full_like(t, V - 1), t + 1)
    a, b = _run(to_eos, p, [[0], [3]])
    assert a.finish_reason == "stop" and a.token_ids == [1, 2, 3, 4, 5, V - 1]
    assert b.token_ids == [4, 5, V - 1]
    ignore = SamplingParams(**{**p.__dict__, "ignore_eos": True, "max_new_tokens": 9, "repeat_check": False})
    (c,) = _run(to_eos, ignore, [[0]])
    assert c.finish_reason == "length" and len(c.token_ids) == 9
