"""Tensor-parallel Qwen3: the single-GPU executor plus a TP shape check and KV-head replication.

Everything else is already written once for ``dist.world`` ranks in ``qwen3.py`` / ``layers.py``:

* fused qkv and gate_up are column-parallel (this rank's heads / intermediate features, read as slices);
* o_proj and down_proj are row-parallel (this rank's input features) followed by one all-reduce each;
* embed_tokens and lm_head are vocab-parallel (this rank's vocabulary rows); the embedding is all-reduced,
  the logits all-gathered, so every rank sees the full logits.

What only tensor parallelism needs lives here, in the ``TensorParallel`` mixin (reused by other executors,
e.g. ``class Qwen3MoeDistForCausalLM(TensorParallel, Qwen3MoeForCausalLM)`` with its own ``tp_dims``).
"""
from __future__ import annotations

import torch

from litesys.models.config import ModelConfig
from litesys.models.layers import Dist
from litesys.models.qwen3 import Qwen3ForCausalLM


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


class TensorParallel:
    """Mixin in front of a single-GPU executor: validate the TP shape, replicate KV heads when too few."""

    cfg: ModelConfig
    dist: Dist

    def __init__(self, cfg: ModelConfig, device: torch.device | str, dtype: torch.dtype, max_seq_len: int,
                 dist: Dist | None = None):
        dist = dist or Dist()
        check_tp_shape(self.tp_dims(cfg), cfg.num_kv_heads, dist.world)
        super().__init__(cfg, device, dtype, max_seq_len, dist=dist)  # type: ignore[call-arg]

    @classmethod
    def tp_dims(cls, cfg: ModelConfig) -> dict[str, int]:
        """Dimensions cut into ``world`` equal shares (KV heads are checked apart: they may be replicated)."""
        return {"num_attention_heads": cfg.num_heads, "intermediate_size": cfg.intermediate_size,
                "vocab_size": cfg.vocab_size}

    def head_shards(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.dist.split(self.cfg.num_heads, "num_attention_heads"),
                kv_head_shard(self.dist, self.cfg.num_kv_heads))


class Qwen3DistForCausalLM(TensorParallel, Qwen3ForCausalLM):
    pass
