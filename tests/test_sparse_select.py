"""The shared in-register top-k (``kernels/select.topk_mask``) against a stable sort, one row per case.

Rows are built to hit every exit of the early-stopping bit search: continuous values (stops when a threshold
splits off exactly k), integer-valued rows and constant rows (ties at the threshold: full search, index order),
values sharing a long bit prefix, -inf / +-0 among the candidates, k = 0, and k >= the candidates.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton", reason="Triton kernels need the triton package")
import triton.language as tl  # noqa: E402

from litesys.kernels.select import float_key, topk_mask  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
N = 64


@triton.jit
def _mask_kernel(x_ptr, cand_ptr, out_ptr, K, N: tl.constexpr):
    i = tl.arange(0, N)
    keep = topk_mask(float_key(tl.load(x_ptr + i)), tl.load(cand_ptr + i) != 0, K)
    tl.store(out_ptr + i, keep.to(tl.int8))


def _row(kind: str, g: torch.Generator) -> torch.Tensor:
    if kind == "normal":
        return torch.randn(N, generator=g)
    if kind == "integers":
        return torch.randint(-3, 3, (N,), generator=g).float()
    if kind == "constant":
        return torch.full((N,), 1.5)
    if kind == "prefix":  # every key shares its sign, exponent and top mantissa bits
        return 7 + 1e-3 * torch.randn(N, generator=g)
    x = torch.where(torch.rand(N, generator=g) < 0.3, float("-inf"), torch.randn(N, generator=g))
    x[::7], x[1::9] = -0.0, 0.0
    return x


def _reference(x: torch.Tensor, cand: torch.Tensor, k: int) -> torch.Tensor:
    bits = x.view(torch.int32)
    key = torch.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).long()
    key = torch.where(cand, key, torch.iinfo(torch.int64).min)
    order = torch.sort(key, descending=True, stable=True).indices  # equal keys: lower index first
    out = torch.zeros(N, dtype=torch.int8)
    out[order[: min(k, int(cand.sum()))]] = 1
    return out


@pytest.mark.parametrize("kind", ["normal", "integers", "constant", "prefix", "special"])
@pytest.mark.parametrize("density", [1.0, 0.5, 0.1])
def test_topk_mask_equals_stable_sort(kind: str, density: float) -> None:
    g = torch.Generator().manual_seed(sum(map(ord, kind)) + int(density * 10))
    for k in [0, 1, 3, 17, 32, 63, 64, 70]:
        x = _row(kind, g)
        cand = torch.rand(N, generator=g) < density
        out = torch.zeros(N, dtype=torch.int8, device=DEVICE)
        _mask_kernel[(1,)](x.to(DEVICE), cand.to(torch.int8).to(DEVICE), out, k, N=N)
        assert torch.equal(out.cpu(), _reference(x, cand, k)), (kind, density, k)
