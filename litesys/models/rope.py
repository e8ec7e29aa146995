"""Rotary position embeddings computed as transformers does (default, linear, yarn, llama3) and their cos/sin table."""
from __future__ import annotations

import math

import torch


def _yarn(base: float, dim: int, p: dict, max_pos: int) -> tuple[torch.Tensor, float]:
    factor = p.get("factor")
    orig = p.get("original_max_position_embeddings") or max_pos
    if factor is None:
        factor = max_pos / orig

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attn_factor = p.get("attention_factor")
    if attn_factor is None:
        if p.get("mscale") and p.get("mscale_all_dim"):
            attn_factor = mscale(factor, p["mscale"]) / mscale(factor, p["mscale_all_dim"])
        else:
            attn_factor = mscale(factor)
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1

    def corr_dim(rot: float) -> float:
        return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = corr_dim(beta_fast), corr_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    extrapolation = 1.0 - ramp  # share of the unscaled frequency per dimension
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attn_factor)


def _llama3(inv_freq: torch.Tensor, p: dict) -> torch.Tensor:
    """Llama 3.1's scaling: long wavelengths divided by ``factor``, short ones kept, a smooth ramp between."""
    factor, low, high = float(p["factor"]), float(p["low_freq_factor"]), float(p["high_freq_factor"])
    orig = p["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > orig / low, inv_freq / factor, inv_freq)
    smooth = (orig / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < orig / high) & ~(wavelen > orig / low)
    return torch.where(medium, smoothed, scaled)


def inv_freq_and_scale(head_dim: int, rope: dict, max_position_embeddings: int) -> tuple[torch.Tensor, float]:
    """``rope`` holds ``rope_theta`` and, optionally, ``rope_type``/``factor``/... (config.json's rope params)."""
    base = float(rope.get("rope_theta", 10000.0))
    dim = int(head_dim * rope.get("partial_rotary_factor", 1.0))
    kind = rope.get("rope_type", rope.get("type", "default")) or "default"
    if kind == "default":
        return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)), 1.0
    if kind == "linear":
        inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        return inv / float(rope["factor"]), 1.0
    if kind == "yarn":
        return _yarn(base, dim, rope, max_position_embeddings)
    if kind == "llama3":
        return _llama3(1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)), rope), 1.0
    raise ValueError(f"rope_type {kind!r} is not supported (supported: default, linear, yarn, llama3)")


def rope_cos_sin(head_dim: int, rope: dict, max_position_embeddings: int, max_len: int,
                 device: torch.device | str) -> torch.Tensor:
    """fp32 table ``[max_len, 2, head_dim]`` of (cos, sin), each the half-dim frequencies repeated twice."""
    inv_freq, scale = inv_freq_and_scale(head_dim, rope, max_position_embeddings)
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return torch.stack([emb.cos() * scale, emb.sin() * scale], dim=1).to(device)
