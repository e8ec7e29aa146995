"""Random selection: per KV group, ``n`` middle positions drawn uniformly without replacement (fresh each step).

The draw is counter-based noise (``kernels.hash.counter_hash``) of (seed, layer, sequence id, length, KV head,
position): deterministic, independent of the batch composition. Rows with ``len <= sink + local + n`` stay dense.
On CUDA one Triton launch (``triton_ops.topk_apply``) computes the noise, selects and drops in place; the noise
is never materialised.
"""
from __future__ import annotations

import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.common import (
    AttnShape,
    drop_groups,
    drop_mask,
    middle_mask,
    positions,
    scatter_keep,
    seq_ids,
)
from litesys.kernels import sparse_ops as triton_ops
from litesys.kernels.common import use_triton
from litesys.kernels.hash import counter_hash


def random_subset(lengths: torch.Tensor, width: int, n: int, sink: int, local: int, num_kv_heads: int, seed: int,
                  layer: int, meta: AttnMeta, head_start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep [B, Hkv, width], middle [B, width]): n uniform distinct middle positions per (row, KV head);
    the KV heads are the global ``head_start ..`` (a tensor-parallel rank's)."""
    middle = middle_mask(lengths, width, sink, local)
    noise = counter_hash(seed, layer, seq_ids(meta, lengths.shape[0], lengths.device), lengths, num_kv_heads, width,
                         head_start)
    key = noise * width + positions(width, lengths.device)  # unique keys: the smallest n are a uniform subset
    key = key.masked_fill(~middle[:, None, :], torch.iinfo(torch.int64).max)
    return scatter_keep(key.topk(n, dim=-1, largest=False, sorted=False).indices, width), middle


def random_drop(logits: torch.Tensor, lengths: torch.Tensor, n: int, sink: int, local: int, num_kv_heads: int,
                seed: int, layer: int, meta: AttnMeta, backend: str, head_start: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(drop [B, Hkv, width] bool, middle [B, width]): the middle positions not drawn, on the rows left sparse."""
    b, _, width = logits.shape
    middle = middle_mask(lengths, width, sink, local)
    if use_triton(logits, backend) and triton_ops.fits(width):
        drop = triton_ops.topk_drop(lengths, b, num_kv_heads, width, n, sink, local, dense_upto=sink + local + n,
                                    seq=seq_ids(meta, b, lengths.device), seed=seed, layer=layer, head0=head_start)
        return drop, middle
    keep, middle = random_subset(lengths, width, n, sink, local, num_kv_heads, seed, layer, meta, head_start)
    return drop_mask(keep, middle, lengths > sink + local + n), middle


class RandomSelectProcessor:
    graph_safe = True  # no host sync, static shapes

    def __init__(self, n: int, sink: int, local: int, num_kv_heads: int, seed: int = 0, backend: str = "auto",
                 head_start: int = 0):
        self.n, self.sink, self.local, self.num_kv_heads, self.seed = n, sink, local, num_kv_heads, seed
        self.backend = backend
        self.head_start = head_start  # global index of the first KV head (tensor parallel): the noise's head

    def __call__(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta) -> torch.Tensor:
        if logits.shape[-1] <= self.sink + self.local + self.n:
            return logits
        if self._in_place(logits):
            return self._apply(logits, lengths, layer, meta)
        drop, _ = random_drop(logits, lengths, self.n, self.sink, self.local, self.num_kv_heads, self.seed, layer,
                              meta, self.backend, self.head_start)
        return drop_groups(logits, drop)

    def _in_place(self, logits: torch.Tensor) -> bool:
        return use_triton(logits, self.backend) and triton_ops.fits(logits.shape[-1]) and logits.is_contiguous()

    def _apply(self, logits: torch.Tensor, lengths: torch.Tensor, layer: int, meta: AttnMeta,
               correction: torch.Tensor | None = None) -> torch.Tensor:
        """One Triton launch: draw, drop (and correct) in place."""
        return triton_ops.topk_apply(logits, lengths, self.num_kv_heads, self.n, self.sink, self.local,
                                     self.sink + self.local + self.n, hashed=True,
                                     seq=seq_ids(meta, logits.shape[0], lengths.device), seed=self.seed,
                                     layer=layer, correction=correction, head0=self.head_start)


def from_config(cfg, shape: AttnShape, backend: str) -> RandomSelectProcessor:
    return RandomSelectProcessor(cfg.attn_random_select, cfg.attn_sink, cfg.attn_local, shape.num_kv_heads,
                                 cfg.attn_seed, backend, head_start=shape.kv_head_start)
