"""Random sampling with the importance-sampling correction of the logits.

The softmax denominator is ``Z = S_static + sum_{i in middle} e^{l_i}`` (and the numerator the same sum weighted
by ``v_i``). Keeping a uniform subset of ``n`` of the ``M`` middle positions without replacement gives each one
inclusion probability ``p = n / M``; the Horvitz-Thompson estimate of the middle sum is
``sum_{i kept} e^{l_i} / p = sum_{i kept} e^{l_i + log(M / n)}``. So the kept middle logits get ``+ log(M / n)``
(per row, as M depends on the length): numerator and denominator are unbiased, and the output (their ratio) is
consistent. Sinks and the local window are exact. Rows with ``len <= sink + local + n`` stay dense.
The draw is ``random_select``'s; on CUDA the same single launch also adds the correction in place.
"""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.common import AttnShape, drop_groups
from litesys.attention.sparse.random_select import RandomSelectProcessor, random_drop


class RandomNSampleProcessor(RandomSelectProcessor):
    """random_select's positions, with the importance-sampling correction on the kept middle logits."""

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        if logits.shape[-1] <= self.sink + self.local + self.n:
            return logits
        sparse_rows = lengths > self.sink + self.local + self.n
        m = (lengths - self.sink - self.local).clamp(min=1).to(torch.float32)
        correction = torch.log(m / self.n) * sparse_rows  # [B], 0 on dense rows
        if self._in_place(logits):  # the kept middle positions are exactly the kernel's kept candidates
            return self._apply(logits, lengths, layer, meta, correction)
        drop, middle = random_drop(logits, lengths, self.n, self.sink, self.local, self.num_kv_heads, self.seed,
                                   layer, meta, self.backend, self.head_start)
        return drop_groups(logits + (correction[:, None] * middle)[:, None, :], drop)


def from_config(cfg, shape: AttnShape, backend: str) -> RandomNSampleProcessor:
    return RandomNSampleProcessor(cfg.attn_random_nsample, cfg.attn_sink, cfg.attn_local, shape.num_kv_heads,
                                  cfg.attn_seed, backend, head_start=shape.kv_head_start)
