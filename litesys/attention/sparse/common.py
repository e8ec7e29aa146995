"""Shared pieces of the logits processors: the sink / middle / local split, group averaging, sequence ids.

Every processor sees raw decode logits ``[B, Hq, L]`` (fp32, ``-inf`` at positions >= each length) and returns
logits where dropped positions are ``-inf``. Everything here is vectorized over the batch with masks and has
no host synchronisation, so processors can run inside a captured CUDA graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from litesys.attention.meta import AttnMeta

NEG_INF = float("-inf")


class GroupComm(Protocol):
    """Sums a tensor over the tensor-parallel ranks that hold parts of the same KV groups (a ``Dist``)."""

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class SplitGroups:
    """This rank holds only part of each of its KV groups' query heads (TP with fewer KV heads than ranks)."""

    comm: GroupComm  # the ranks sharing this rank's KV heads
    group_size: int  # query heads per KV group over all of them


@dataclass(frozen=True)
class AttnShape:
    """This rank's attention shape, what a method's factory may need: its layers and heads, where those heads sit
    in the model.

    Single process: all heads, offsets 0, no ``group``. Tensor parallel: the rank's query / KV heads, the global
    index of its first ones (the random methods hash global heads, so every layout draws the same) and, when a
    KV group's query heads are spread over several ranks, ``group``: the communicator over those ranks (group
    scores are reduced over it, so a selection always covers the whole group)."""

    num_q_heads: int
    num_kv_heads: int
    num_layers: int
    q_head_start: int = 0
    kv_head_start: int = 0
    group: GroupComm | None = None
    group_size: int = 0  # query heads per KV group in the model (0: num_q_heads // num_kv_heads)

    @property
    def split(self) -> SplitGroups | None:
        """How to complete a group score over the ranks (None: this rank holds whole groups, nothing to do)."""
        local = self.num_q_heads // self.num_kv_heads
        if self.group is None or self.group_size in (0, local):
            return None
        return SplitGroups(self.group, self.group_size)


def positions(length: int, device: torch.device) -> torch.Tensor:
    return torch.arange(length, device=device)


def middle_mask(lengths: torch.Tensor, max_len: int, sink: int, local: int) -> torch.Tensor:
    """[B, L] bool: the "middle" ``sink <= pos < len - local`` that a method may drop (sinks + local are kept)."""
    pos = positions(max_len, lengths.device)[None, :]
    return (pos >= sink) & (pos < (lengths.long() - local)[:, None])


def group_mean(logits: torch.Tensor, num_kv_heads: int, split: SplitGroups | None = None) -> torch.Tensor:
    """[B, Hq, L] -> [B, Hkv, L]: logits averaged over the query heads that share a KV head.

    ``split``: the group's other query heads live on other ranks; the partial sums are all-reduced over them and
    divided by the whole group's size, so every rank of the group gets the same, whole-group score."""
    b, hq, length = logits.shape
    x = logits.view(b, num_kv_heads, hq // num_kv_heads, length)
    if split is None:
        return x.mean(dim=2)
    return split.comm.all_reduce(x.sum(dim=2)) / split.group_size


def expand_groups(mask: torch.Tensor, num_q_heads: int) -> torch.Tensor:
    """[B, Hkv, L] -> [B, Hq, L] (each KV head's decision applies to all of its query heads)."""
    b, hkv, length = mask.shape
    return mask[:, :, None, :].expand(b, hkv, num_q_heads // hkv, length).reshape(b, num_q_heads, length)


def apply_keep(logits: torch.Tensor, keep_middle: torch.Tensor, middle: torch.Tensor,
               sparse_rows: torch.Tensor) -> torch.Tensor:
    """Drop middle positions not in ``keep_middle`` ([B, H, L]) for rows with ``sparse_rows`` ([B]) set."""
    drop = middle[:, None, :] & ~keep_middle & sparse_rows[:, None, None]
    return logits.masked_fill(drop, NEG_INF)


def drop_mask(keep: torch.Tensor, middle: torch.Tensor, sparse_rows: torch.Tensor) -> torch.Tensor:
    """[B, H, L] bool: middle positions not in ``keep`` of the ``sparse_rows`` (what ``apply_keep`` sets to -inf).

    Per KV head (H = Hkv) it stays 1/G the size of the logits; ``drop_groups`` applies it in one broadcast pass
    (instead of ``expand_groups`` materialising [B, Hq, L] and three more [B, Hq, L] passes in ``apply_keep``)."""
    return middle[:, None, :] & ~keep & sparse_rows[:, None, None]


def drop_groups(logits: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """``logits`` [B, Hq, L] with -inf where the KV head's ``drop`` [B, Hkv, L] is set (one pass, no expand)."""
    b, hq, width = logits.shape
    hkv = drop.shape[1]
    return logits.view(b, hkv, hq // hkv, width).masked_fill(drop[:, :, None, :], NEG_INF).view(b, hq, width)


def scatter_keep(indices: torch.Tensor, length: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[..., k] indices (+ optional validity) -> [..., length] bool mask with those positions set."""
    keep = torch.zeros(*indices.shape[:-1], length + 1, dtype=torch.bool, device=indices.device)
    if valid is not None:  # invalid picks go to a dump column that is cut off (no data-dependent shapes)
        indices = torch.where(valid, indices, length)
    keep.scatter_(-1, indices, True)
    return keep[..., :length]


def seq_ids(meta: AttnMeta, batch: int, device: torch.device) -> torch.Tensor:
    """Per-sequence id for the noise (``meta.seq_ids`` when the engine provides it, else zeros)."""
    ids = meta.seq_ids if meta is not None else None
    if ids is None:
        return torch.zeros(batch, dtype=torch.int64, device=device)
    return ids.to(device=device, dtype=torch.int64)
