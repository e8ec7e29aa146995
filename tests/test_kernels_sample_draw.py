"""kernels/sample_draw.py (Triton, interpreted on CPU) against its twin, engine/sampler.py's filtered + draw."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU interpreter
triton = pytest.importorskip("triton")
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def _torch_draw(vals, idx, p, steps):
    from litesys.engine.sampler import draw, filtered, uniform

    probs, ids = filtered(vals, idx, p)
    tok = draw(probs, ids, uniform(p.seed_hash, steps).unsqueeze(1))
    return torch.where(p.temperature == 0, ids[:, 0], tok)


@pytest.mark.parametrize("K", [20, 7, 64])
def test_draw_matches_the_torch_filters_token_for_token(K):
    from litesys.engine.sampler import SamplingTensors, seed_hash
    from litesys.kernels.sample_draw import draw
    from litesys.kernels.topk import topk

    g = torch.Generator().manual_seed(K)
    B, V = 48, 500
    temperature = torch.tensor([0.6, 1.0, 0.0, 1.3] * (B // 4))  # greedy rows among sampled ones
    top_k = torch.tensor([K, 1, 5, 0, K + 3, 2] * (B // 6))  # 0 = off, larger than the candidates: all of them
    top_p = torch.tensor([0.95, 1.0, 0.5, 0.8] * (B // 4))
    min_p = torch.tensor([0.0, 0.05, 0.0, 0.2, 0.0, 0.0] * (B // 6))
    p = SamplingTensors(temperature, top_k, top_p, min_p, seed_hash(torch.arange(B, dtype=torch.int64) * 7 + 3))
    past_first = 0
    for step in range(8):
        logits = (torch.randn(B, V, generator=g) * 2.5).to(torch.bfloat16)
        vals, idx = topk(logits, K)
        steps = torch.full((B,), step, dtype=torch.int32) + torch.arange(B, dtype=torch.int32)
        want = _torch_draw(vals, idx, p, steps)
        got = draw(*(t.to(DEVICE) for t in (vals, idx, *vars(p).values(), steps))).cpu()
        assert torch.equal(got, want), step
        past_first += int((got != idx[:, 0]).sum())
    assert past_first > B  # the draws did land past the first candidate: a real comparison, not only greedy picks


def test_draw_no_rows():
    from litesys.kernels.sample_draw import draw

    z = torch.zeros(0, 20, device=DEVICE)
    e = torch.zeros(0, device=DEVICE)
    out = draw(z, z.long(), e, e.long(), e, e, e.long(), e.int())
    assert out.shape == (0,) and out.dtype == torch.int64


@pytest.mark.parametrize("top_ks,deterministic", [([20, 1, 64, 5, 33, 20, 2, 64], False),
                                                  ([20, 0, 64, 5, 33, 20, 2, 1], False),
                                                  ([20, 0, 65, 5, 33, 20, 2, 1], True)])
def test_sample_through_the_kernel_equals_the_torch_path(top_ks, deterministic):
    """``sample`` with the kernel (each ranked set's filters and draw in one launch) draws what its torch path
    draws, for a batch of small top_k, one with a full sort, and deterministic mode's two sets."""
    from litesys import SamplingParams
    from litesys.engine.sampler import Sampler, SamplingTensors, sample, seed_hash

    B, V = len(top_ks), 3000
    g = torch.Generator().manual_seed(9)
    p = SamplingTensors(torch.tensor([0.6, 1.0, 0.0, 0.8, 1.3, 0.6, 0.7, 0.6]), torch.tensor(top_ks),
                        torch.tensor([0.95, 1.0, 0.9, 0.8, 1.0, 0.95, 0.5, 0.99]),
                        torch.tensor([0.0, 0.05, 0.0, 0.0, 0.1, 0.0, 0.0, 0.02]), seed_hash(torch.arange(B) + 11))
    s = Sampler.__new__(Sampler)  # the host flags only
    s.deterministic, s.rep_groups = deterministic, []
    s.refresh([SamplingParams(temperature=float(t), top_k=k) for t, k in zip(p.temperature, top_ks)])
    for step in range(6):
        logits = torch.randn(B, V, generator=g) * 2.5
        steps = torch.full((B,), step)
        want = sample(logits, p, steps, False, s.need_full_sort, s.max_top_k, backend="torch")
        got = sample(logits.to(DEVICE), SamplingTensors(*(t.to(DEVICE) for t in vars(p).values())),
                     steps.to(DEVICE), False, s.need_full_sort, s.max_top_k, backend="triton").cpu()
        assert torch.equal(got, want), step


def test_greedy_through_the_kernel_is_argmax_first_maximum():
    """All-greedy batches on Triton take the top-k kernel's first candidate: argmax's first maximum, ties too."""
    from litesys.engine.sampler import SamplingTensors, sample

    g = torch.Generator().manual_seed(4)
    logits = torch.randint(-3, 3, (9, 700), generator=g).to(torch.bfloat16)  # many ties at the maximum
    e = torch.zeros(9)
    p = SamplingTensors(e, e.long(), e + 1, e, e.long())
    got = sample(logits.to(DEVICE), SamplingTensors(*(t.to(DEVICE) for t in vars(p).values())),
                 torch.zeros(9, dtype=torch.int64, device=DEVICE), True, False, 0, backend="triton")
    assert got.is_contiguous() and torch.equal(got.cpu(), logits.float().argmax(-1))
