"""kernels/moe_route.py (Triton, interpreted on CPU) against its twin kernels/ref/moe_route.py, and the twin
against transformers' router arithmetic."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU interpreter
pytest.importorskip("triton")

from litesys.kernels.moe_route import fits, route_topk  # noqa: E402
from litesys.kernels.ref.moe_route import route_topk as route_ref  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def logits_case(T: int, E: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(T, E, generator=g)).to(dtype).to(DEVICE)


def ulps_bf16(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest distance in bf16 steps between two bf16 tensors of non-negative values (adjacent bit patterns)."""
    return int((a.view(torch.int16).int() - b.view(torch.int16).int()).abs().max())


@pytest.mark.parametrize("E,k", [(8, 1), (8, 2), (60, 4), (60, 8), (128, 8), (128, 1), (256, 16)])
@pytest.mark.parametrize("norm", [True, False])
def test_kernel_matches_twin(E, k, norm):
    logits = logits_case(9, E, torch.bfloat16, seed=E + k)
    w, ids = route_topk(logits, k, norm, torch.bfloat16)
    w_ref, ids_ref = route_ref(logits, k, norm, torch.bfloat16)
    assert ids.dtype == torch.int64 and w.dtype == torch.bfloat16 and w.shape == (9, k)
    assert torch.equal(ids, ids_ref)
    assert ulps_bf16(w, w_ref) <= 1
    w32, ids32 = route_topk(logits.float(), k, norm, torch.float32)
    w32_ref, _ = route_ref(logits.float(), k, norm, torch.float32)
    assert torch.equal(ids32, ids_ref)
    torch.testing.assert_close(w32, w32_ref, rtol=2e-6, atol=1e-9)


def test_ties_go_to_the_lower_expert():
    # row 0: all equal; row 1: a 4-way tie for slots 1..3 behind one clear winner (which is not expert 0);
    # row 2: -inf logits (a masked expert) are picked last, lowest id first
    E, k = 60, 4
    logits = torch.zeros(3, E)
    logits[1, [7, 11, 30, 59]] = 1.0
    logits[1, 40] = 3.0
    logits[2, :] = float("-inf")
    logits[2, [5, 6]] = 0.5
    logits = logits.to(DEVICE)
    w, ids = route_topk(logits, k, True, torch.float32)
    assert ids.tolist() == [[0, 1, 2, 3], [40, 7, 11, 30], [5, 6, 0, 1]]
    assert torch.equal(ids, route_ref(logits, k, True, torch.float32)[1])
    torch.testing.assert_close(w[0], torch.full((4,), 0.25, device=DEVICE))
    torch.testing.assert_close(w[2], torch.tensor([0.5, 0.5, 0.0, 0.0], device=DEVICE))


def test_rows_are_batch_invariant():
    """A token's routing does not depend on the other tokens (deterministic mode serves it too)."""
    logits = logits_case(17, 128, torch.bfloat16, seed=3)
    w, ids = route_topk(logits, 8, True, torch.bfloat16)
    for t in (0, 5, 16):
        w1, ids1 = route_topk(logits[t:t + 1], 8, True, torch.bfloat16)
        assert torch.equal(w1[0], w[t]) and torch.equal(ids1[0], ids[t])


def test_empty_and_limits():
    w, ids = route_topk(logits_case(0, 8, torch.bfloat16), 2, True, torch.bfloat16)
    assert w.shape == ids.shape == (0, 2)
    assert fits(256, 16) and fits(8, 8) and not fits(257, 8) and not fits(128, 17) and not fits(4, 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm", [True, False])
def test_route_is_transformers_router(dtype, norm):
    """routing.route (the twin here on CPU; the kernel on the router's logits) against transformers' own
    Qwen3MoeTopKRouter on the same weights."""
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter

    from litesys.models.moe.routing import route

    cfg = Qwen3MoeConfig(hidden_size=64, num_experts=128, num_experts_per_tok=8, norm_topk_prob=norm)
    hf = Qwen3MoeTopKRouter(cfg).to(dtype)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        hf.weight.copy_(torch.randn(128, 64, generator=g) / 8)
        x = torch.randn(33, 64, generator=g).to(dtype)
        logits, hf_w, hf_ids = hf(x)
    w, ids = route(x, hf.weight.detach(), 8, norm)
    kw, kids = route_topk(logits.to(DEVICE), 8, norm, dtype)
    kw, kids = kw.cpu(), kids.cpu()
    assert w.dtype == kw.dtype == hf_w.dtype == dtype
    if dtype == torch.float32:  # no ties: the same experts in the same slots
        assert torch.equal(ids, hf_ids) and torch.equal(kids, hf_ids)
        assert torch.allclose(w, hf_w, rtol=1e-6, atol=0) and torch.allclose(kw, hf_w, rtol=2e-6, atol=0)
        return
    # bf16 logits tie often (8 mantissa bits, 128 experts) and torch.topk orders ties as it likes: the chosen
    # logits and the weights agree as multisets; our order is the lower id first
    for got_ids, got_w, tol in ((ids, w, 0), (kids, kw, 1)):
        assert torch.equal(logits.gather(1, got_ids).sort(1).values, logits.gather(1, hf_ids).sort(1).values)
        assert ulps_bf16(got_w.sort(1).values, hf_w.sort(1).values) <= tol
    assert torch.equal(kids, ids)
