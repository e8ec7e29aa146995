"""The 32-bit integer hashes of LiteSys's counter-based randomness, on int64 tensors / Triton int64 values in
[0, 2^32) (products may wrap past 2^63; only the low 32 bits are kept, which wrapping leaves exact).

Two hashes that differ in value, each with one definition: ``lowbias32`` draws the sampler's tokens
(``engine/sampler.py``); murmur3's finaliser ``fmix32`` builds ``counter_hash``, the random sparse methods' noise,
which the kernels recompute bit-identically (``hash_base`` / ``hash_at``). Replacing one by the other would
change every sampled token or every random selection.
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl  # noqa: F401 - the interpreter wants tl among a jit function's globals
except ImportError:  # pragma: no cover - CPU installs without triton
    triton = None

M32 = 0xFFFFFFFF


def lowbias32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (Wellons' hash-prospector); ``x`` is masked to 32 bits first."""
    x = x & M32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & M32
    x = ((x ^ (x >> 15)) * 0x846CA68B) & M32
    return x ^ (x >> 16)


def fmix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser (``x`` already in [0, 2^32))."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & M32
    return x ^ (x >> 16)


def counter_hash(seed: int, layer: int, seq: torch.Tensor, lengths: torch.Tensor, heads: int,
                 width: int, head_start: int = 0) -> torch.Tensor:
    """[B, heads, width] int64 hashes in [0, 2^32), a pure function of (seed, layer, seq id, length, head, index).

    Counter-based rather than a stateful generator: a sequence's draw does not depend on which other
    sequences share the batch, on the padded width, or on the device, and the length acts as the step.
    Heads are global indices ``head_start .. head_start + heads - 1`` (a tensor-parallel rank's offset), so a
    head draws the same whichever rank holds it.
    """
    dev = lengths.device
    base = fmix32((seq.long() * 0x9E3779B1 + seed * 0x632BE5AB + layer) & M32)
    base = fmix32((base + lengths.long() * 0x27D4EB2F) & M32)  # [B]
    h = torch.arange(head_start, head_start + heads, device=dev, dtype=torch.int64)
    hb = fmix32((base[:, None] + h[None, :] * 0x165667B1) & M32)  # [B, heads]
    i = torch.arange(width, device=dev, dtype=torch.int64)
    return fmix32((hb[:, :, None] + i[None, None, :] * 0x9E3779B1) & M32)


def hash_to_uniform(x: torch.Tensor) -> torch.Tensor:
    """int hashes in [0, 2^32) -> float32 uniforms in [0, 1) (24 random bits, exactly representable)."""
    return (x >> 8).to(torch.float32) * (2.0 ** -24)


def seed_hash(seeds: torch.Tensor) -> torch.Tensor:
    """The step-independent half of the sampler's draw hash (int64 [B]): a slot keeps it, so a step hashes only its
    counter."""
    return lowbias32(lowbias32(seeds ^ 0x9E3779B9) ^ (seeds >> 32))


def uniform(hashed: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The sampler's deterministic U[0, 1) per row from (seed, step); hashed: ``seed_hash(seeds)`` int64 [B], steps:
    int [B]."""
    return hash_to_uniform(lowbias32(hashed ^ steps.long()))


if triton is not None:

    @triton.jit
    def fmix32_tl(x):
        """``fmix32`` in a kernel."""
        x = x ^ (x >> 16)
        x = (x * 0x85EBCA6B) & 0xFFFFFFFF
        x = x ^ (x >> 13)
        x = (x * 0xC2B2AE35) & 0xFFFFFFFF
        return x ^ (x >> 16)

    @triton.jit
    def hash_base(seed, layer, seq, length, head):
        """Per (sequence, head) base of ``counter_hash`` (seq, length, head: int64 scalars)."""
        base = fmix32_tl((seq * 0x9E3779B1 + seed * 0x632BE5AB + layer) & 0xFFFFFFFF)
        base = fmix32_tl((base + length * 0x27D4EB2F) & 0xFFFFFFFF)
        return fmix32_tl((base + head * 0x165667B1) & 0xFFFFFFFF)

    @triton.jit
    def hash_at(hb, idx):
        """``counter_hash`` at positions ``idx`` (int64) for base ``hb``."""
        return fmix32_tl((hb + idx * 0x9E3779B1) & 0xFFFFFFFF)
