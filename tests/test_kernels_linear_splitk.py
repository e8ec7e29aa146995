"""kernels/linear_splitk.py (Triton, interpreted on CPU) against torch's GEMM, and add+RMSNorm over its partials
against the unfused projection -> add -> RMSNorm."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU interpreter
triton = pytest.importorskip("triton")
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def _mod():
    from litesys.kernels import linear_splitk

    return linear_splitk


def _plan(block_m, block_n, block_k, splits):
    return _mod().SplitPlan(block_m, block_n, block_k, splits, 4, 2)


@pytest.mark.parametrize("m,n,k,plan", [
    (5, 48, 128, (16, 32, 32, 2)),  # ragged rows and columns, whole K steps
    (20, 32, 96, (16, 16, 32, 4)),  # two row tiles; 3 steps over 4 splits: the last slice is empty, not written
    (3, 16, 80, (16, 16, 32, 2)),  # K not a multiple of the step: masked tail
])
def test_partials_sum_to_the_gemm(m, n, k, plan):
    torch.manual_seed(0)
    x = torch.randn(m, k, device=DEVICE)
    w = torch.randn(n, k, device=DEVICE)
    p = _mod().linear_partials(x, w, _plan(*plan))
    assert p.dtype == torch.float32 and p.shape[1:] == (m, n)
    assert p.shape[0] == min(plan[3], triton.cdiv(k, plan[2] * triton.cdiv(triton.cdiv(k, plan[3]), plan[2])))
    torch.testing.assert_close(p.sum(0), F.linear(x, w), atol=1e-4, rtol=1e-4)
    assert p.shape[0] > 1 and not torch.allclose(p[0], p.sum(0))  # a real split: each slice a part of the sum


def test_silu_prologue_matches_silu_mul():
    from litesys.kernels.ref.norm_rope import silu_mul

    torch.manual_seed(1)
    m, n, k = 7, 32, 64
    gate_up = torch.randn(m, 2 * k, device=DEVICE).bfloat16()
    w = (torch.randn(n, k, device=DEVICE) / 8).bfloat16()
    p = _mod().linear_partials(gate_up, w, _plan(16, 16, 32, 2), silu=True)
    expected = F.linear(silu_mul(gate_up).float(), w.float())  # the same bf16 inputs, multiplied in fp32
    torch.testing.assert_close(p.sum(0), expected, atol=2e-2, rtol=2e-2)  # interpreter: bf16 by truncation


def test_add_rms_norm_sums_partials():
    from litesys.kernels import norm_rope
    from litesys.kernels.ref import norm_rope as ref

    torch.manual_seed(2)
    parts = torch.randn(3, 5, 48, device=DEVICE)
    res = torch.randn(5, 48, device=DEVICE)
    w = 1 + 0.1 * torch.randn(48, device=DEVICE)
    for residual in (res, None):
        y, r = norm_rope.add_rms_norm_triton(parts, residual, w, 1e-6)
        y_ref, r_ref = ref.add_rms_norm(parts.sum(0), residual, w, 1e-6)
        torch.testing.assert_close(r, r_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    y_cpu, _ = norm_rope.add_rms_norm(parts.cpu(), res.cpu(), w.cpu(), 1e-6)  # the torch path sums them too
    torch.testing.assert_close(y_cpu, ref.add_rms_norm(parts.sum(0), res, w, 1e-6)[0].cpu(), atol=1e-5, rtol=1e-5)


def test_plan_shapes():
    plan = _mod().split_plan
    p = plan(256, 1024, 3072, 132)
    assert p is not None and p.splits > 1 and 3072 // p.block_k // p.splits >= 2
    assert plan(257, 1024, 3072, 132) is None  # prefill sizes stay on cuBLAS
    assert plan(64, 24576, 4096, 132).splits == 1  # wide enough already
    with pytest.raises(ValueError, match="does not match"):
        _mod().linear_partials(torch.zeros(4, 64), torch.zeros(16, 64), silu=True)
