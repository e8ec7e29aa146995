"""Oracle sampling: a Monte-Carlo estimate of the middle's share of attention, drawn from the true distribution.

Defined on the normalised attention distribution (the original drew from unnormalised logits, which is not a
distribution). Per query head, with middle logits ``l_i`` and ``q_i = softmax(l)_i`` restricted to the middle,
``n`` positions are drawn i.i.d. from ``q`` (inverse CDF on counter-based uniforms). A drawn position with count
``c_i`` gets the logit ``log(c_i / n) + logsumexp(l_middle)``, the others ``-inf``. Then the softmax keeps the
exact sink/local weights and the exact total middle mass ``Z_mid / Z``, and distributes that mass as
``c_i / n``: an unbiased estimate of the middle's contribution to the output. Rows with
``len <= sink + local + n`` stay dense. On CUDA one Triton launch (``triton_oracle.oracle_sample``: cdf, draws,
binary searches and counts per row, the noise computed in the kernel) rewrites the logits in place.
"""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.common import NEG_INF, AttnShape, middle_mask, seq_ids
from litesys.kernels import oracle as triton_oracle
from litesys.kernels.common import use_triton
from litesys.kernels.hash import counter_hash, hash_to_uniform


class OracleSampleProcessor:
    graph_safe = True  # no host sync, static shapes

    def __init__(self, n: int, sink: int, local: int, seed: int = 0, backend: str = "auto", head_start: int = 0):
        self.n, self.sink, self.local, self.seed = n, sink, local, seed
        self.backend = backend
        self.head_start = head_start  # global index of the first query head (tensor parallel): draws per global head

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        b, hq, width = logits.shape
        if width <= self.sink + self.local + self.n:
            return logits
        if use_triton(logits, self.backend):
            return triton_oracle.oracle_sample(logits, lengths, self.n, self.sink, self.local,
                                               seq_ids(meta, b, logits.device), self.seed, layer,
                                               head0=self.head_start)
        middle = middle_mask(lengths, width, self.sink, self.local)[:, None, :]
        lm = logits.masked_fill(~middle, NEG_INF)
        m = lm.amax(dim=-1, keepdim=True)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # rows without a middle (dense anyway)
        cdf = torch.exp(lm - m).cumsum(dim=-1)  # unnormalised: no division, so no rounding of the weights
        total = cdf[..., -1:]
        u = hash_to_uniform(counter_hash(self.seed, layer, seq_ids(meta, b, logits.device), lengths, hq, self.n,
                                         self.head_start))
        idx = torch.searchsorted(cdf, (u * total).contiguous(), right=True)
        last = (lengths.long() - self.local - 1).clamp(min=0)[:, None, None]  # u * total may round up to total
        idx = torch.minimum(idx, last)
        counts = torch.zeros(b, hq, width, device=logits.device).scatter_add_(-1, idx, torch.ones_like(u))
        sampled = torch.log(counts / self.n) + (m + torch.log(total))  # log(0) = -inf for positions not drawn
        sparse = middle & (lengths > self.sink + self.local + self.n)[:, None, None]
        return torch.where(sparse, sampled, logits)


def from_config(cfg, shape: AttnShape, backend: str) -> OracleSampleProcessor:
    return OracleSampleProcessor(cfg.attn_nsample, cfg.attn_sink, cfg.attn_local, cfg.attn_seed, backend,
                                 head_start=shape.q_head_start)
