"""Tensor-parallel layers shared by the ``*_dist.py`` variants: the slice of a weight a rank reads, the shapes
a tensor-parallel size can split, and the vocab-parallel embedding.

A model's checkpoint table names each tensor's dimensions by symbol ("q", "kv", "inter", "vocab", "hidden", ...).
A variant splits some symbols over the ranks (``Shards``) and every tensor is cut along its split dimension:
column-parallel when that is the output dim (fused q/k/v, gate/up, the vocabulary rows), row-parallel when it is
the input dim (o_proj, down_proj: an all-reduce completes their output). Tensors without one are replicated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from litesys.distributed import Dist
from litesys.models.loader import Checkpoint, Dims

Shards = dict[str, tuple[int, int]]  # symbol -> this rank's [start, stop) along that dimension


def read_shard(ckpt: Checkpoint, name: str, dims: Dims, shards: Shards) -> torch.Tensor:
    """This rank's part of tensor ``name``: cut along its first split dimension (whole when it has none). A packed
    dimension (a tuple of symbols: stacked experts' gate rows then up rows) is cut block by block."""
    for d, sym in enumerate(dims):
        blocks = sym if isinstance(sym, tuple) else (sym,)
        if blocks[0] not in shards:
            continue
        s, e = shards[blocks[0]]
        if len(blocks) == 1:
            return ckpt.get(name, d, s, e)
        n = ckpt.shape(name)[d] // len(blocks)
        return torch.cat([ckpt.get(name, d, k * n + s, k * n + e) for k in range(len(blocks))], dim=d)
    return ckpt.get(name)


def kv_head_shard(dist: Dist, num_kv_heads: int) -> tuple[int, int]:
    """This rank's [start, stop) KV heads: split when there are at least as many as ranks, else replicated.

    With fewer KV heads than ranks (e.g. 8 KV heads on TP 16, or 2 on TP 4), each rank keeps the one KV head
    its query heads attend with: rank r holds query heads [r*hq/w, (r+1)*hq/w), which GQA maps to KV head
    r*hkv//w when ``w`` is a multiple of ``hkv``.
    """
    if num_kv_heads >= dist.world:
        return dist.split(num_kv_heads, "num_key_value_heads")
    h = dist.rank * num_kv_heads // dist.world
    return h, h + 1


def check_tp_shape(dims: dict[str, int], num_kv_heads: int, world: int) -> None:
    """One error naming every dimension that ``world`` cannot shard, before any weight is read."""
    bad = [f"{name} ({n})" for name, n in dims.items() if n % world]
    if num_kv_heads % world and world % num_kv_heads:
        bad.append(f"num_key_value_heads ({num_kv_heads}, neither a multiple nor a divisor of it)")
    if bad:
        ok = [t for t in range(1, 65) if all(n % t == 0 for n in dims.values())
              and (num_kv_heads % t == 0 or t % num_kv_heads == 0)]
        raise ValueError(f"tensor-parallel size {world} does not divide {', '.join(bad)}; "
                         f"sizes that fit this model: {', '.join(map(str, ok))}")


def vocab_parallel_embedding(ids: torch.Tensor, weight: torch.Tensor, vocab_start: int, dist: Dist) -> torch.Tensor:
    """Each rank embeds the ids in its vocabulary rows, zeros elsewhere; the all-reduce assembles the rows."""
    local = ids - vocab_start
    inside = (local >= 0) & (local < weight.shape[0])
    out = F.embedding(local.clamp(0, weight.shape[0] - 1), weight) * inside.unsqueeze(-1).to(weight.dtype)
    return dist.all_reduce(out)
