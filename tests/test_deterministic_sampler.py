"""Deterministic mode's sampler when one batch mixes ``top_k`` values (CPU, fp32): a row's candidates, probabilities
and tokens do not depend on its batch-mates' ``top_k`` (5, 20, 0 = off, 50, 64, 65 = past the kernel's TOPK_MAX).
The default sampler takes its candidate count from the batch (``max(top_k)``, or the whole vocabulary once any row
has top_k off), and on the GPU softmax / cumsum over another length can round a row differently; deterministic mode
gives a row with 1 <= top_k <= TOPK_MAX its first TOPK_MAX candidates whatever the batch, and only a batch holding a
row with top_k 0 (or past TOPK_MAX) sorts the vocabulary (docs/reproducibility.md)."""
from __future__ import annotations

import pytest
import torch
from checkpoints import make_checkpoint

import litesys.engine.sampler as sampler_mod
from litesys import LLM, SamplingParams
from litesys.engine.sampler import Sampler, SamplingTensors, sample, seed_hash
from litesys.kernels.topk import TOPK_MAX

V = 1024
MATES = (5, 20, 0, 50, 64, 65)  # the batch-mates' top_k


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
    # default: the candidate count follows the batch; deterministic: TOPK_MAX, and a full sort beside it for a mate
    # with top_k off or past TOPK_MAX
    assert [_flags(False, [20, m]) for m in MATES] == [(False, 20), (False, 20), (True, 0), (False, 50), (False, 64),
                                                       (True, 0)]
    assert [_flags(True, [20, m]) for m in MATES] == [(m in (0, 65), TOPK_MAX) for m in MATES]


def _own_set(logits, p, flags, own_k):
    """(probs, ids) of row 0's candidate set: the fixed-width one when its top_k fits, else the full sort's."""
    sets = sampler_mod.candidates(logits, p, *flags)
    probs, idx = sets[-1] if 1 <= own_k <= TOPK_MAX else sets[0]
    return probs[0], idx[0]


@pytest.mark.parametrize("own_k", [20, 0, 1, 64, 65])
def test_a_rows_probabilities_and_tokens_do_not_depend_on_its_mates(own_k):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, V, generator=g) * 3
    logits[:, 100:110] = logits[:, :1]  # ties in the candidates: ranked by index in both paths
    steps = torch.arange(8)
    rows = {}
    for mate in MATES:
        top_k = [own_k] + [mate] * 7
        p = _tensors(top_k)
        flags = _flags(True, top_k)
        toks = torch.stack([sample(logits, p, steps + s, False, *flags)[0] for s in range(50)])
        rows[mate] = (*_own_set(logits, p, flags, own_k), toks)
    first = rows[MATES[0]] if 1 <= own_k <= TOPK_MAX else rows[0]
    assert first[0].shape == ((TOPK_MAX,) if 1 <= own_k <= TOPK_MAX else (V,))
    assert 0 < (first[0] > 0).sum() <= (own_k or V)
    assert len(set(first[2].tolist())) == 1 if own_k == 1 else len(set(first[2].tolist())) > 1  # real draws
    for mate, (probs, idx, toks) in rows.items():
        if probs.shape == first[0].shape:  # a row past TOPK_MAX meets the full sort only beside its own kind
            assert torch.equal(probs, first[0]) and torch.equal(idx, first[1]), f"mates with top_k {mate}"
        assert torch.equal(toks, first[2]), f"mates with top_k {mate}"
    # the row alone, too
    p = _tensors([own_k])
    probs, idx = _own_set(logits[:1], p, _flags(True, [own_k]), own_k)
    assert torch.equal(probs, first[0]) and torch.equal(idx, first[1])


def test_engine_row_among_mates_with_other_top_k(tmp_path, monkeypatch):
    """LLM(deterministic=True): a top_k=20 request's tokens are the same alone and among requests with top_k 5, 20, 0,
    50, 64 and 65; a step sorts the whole vocabulary only beside a mate with top_k 0 or 65."""
    ckpt = make_checkpoint(tmp_path / "m", "qwen3", with_tokenizer=False, vocab_size=V)
    widths = []
    ranked = sampler_mod.ranked

    def record(logits, *args):
        sets = ranked(logits, *args)
        widths.append(tuple(vals.shape[1] for vals, _ in sets))
        return sets

    monkeypatch.setattr(sampler_mod, "ranked", record)
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
    assert set(widths) == {(V, TOPK_MAX), (TOPK_MAX,)} and widths[:24] == [(TOPK_MAX,)] * 24  # alone: no sort
