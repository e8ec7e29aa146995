"""Triton varlen causal prefill vs the PyTorch reference (on CPU through TRITON_INTERPRET=1, tiny shapes)."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton kernels need the triton package")

from litesys.kernels import ops_triton  # noqa: E402
from litesys.kernels.common import LOG2E, dot_precision  # noqa: E402
from litesys.kernels.prefill import prefill  # noqa: E402
from litesys.kernels.ref import ops_torch as ref  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 3e-3}


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.double() - expected.double()).norm() / expected.double().norm()).item()


def make_case(lengths: list[int], hq: int, hkv: int, d: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = sum(lengths)
    q, k, v = (torch.randn(t, h, d, generator=g).to(dtype) for h in (hq, hkv, hkv))
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    expected = ref.prefill_attention(q.float(), k.float(), v.float(), cu, max(lengths), d ** -0.5)
    return q, k, v, cu, expected


def run_kernel(q, k, v, cu, max_seqlen: int, block_m: int, block_n: int) -> torch.Tensor:
    q, k, v, cu = (x.to(DEVICE) for x in (q, k, v, cu))
    out = torch.full_like(q, float("nan"))  # poison: every row must be written
    prefill(q, k, v, cu, max_seqlen, out, q.shape[2] ** -0.5 * LOG2E, block_m, block_n, dot_precision(q.dtype), 4, 1)
    return out.cpu()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("group", [1, 2, 4])
def test_prefill_matches_reference(dtype: torch.dtype, group: int) -> None:
    """Prompt lengths around the 32-row query block and 16-row key block, including a 1-token prompt."""
    lengths = [1, 15, 16, 17, 33, 70]
    q, k, v, cu, expected = make_case(lengths, hq=2 * group, hkv=2, d=32, dtype=dtype, seed=group)
    out = run_kernel(q, k, v, cu, max(lengths), block_m=32, block_n=16)
    assert not out.isnan().any()
    assert rel_err(out, expected) < TOL[dtype]


def test_prefill_public_api_default_blocks() -> None:
    """Through ops_triton with the default (GPU) tiles; max_seqlen unknown (0) is derived."""
    lengths = [130, 7, 64]
    q, k, v, cu, expected = make_case(lengths, hq=4, hkv=2, d=16, dtype=torch.bfloat16, seed=9)
    for max_seqlen in (130, 0):
        out = ops_triton.prefill_attention(q.to(DEVICE), k.to(DEVICE), v.to(DEVICE), cu.to(DEVICE), max_seqlen,
                                           16 ** -0.5).cpu()
        assert out.dtype == torch.bfloat16 and not out.isnan().any()
        assert rel_err(out, expected) < 1e-2


def test_prefill_non_contiguous_qkv() -> None:
    """q, k, v as views of one fused qkv projection (row stride > heads * dim)."""
    lengths = [20, 9]
    hq, hkv, d = 4, 2, 16
    q, k, v, cu, expected = make_case(lengths, hq=hq, hkv=hkv, d=d, dtype=torch.float32, seed=4)
    qkv = torch.cat([q.flatten(1), k.flatten(1), v.flatten(1)], dim=1).to(DEVICE)
    qv = qkv[:, :hq * d].view(-1, hq, d)
    kv_ = qkv[:, hq * d:(hq + hkv) * d].view(-1, hkv, d)
    vv = qkv[:, (hq + hkv) * d:].view(-1, hkv, d)
    assert not qv.is_contiguous()
    out = ops_triton.prefill_attention(qv, kv_, vv, cu.to(DEVICE), max(lengths), d ** -0.5).cpu()
    assert rel_err(out, expected) < 1e-5
