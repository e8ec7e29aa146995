"""Oracle top-p: per query head, the smallest set of middle positions holding ``p`` of the middle's attention mass.

Defined on the normalised distribution ``q = softmax(l_middle)``: positions by decreasing ``q``, kept while the
mass before them is ``< p`` (so the position that crosses ``p`` is kept). Sinks and the local window are always
kept; the kept logits are unchanged, so softmax renormalises over what is kept. Per query head (not per KV group):
it is an oracle for studying attention sparsity, not a method that saves reads.
On CUDA one Triton launch (``triton_oracle.oracle_topp``: threshold by binary search, no sort) drops in place.
"""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.common import NEG_INF, AttnShape, apply_keep, middle_mask
from litesys.kernels import oracle as triton_oracle
from litesys.kernels.common import use_triton


class OracleTopPProcessor:
    graph_safe = True  # no host sync, static shapes

    def __init__(self, p: float, sink: int, local: int, backend: str = "auto"):
        self.p, self.sink, self.local = p, sink, local
        self.backend = backend

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        if use_triton(logits, self.backend) and triton_oracle.fits(logits.shape[-1]):
            return triton_oracle.oracle_topp(logits, lengths, self.p, self.sink, self.local)
        middle = middle_mask(lengths, logits.shape[-1], self.sink, self.local)
        lm = logits.masked_fill(~middle[:, None, :], NEG_INF)
        m = lm.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        w_sorted, order = torch.exp(lm - m).sort(dim=-1, descending=True, stable=True)
        cum = w_sorted.cumsum(dim=-1)
        before = torch.cat([torch.zeros_like(cum[..., :1]), cum[..., :-1]], dim=-1)
        keep_sorted = (before < self.p * cum[..., -1:]) & (w_sorted > 0)
        keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
        return apply_keep(logits, keep, middle, lengths > self.sink + self.local)


def from_config(cfg, shape: AttnShape, backend: str) -> OracleTopPProcessor:
    return OracleTopPProcessor(cfg.attn_oracle_topp, cfg.attn_sink, cfg.attn_local, backend)
