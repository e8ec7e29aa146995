"""Batched sampling on the device: greedy, temperature, top-k, top-p, min-p.

Randomness is counter-based: the draw for generated token ``t`` of a sequence with seed ``s`` is a hash of
``(s, t)``. A request's tokens therefore do not depend on which other requests share its batch, nor on
preemption and recomputation. One uniform per sequence picks the token by inverse CDF over the kept
candidates, so no per-vocabulary random tensor and, with top-k set, no full sort is needed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) on int64 tensors holding values in [0, 2^32).

    int64 products may wrap past 2^63; only the low 32 bits are kept, which wrapping leaves exact.
    """
    x = x & _M32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _M32
    x = ((x ^ (x >> 15)) * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def uniform(seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Deterministic U[0, 1) per row from (seed, step); seeds: int64 [B], steps: int [B]."""
    h = _mix32(seeds ^ 0x9E3779B9)
    h = _mix32(h ^ (seeds >> 32))
    h = _mix32(h ^ steps.long())
    return (h >> 8).double().div(float(1 << 24)).float()


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, request index, sample index): stable across runs and machines."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h ^= (p & 0xFFFFFFFFFFFFFFFF) + 0x9E3779B97F4A7C15 + ((h << 6) & 0xFFFFFFFFFFFFFFFF) + (h >> 2)
        h &= 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


@dataclass
class SamplingTensors:
    """Per-row sampling parameters on the device (rows = batch slots)."""

    temperature: torch.Tensor  # [B] fp32, 0 = greedy
    top_k: torch.Tensor  # [B] int64, 0 = off
    top_p: torch.Tensor  # [B] fp32
    min_p: torch.Tensor  # [B] fp32
    seed: torch.Tensor  # [B] int64


def topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-k, sorted descending. A vocabulary-wide topk is slow on the GPU; taking the top-k of each
    of C chunks first and then of the C·k survivors gives the same set far faster."""
    B, V = x.shape
    chunks = next((c for c in (64, 32, 16) if V % c == 0 and V // c >= 4 * k), 0)
    if not x.is_cuda or chunks == 0:
        return x.topk(k, dim=-1)
    v, i = x.view(B, chunks, V // chunks).topk(k, dim=-1)  # [B, C, k]
    i = i + (torch.arange(chunks, device=x.device) * (V // chunks)).view(1, chunks, 1)
    v2, j = v.reshape(B, chunks * k).topk(k, dim=-1)
    return v2, i.reshape(B, chunks * k).gather(1, j)


def candidates(logits: torch.Tensor, p: SamplingTensors, need_full_sort: bool, max_top_k: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Filtered candidates sorted by probability: (probs [B, K] with zeros for dropped, token ids [B, K])."""
    # order candidates on the raw logits (temperature does not change the order), then scale only those
    if need_full_sort:
        vals, idx = logits.sort(dim=-1, descending=True)
    else:
        vals, idx = topk(logits, max_top_k)
    vals = vals.float() / p.temperature.clamp_min(1e-6).unsqueeze(1)
    K = vals.shape[1]
    rank = torch.arange(K, device=logits.device).unsqueeze(0)
    k = torch.where(p.top_k > 0, p.top_k, K).clamp(max=K).unsqueeze(1)
    vals = vals.masked_fill(rank >= k, float("-inf"))
    probs = torch.softmax(vals, dim=-1)
    # top-p: keep the smallest prefix whose mass reaches top_p (a token stays if the mass before it is < top_p)
    before = probs.cumsum(-1) - probs
    keep = before < p.top_p.unsqueeze(1)
    # min-p: relative to the most likely token (invariant to the renormalisations above)
    keep &= probs >= p.min_p.unsqueeze(1) * probs[:, :1]
    keep[:, 0] = True
    probs = probs * keep
    return probs / probs.sum(-1, keepdim=True), idx


def sample(logits: torch.Tensor, p: SamplingTensors, steps: torch.Tensor, all_greedy: bool,
           need_full_sort: bool, max_top_k: int) -> torch.Tensor:
    """Next token per row: [B] int64. ``steps``: index of the token being drawn within each sequence."""
    greedy = logits.argmax(dim=-1)
    if all_greedy:
        return greedy
    probs, idx = candidates(logits, p, need_full_sort, max_top_k)
    cdf = probs.cumsum(-1)
    u = uniform(p.seed, steps).unsqueeze(1) * cdf[:, -1:]
    pick = (cdf <= u).sum(-1, keepdim=True).clamp(max=probs.shape[1] - 1)
    # never land on a dropped (zero-mass) candidate because of rounding at the top of the cdf
    pick = torch.minimum(pick, (probs > 0).sum(-1, keepdim=True) - 1)
    tok = idx.gather(1, pick).squeeze(1)
    return torch.where(p.temperature == 0, greedy, tok)
