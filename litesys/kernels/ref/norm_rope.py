"""Plain-PyTorch twins of ``kernels/norm_rope.py``: the CPU path and the reference; they round where transformers
rounds."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual) * weight, x + residual); ``residual=None`` means no add."""
    r = x if residual is None else x + residual
    rf = r.float()
    y = (rf * torch.rsqrt(rf.pow(2).mean(-1, keepdim=True) + eps)).to(r.dtype)
    return weight * y, r


def sum_parts(parts: torch.Tensor) -> torch.Tensor:
    """[S, T, H] -> [T, H] fp32: part 0 + part 1 + ... in that order (elementwise adds: a row's sum never depends
    on the other rows), what ``add_rms_norm`` does with a 3-D input."""
    acc = parts[0].float()
    for s in range(1, parts.shape[0]):
        acc = acc + parts[s]
    return acc


def qk_norm_rope(qkv: torch.Tensor, q_norm: torch.Tensor | None, k_norm: torch.Tensor | None,
                 rope: torch.Tensor, positions: torch.Tensor, nq: int, nkv: int, eps: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split fused qkv [T, (nq+2nkv)·D] into q, k (per-head RMSNorm if given, then RoPE) and v."""
    T, D = qkv.shape[0], rope.shape[-1]
    q, k, v = qkv.split([nq * D, nkv * D, nkv * D], dim=-1)
    q, k, v = q.view(T, nq, D), k.view(T, nkv, D), v.view(T, nkv, D)
    if q_norm is not None:
        q, k = add_rms_norm(q, None, q_norm, eps)[0], add_rms_norm(k, None, k_norm, eps)[0]
    cs = rope[positions].to(qkv.dtype)
    cos, sin = cs[:, 0, None, :], cs[:, 1, None, :]
    half = D // 2

    def rot(x):
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin

    return rot(q), rot(k), v


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up of [..., 2I] (gate columns first) -> [..., I]."""
    g, u = gate_up.chunk(2, dim=-1)
    return F.silu(g) * u
