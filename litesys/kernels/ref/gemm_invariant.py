"""PyTorch twin of ``gemm_invariant``: every row goes through a GEMM of the same shape, whatever M is.

The rows are cut into chunks of ``ROWS`` (the last one zero-padded) and each chunk is its own ``[ROWS, K]``
call: BLAS kernels pick their blocking (and the code path for edge rows) from the shape, so a fixed shape gives
every row the same arithmetic; bitwise equality across M is tested (tests/test_deterministic_gemm.py).
"""
from __future__ import annotations

import torch

ROWS = 16  # rows per GEMM call: a multiple of the CPU BLAS micro-kernel heights (6, 8, 16): no edge-row path


def linear_ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, rows: int = ROWS) -> torch.Tensor:
    """``x [M, K] @ w [N, K].T (+ b)`` -> ``[M, N]``, computed ``rows`` rows at a time (zero-padded)."""
    m, k = x.shape
    pad = (-m) % rows
    if pad:
        x = torch.cat([x, x.new_zeros(pad, k)])
    wt = w.t()
    parts = [c @ wt if b is None else torch.addmm(b, c, wt) for c in x.split(rows)]
    return torch.cat(parts)[:m] if parts else x.new_empty(0, w.shape[0])
