"""Deterministic mode's sampler when one batch mixes ``top_k`` values (CPU, fp32): a row's candidates, probabilities
and tokens do not depend on its batch-mates' ``top_k`` (5, 20, 0 = off, 50). The default sampler takes its
candidate count from the batch (``max(top_k)``, or the whole vocabulary once any row has top_k off), and on the GPU
softmax / cumsum over another length can round a row differently (docs/reproducibility.md)."""
from __future__ import annotations

import pytest
import torch
from checkpoints import make_checkpoint

import litesys.engine.sampler as sampler_mod
from litesys import LLM, SamplingParams
from litesys.engine.sampler import Sampler, SamplingTensors, sample, seed_hash

V = 1024
MATES = (5, 20, 0, 50)  # the batch-mates' top_k


def _tensors(top_k: list[int], temperature: float = 0.8) -> SamplingTensors:
    B = len(top_k)
    return SamplingTensors(torch.full((B,), temperature), torch.tensor(top_k), torch.full((B,), 0.95),
                           torch.zeros(B), seed_hash(torch.arange(B, dtype=torch.int64) * 7919 + 11))


def _flags(deterministic: bool, top_ks: list[int]) -> tuple[bool, int]:
    s = Sampler.__new__(Sampler)  # the host flags only: no slots needed
    s.deterministic, s.rep_groups = deterministic, []
    s.refresh([SamplingParams(temperature=0.8, top_k=k) for k in top_ks])
    return s.need_full_sort, s.max_top_k


def test_fixed_candidate_count_whatever_the_mates():
    # default: the candidate count follows the batch; deterministic: always the whole sorted vocabulary
    assert [_flags(False, [20, m]) for m in MATES] == [(False, 20), (False, 20), (True, 1), (False, 50)]
    assert [_flags(True, [20, m]) for m in MATES] == [(True, 1)] * 4


@pytest.mark.parametrize("own_k", [20, 0, 1])
def test_a_rows_probabilities_and_tokens_do_not_depend_on_its_mates(own_k):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, V, generator=g) * 3
    steps = torch.arange(8)
    rows = {}
    for mate in MATES:
        top_k = [own_k] + [mate] * 7
        p = _tensors(top_k)
        need_full_sort, max_top_k = _flags(True, top_k)
        probs, idx = sampler_mod.candidates(logits, p, need_full_sort, max_top_k)
        toks = torch.stack([sample(logits, p, steps + s, False, need_full_sort, max_top_k)[0] for s in range(50)])
        rows[mate] = (probs[0], idx[0], toks)
    first = rows[MATES[0]]
    assert first[0].shape == (V,) and (first[0] > 0).sum() <= (own_k or V)
    for mate, (probs, idx, toks) in rows.items():
        assert torch.equal(probs, first[0]) and torch.equal(idx, first[1]), f"mates with top_k {mate}"
        assert torch.equal(toks, first[2])
    # the row alone, too
    p = _tensors([own_k])
    probs, idx = sampler_mod.candidates(logits[:1], p, *_flags(True, [own_k]))
    assert torch.equal(probs[0], first[0]) and torch.equal(idx[0], first[1])


def test_engine_row_among_mates_with_other_top_k(tmp_path, monkeypatch):
    """LLM(deterministic=True): a top_k=20 request's tokens are the same alone and among requests with top_k 5, 20, 0
    and 50, and every sampled step ranks the whole vocabulary."""
    ckpt = make_checkpoint(tmp_path / "m", "qwen3", with_tokenizer=False, vocab_size=V)
    widths = []
    candidates = sampler_mod.candidates

    def record(logits, *args):
        probs, idx = candidates(logits, *args)
        widths.append(probs.shape[1])
        return probs, idx

    monkeypatch.setattr(sampler_mod, "candidates", record)
    llm = LLM(str(ckpt), device="cpu", dtype=torch.float32, max_seq_len=64, deterministic=True)
    target = [3, 14, 15, 92, 65, 35]
    own = SamplingParams(temperature=0.8, top_k=20, max_new_tokens=24, ignore_eos=True, seed=77)
    (alone,) = llm.generate([target], own)
    g = torch.Generator().manual_seed(1)
    for mate in MATES:
        others = [torch.randint(0, V, (n,), generator=g).tolist() for n in (4, 9, 17)]
        mates = [SamplingParams(temperature=1.0, top_k=mate, max_new_tokens=24, ignore_eos=True, seed=i)
                 for i in range(3)]
        outs = llm.generate(others[:1] + [target] + others[1:], mates[:1] + [own] + mates[1:])
        assert outs[1].token_ids == alone.token_ids, f"mates with top_k {mate}"
    assert set(widths) == {V}
