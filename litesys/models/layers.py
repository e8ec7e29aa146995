"""Building blocks as plain tensors and functions, written once for 1 or N tensor-parallel ranks.

A single-GPU run is the ``world == 1`` case of the same code: column-parallel layers keep a slice of the
output features, row-parallel layers a slice of the input features followed by one all-reduce, and the
vocab-parallel embedding/lm_head a slice of the vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from litesys.models.loader import Checkpoint


@dataclass
class Dist:
    """Tensor-parallel position of this process. ``world == 1``: no collectives at all."""

    rank: int = 0
    world: int = 1
    group: object = None

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(x, group=self.group)
        return x

    def all_gather_last(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's ``x`` along the last dim (rank order)."""
        if self.world == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        torch.distributed.all_gather(parts, x.contiguous(), group=self.group)
        return torch.cat(parts, dim=-1)

    def broadcast_first(self, x: torch.Tensor) -> torch.Tensor:
        """tp-rank 0's ``x`` on every rank, in place (sampled tokens: one decision for the whole replica)."""
        if self.world > 1:
            torch.distributed.broadcast(x, group=self.group, group_src=0)
        return x

    def split(self, n: int, what: str) -> tuple[int, int]:
        """[start, stop) of this rank's share of ``n`` items (heads, features, vocab rows)."""
        if n % self.world:
            raise ValueError(f"{what} ({n}) is not divisible by the tensor-parallel size {self.world}; "
                             "pick a tensor-parallel size that divides it")
        per = n // self.world
        return self.rank * per, (self.rank + 1) * per


def column_parallel(ckpt: Checkpoint, names: list[str], shards: list[tuple[int, int]], dtype, device,
                    dim: int = 0) -> torch.Tensor:
    """Fuse several checkpoint tensors along ``dim`` (q/k/v, gate/up), each cut to this rank's rows."""
    parts = [ckpt.get(n, dim=dim, start=s, stop=e) for n, (s, e) in zip(names, shards)]
    return torch.cat(parts, dim=dim).to(device=device, dtype=dtype).contiguous()


def row_parallel(ckpt: Checkpoint, name: str, shard: tuple[int, int], dtype, device) -> torch.Tensor:
    """This rank's input-feature columns of a row-parallel weight ([out, in] -> [out, in/world])."""
    return ckpt.get(name, dim=1, start=shard[0], stop=shard[1]).to(device=device, dtype=dtype).contiguous()


def embedding(ids: torch.Tensor, weight: torch.Tensor, vocab_start: int, dist: Dist) -> torch.Tensor:
    """Vocab-parallel lookup: each rank embeds the ids in its vocab slice, zeros elsewhere, then all-reduce."""
    if dist.world == 1:
        return F.embedding(ids, weight)
    local = ids - vocab_start
    inside = (local >= 0) & (local < weight.shape[0])
    out = F.embedding(local.clamp(0, weight.shape[0] - 1), weight) * inside.unsqueeze(-1).to(weight.dtype)
    return dist.all_reduce(out)
