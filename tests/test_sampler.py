"""Sampler: exact candidate sets, empirical distribution vs the filtered softmax, determinism."""
from __future__ import annotations

import pytest
import torch

from litesys import SamplingParams
from litesys.engine.sampler import Sampler, SamplingTensors, candidates, sample, seed_hash, uniform
from litesys.kernels.hash import hash_to_uniform, lowbias32
from litesys.sampling_params import derive_seed


def _params(B, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=0):
    f = lambda v, dt: torch.full((B,), v, dtype=dt)
    return SamplingTensors(f(temperature, torch.float32), f(top_k, torch.int64), f(top_p, torch.float32),
                           f(min_p, torch.float32), seed_hash(torch.arange(B, dtype=torch.int64) + seed))


def _kept(logits, **kw):
    p = _params(logits.shape[0], **kw)
    full = kw.get("top_k", 0) <= 0
    ((probs, idx),) = candidates(logits, p, need_full_sort=full, max_top_k=0 if full else kw["top_k"])
    return [set(idx[b][probs[b] > 0].tolist()) for b in range(logits.shape[0])]


def test_top_k_keeps_exactly_k_largest():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0, 2.5, 0.0]])
    assert _kept(logits, top_k=3) == [{1, 4, 2}]
    assert _kept(logits, top_k=1) == [{1}]


def test_top_p_keeps_smallest_prefix_reaching_p():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])
    logits = probs.log()
    assert _kept(logits, top_p=0.5) == [{0}]  # 0.5 reached by the first token alone
    assert _kept(logits, top_p=0.6) == [{0, 1}]
    assert _kept(logits, top_p=0.86) == [{0, 1, 2, 3}]  # 0.85 < 0.86 -> need the fourth
    assert _kept(logits, top_p=1.0) == [{0, 1, 2, 3, 4}]


def test_min_p_relative_to_top_token():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])
    assert _kept(probs.log(), min_p=0.3) == [{0, 1, 2}]  # keep p >= 0.15
    assert _kept(probs.log(), min_p=0.05) == [{0, 1, 2, 3, 4}]


def test_temperature_then_filters_combined():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0]])
    # temperature 0.5 sharpens: softmax(2*logits); top_k 4 then top_p 0.9 on the renormalised four
    p = torch.softmax(2 * logits[0, :4], -1)
    need = int((torch.cumsum(p, 0) - p < 0.9).sum())
    assert _kept(logits, temperature=0.5, top_k=4, top_p=0.9) == [set(range(need))]


@pytest.mark.parametrize("kw", [dict(top_k=5), dict(top_p=0.8), dict(min_p=0.1), dict(top_k=8, top_p=0.9, min_p=0.05),
                                dict(temperature=0.7)])
def test_empirical_distribution_matches_filtered_softmax(kw):
    g = torch.Generator().manual_seed(0)
    V, N = 12, 20000
    row = torch.randn(V, generator=g) * 1.5
    logits = row.expand(N, V).contiguous()
    p = _params(N, **kw)
    full = kw.get("top_k", 0) <= 0
    width = 0 if full else kw["top_k"]
    toks = sample(logits, p, torch.zeros(N, dtype=torch.int64), False, full, width)
    emp = torch.bincount(toks, minlength=V).double() / N
    ((probs, idx),) = candidates(row[None], _params(1, **kw), full, width)
    target = torch.zeros(V, dtype=torch.float64).scatter(0, idx[0], probs[0].double())
    tv = 0.5 * (emp - target).abs().sum().item()
    assert tv < 0.02, (tv, emp, target)
    assert set(toks.unique().tolist()) <= set(idx[0][probs[0] > 0].tolist())  # never a filtered token


def test_greedy_rows_take_argmax_in_a_mixed_batch():
    logits = torch.randn(4, 50)
    p = _params(4, temperature=1.0)
    p.temperature[1] = 0.0
    p.temperature[3] = 0.0
    logits[3, [7, 30, 41]] = logits[3].max() + 1  # a tied maximum: the first index, as argmax
    for full_sort, max_top_k in ((True, 0), (False, 20), (True, 20)):  # greedy rows read the first candidate
        toks = sample(logits, p, torch.zeros(4, dtype=torch.int64), False, full_sort, max_top_k)
        assert toks[1] == logits[1].argmax() and toks[3] == 7 == logits[3].argmax()


def test_uniform_is_a_pure_function_of_seed_and_step():
    seeds = torch.tensor([derive_seed(0, i, 0) for i in range(1000)])
    steps = torch.arange(1000)
    u = uniform(seed_hash(seeds), steps)
    assert torch.equal(u, uniform(seed_hash(seeds), steps))
    assert torch.equal(u[500:], uniform(seed_hash(seeds[500:]), steps[500:]))  # no dependence on the other rows
    # the hash as one chain, as it was before the slots kept its seed half: every draw (every token) unchanged
    h = lowbias32(lowbias32(lowbias32(seeds ^ 0x9E3779B9) ^ (seeds >> 32)) ^ steps)
    assert torch.equal(u, hash_to_uniform(h))
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.03 and len(set(u.tolist())) > 990
    assert derive_seed(1, 2, 3) == derive_seed(1, 2, 3) != derive_seed(1, 2, 4)


def _previous_sample(logits, p, steps, need_full_sort, max_top_k):
    """The sampler before the Triton top-k (CPU path: ``torch.topk`` / an unstable full sort), written out."""
    vals, idx = logits.sort(dim=-1, descending=True) if need_full_sort else logits.topk(max_top_k, dim=-1)
    vals = vals.float() / p.temperature.clamp_min(1e-6).unsqueeze(1)
    K = vals.shape[1]
    k = torch.where(p.top_k > 0, p.top_k, K).clamp(max=K).unsqueeze(1)
    probs = torch.softmax(vals.masked_fill(torch.arange(K).unsqueeze(0) >= k, float("-inf")), dim=-1)
    keep = (probs.cumsum(-1) - probs < p.top_p.unsqueeze(1)) & (probs >= p.min_p.unsqueeze(1) * probs[:, :1])
    keep[:, 0] = True
    probs = probs * keep
    probs = probs / probs.cumsum(-1)[:, -1:]
    cdf = probs.cumsum(-1)
    pick = (cdf <= uniform(p.seed_hash, steps).unsqueeze(1) * cdf[:, -1:]).sum(-1, keepdim=True).clamp(max=K - 1)
    pick = torch.minimum(pick, (probs > 0).sum(-1, keepdim=True) - 1)
    tok = idx.gather(1, pick).squeeze(1)
    return torch.where(p.temperature == 0, logits.argmax(dim=-1), tok)


@pytest.mark.parametrize("top_ks", [[20, 1, 64, 5, 33, 20, 2, 64], [20, 0, 64, 5, 33, 20, 2, 1]])
def test_default_path_draws_the_previous_tokens(top_ks):
    """Unique fp32 logits, mixed per-row params: every token of 40 steps as the previous implementation drew it, for
    a batch whose top_k all fit the top-k kernel (its width: the largest) and for one with top_k 0 (a full sort)."""
    B, V = len(top_ks), 3000
    g = torch.Generator().manual_seed(5)
    p = _params(B, seed=11)
    p.temperature = torch.tensor([0.6, 1.0, 0.0, 0.8, 1.3, 0.6, 0.7, 0.6])
    p.top_k = torch.tensor(top_ks)
    p.top_p = torch.tensor([0.95, 1.0, 0.9, 0.8, 1.0, 0.95, 0.5, 0.99])
    p.min_p = torch.tensor([0.0, 0.05, 0.0, 0.0, 0.1, 0.0, 0.0, 0.02])
    s = Sampler.__new__(Sampler)  # the host flags only: no slots needed
    s.deterministic, s.rep_groups = False, []
    s.refresh([SamplingParams(temperature=float(t), top_k=k) for t, k in zip(p.temperature, top_ks)])
    full = 0 in top_ks
    assert (s.need_full_sort, s.max_top_k) == ((True, 0) if full else (False, 64))
    for step in range(40):
        logits = torch.randn(B, V, generator=g) * 2.5
        steps = torch.full((B,), step)
        new = sample(logits, p, steps, False, s.need_full_sort, s.max_top_k)
        assert torch.equal(new, _previous_sample(logits, p, steps, full, 64)), step
