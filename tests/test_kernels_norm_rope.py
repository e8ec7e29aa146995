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


@pytest.mark.parametrize("pages_dtype", [torch.bfloat16, torch.float32, torch.float8_e4m3fn])
@pytest.mark.parametrize("nq,nkv,norm", [(4, 2, True), (12, 2, True), (6, 2, False)])
def test_qk_norm_rope_writes_the_pages_as_kv_write(pages_dtype, nq, nkv, norm):
    """With ``pages`` the norm+RoPE launch also stores K and V: its q, k bit for bit the plain launch's, and the
    pages bit for bit what ``kv_write.write`` stores from them (bf16/fp32 pages, fp8 pages with scales and V
    transposed as the pool keeps them; a negative slot writes nothing)."""
    from litesys.kernels import kv_write
    from litesys.kernels.common import transposed_pages
    from litesys.models.rope import rope_cos_sin

    f = _fused()
    torch.manual_seed(nq)
    T, D, P, ps = 5, 32, 6, 4
    dtype = torch.float32 if pages_dtype == torch.float32 else torch.bfloat16
    qkv = (3 * torch.randn(T, (nq + 2 * nkv) * D, device=DEVICE)).to(dtype)
    qn = (1 + 0.1 * torch.randn(D, device=DEVICE)).to(dtype) if norm else None
    kn = (1 + 0.1 * torch.randn(D, device=DEVICE)).to(dtype) if norm else None
    rope = rope_cos_sin(D, {"rope_theta": 1e6}, 4096, 512, DEVICE)
    pos = torch.tensor([0, 3, 9, 100, 17], device=DEVICE)
    slots = torch.tensor([5, 13, -1, 22, 0], device=DEVICE)
    fp8 = pages_dtype == torch.float8_e4m3fn
    scales = (torch.rand(nkv, device=DEVICE) + 0.5, torch.rand(nkv, device=DEVICE) + 0.5) if fp8 else (None, None)

    def pool():
        k = torch.zeros(P, ps, nkv, D, dtype=torch.uint8 if fp8 else pages_dtype, device=DEVICE)
        k = k.view(pages_dtype) if fp8 else k
        v = transposed_pages((P, ps, nkv, D), pages_dtype, DEVICE) if fp8 else torch.zeros_like(k)
        return k, v

    (k_want, v_want), (k_got, v_got) = pool(), pool()
    q0, k0, v0 = f.qk_norm_rope_triton(qkv, qn, kn, rope, pos, nq, nkv, 1e-6)
    kv_write.write(k0, v0, k_want, v_want, slots, *scales)
    q1, k1, v1 = f.qk_norm_rope_triton(qkv, qn, kn, rope, pos, nq, nkv, 1e-6,
                                       f.KVPages(k_got, v_got, slots, *scales))
    assert torch.equal(q0, q1) and torch.equal(k0, k1) and torch.equal(v0, v1)
    for want, got in ((k_want, k_got), (v_want, v_got)):
        w, g = (x.view(torch.uint8) if fp8 else x for x in (want, got))
        assert torch.equal(w, g)
    written = k_got.view(torch.uint8).reshape(P * ps, -1).any(1).nonzero().flatten().tolist()
    assert written == [0, 5, 13, 22]  # the rows' slots; the negative slot's row wrote nothing


def test_qk_norm_rope_pages_need_triton():
    from litesys.models.rope import rope_cos_sin

    f = _fused()
    qkv = torch.randn(2, 4 * 16)
    rope = rope_cos_sin(16, {"rope_theta": 1e6}, 64, 64, "cpu")
    pages = f.KVPages(torch.zeros(2, 4, 1, 16), torch.zeros(2, 4, 1, 16), torch.zeros(2, dtype=torch.int64))
    assert not f.fuses_kv_write(qkv, 16)
    with pytest.raises(ValueError, match="check fuses_kv_write first"):
        f.qk_norm_rope(qkv, None, None, rope, torch.zeros(2, dtype=torch.int64), 2, 1, 1e-6, pages)
