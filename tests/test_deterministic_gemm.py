"""Batch-invariant GEMM: a row's result is bitwise the same whatever the number (and contents) of the other rows.

The reference for the values is an fp64 product of the same inputs; invariance is checked against the row computed
alone or inside another batch, with random contents in every other row. The Triton kernel runs on the CPU
interpreter without a GPU (conftest sets TRITON_INTERPRET=1) and on the real GPU otherwise.
"""
from __future__ import annotations

import pytest
import torch

from litesys.kernels.ref.gemm_invariant import ROWS, linear_ref

MS = (1, 3, 7, 64, 100)


def _exact(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = x.double() @ w.double().T
    return y if b is None else y + b.double()


def _check_invariant(fn, k: int, n: int, dtype: torch.dtype, bias: bool, device: str = "cpu", seed: int = 0) -> None:
    """Rows of a 100-row product, recomputed at every M of MS at random offsets among random other rows."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g).to(device, dtype)
    b = torch.randn(n, generator=g).to(device, dtype) if bias else None
    x = torch.randn(100, k, generator=g).to(device, dtype)
    full = fn(x, w, b)
    for m in MS:
        for _ in range(2):
            rows = torch.randperm(100, generator=g)[:m].to(device)  # any rows, in any order, at any position
            xs = torch.randn(m + 5, k, generator=g).to(device, dtype)  # 5 more random rows around them
            at = torch.randperm(m + 5, generator=g)[:m].to(device)
            xs[at] = x[rows]
            out = fn(xs, w, b)
            assert torch.equal(out[at], full[rows]), (m, k, n, dtype, bias)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    err = (full.double() - _exact(x, w, b)).abs().max() / _exact(x, w, b).abs().max()
    assert err < tol, float(err)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k,n", [(64, 192), (80, 160), (128, 64), (1024, 2048), (64, 151936)])
def test_torch_twin_rows_do_not_depend_on_the_batch(k, n, dtype):
    # (64, 151936): the tiny test models' lm_head; (1024, 2048): a real projection's inner size
    _check_invariant(linear_ref, k, n, dtype, bias=(k % 128 != 0))


def test_torch_twin_chunks_of_other_sizes_and_empty_input():
    for rows in (1, 8, 32):
        _check_invariant(lambda x, w, b, r=rows: linear_ref(x, w, b, rows=r), 96, 64, torch.float32, bias=True)
    w = torch.randn(8, 4)
    assert linear_ref(torch.randn(0, 4), w).shape == (0, 8)
    assert ROWS % 8 == 0


def test_invariant_linear_keeps_leading_dims_and_equals_the_twin_on_cpu():
    from litesys.kernels.gemm_invariant import invariant_linear

    x, w, b = torch.randn(3, 5, 32), torch.randn(24, 32), torch.randn(24)
    y = invariant_linear(x, w, b)
    assert y.shape == (3, 5, 24)
    assert torch.equal(y.reshape(15, 24), linear_ref(x.reshape(15, 32), w, b))
    torch.testing.assert_close(y, torch.nn.functional.linear(x, w, b), rtol=1e-5, atol=1e-5)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tiles", [None, (16, 32, 32, 4, 1)])  # default tiles; small ones: several M/N tiles
@pytest.mark.parametrize("k,n,bias", [(80, 96, True), (64, 40, False)])  # K tail (80 = 64 + 16), N tail
def test_triton_gemm_matches_fp64_and_is_batch_invariant(k, n, bias, tiles, dtype):
    pytest.importorskip("triton")
    from litesys.kernels.gemm_invariant import GemmTiles, gemm

    t = GemmTiles(*tiles) if tiles else None
    _check_invariant(lambda x, w, b: gemm(x, w, b, tiles=t), k, n, dtype, bias, device=_device())


def test_triton_gemm_strided_input_and_shape_errors():
    pytest.importorskip("triton")
    from litesys.kernels.gemm_invariant import gemm

    dev = _device()
    x = torch.randn(6, 64, device=dev)[:, :32]  # rows with a stride of 64
    w = torch.randn(48, 32, device=dev)
    torch.testing.assert_close(gemm(x, w), x @ w.T, rtol=1e-5, atol=1e-5)
    assert gemm(x[:0], w).shape == (0, 48)
    with pytest.raises(ValueError, match="do not fit y = x @ w.T"):
        gemm(x, w[:, :16])
    with pytest.raises(ValueError, match="do not fit y = x @ w.T"):
        gemm(x, w, torch.randn(47, device=dev))


def test_tiles_depend_on_the_weight_only():
    from litesys.kernels.gemm_invariant import gemm_tiles

    # narrow weights get narrow N tiles so one M tile still covers every SM; fp32 gets its own small tiles
    assert gemm_tiles(151936, 4096, torch.bfloat16, 132).block_n == 128
    assert gemm_tiles(4096, 4096, torch.bfloat16, 132).block_n == 32
    assert gemm_tiles(1024, 1024, torch.float32, 132).block_m == 32
