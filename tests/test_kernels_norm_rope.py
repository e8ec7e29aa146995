"""kernels/norm_rope.py (Triton, interpreted on CPU) against its twin kernels/ref/norm_rope.py."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU interpreter
triton = pytest.importorskip("triton")
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"  # the real kernels on a GPU machine


def _fused():
    from litesys.kernels import norm_rope

    return norm_rope


def _ref():
    from litesys.kernels.ref import norm_rope

    return norm_rope


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_res", [False, True])
def test_add_rms_norm(dtype, with_res):
    f = _fused()
    x = torch.randn(5, 48, dtype=dtype, device=DEVICE)
    r = torch.randn(5, 48, dtype=dtype, device=DEVICE) if with_res else None
    w = (1 + 0.1 * torch.randn(48, device=DEVICE)).to(dtype)
    y, res = f.add_rms_norm_triton(x, r, w, 1e-6)
    y_ref, res_ref = _ref().add_rms_norm(x, r, w, 1e-6)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # the interpreter rounds bf16 by truncation: 1 ulp
    assert torch.allclose(res.float(), res_ref.float(), atol=tol, rtol=tol)
    assert torch.allclose(y.float(), y_ref.float(), atol=tol, rtol=tol)


def test_add_rms_norm_sums_parts():
    """A 3-D input's parts (strided, as fused_moe(per_slot=True) leaves them) are summed in fp32, part 0 first."""
    f, ref = _fused(), _ref()
    torch.manual_seed(2)
    parts = torch.randn(5, 3, 48, device=DEVICE).transpose(0, 1)
    res = torch.randn(5, 48, device=DEVICE)
    w = 1 + 0.1 * torch.randn(48, device=DEVICE)
    for residual in (res, None):
        y, r = f.add_rms_norm_triton(parts, residual, w, 1e-6)
        y_ref, r_ref = ref.add_rms_norm(ref.sum_parts(parts), residual, w, 1e-6)
        torch.testing.assert_close(r, r_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    y_cpu, _ = f.add_rms_norm(parts.cpu(), res.cpu(), w.cpu(), 1e-6)  # the torch path sums them too
    torch.testing.assert_close(y_cpu, ref.add_rms_norm(parts.sum(0), res, w, 1e-6)[0].cpu(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("nq,nkv", [(4, 2), (12, 2)])  # one program with masked rows; two, k heads in the second
def test_qk_norm_rope(dtype, norm, nq, nkv):
    from litesys.models.rope import rope_cos_sin

    f = _fused()
    T, D = 6, 32
    qkv = torch.randn(T, (nq + 2 * nkv) * D, dtype=dtype, device=DEVICE)
    qn = (1 + 0.1 * torch.randn(D, device=DEVICE)).to(dtype) if norm else None
    kn = (1 + 0.1 * torch.randn(D, device=DEVICE)).to(dtype) if norm else None
    rope = rope_cos_sin(D, {"rope_theta": 1e6}, 4096, 512, DEVICE)
    pos = torch.tensor([0, 1, 7, 100, 300, 511], device=DEVICE)
    out = f.qk_norm_rope_triton(qkv, qn, kn, rope, pos, nq, nkv, 1e-6)
    ref = _ref().qk_norm_rope(qkv, qn, kn, rope, pos, nq, nkv, 1e-6)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for a, b in zip(out, ref):
        assert a.shape == b.shape
        assert torch.allclose(a.float(), b.float(), atol=tol, rtol=tol)


def test_silu_mul():
    f = _fused()
    x = torch.randn(3, 2 * 1500, device=DEVICE)
    g, u = x.chunk(2, dim=-1)
    assert torch.allclose(f.silu_mul_triton(x), torch.nn.functional.silu(g) * u, atol=1e-5)
