"""Tensor-parallel Qwen3: the single-device executor reading this rank's slices, plus its collectives.

* fused q/k/v and gate/up are column-parallel: this rank's heads / intermediate features, read as slices;
* o_proj and down_proj are row-parallel: this rank's input features, each output completed by one all-reduce;
* embed_tokens and lm_head are vocab-parallel: this rank's vocabulary rows; the embedding is all-reduced, the
  logits all-gathered, so every rank holds the full logits;
* KV heads are split when there are at least as many as ranks, else replicated (``kv_head_shard``).

``TensorParallel`` is the whole difference, so the other executors of this layer stack reuse it
(``class Qwen2DistForCausalLM(TensorParallel, Qwen2ForCausalLM)``).
"""
from __future__ import annotations

import torch

from litesys.distributed import Dist
from litesys.models.config import ModelConfig
from litesys.models.loader import Checkpoint, Dims
from litesys.models.qwen3 import Qwen3ForCausalLM
from litesys.models.tp import check_tp_shape, kv_head_shard, read_shard, vocab_parallel_embedding


class TensorParallel:
    """Mixin in front of a single-device executor: TP shape check, this rank's heads and slices, collectives."""

    cfg: ModelConfig

    def __init__(self, cfg: ModelConfig, device: torch.device | str, dtype: torch.dtype, max_seq_len: int,
                 dist: Dist):
        self.check_shape(cfg, dist.world)
        super().__init__(cfg, device, dtype, max_seq_len)  # type: ignore[call-arg]
        self.dist, D = dist, cfg.head_dim
        self.q_heads = dist.split(cfg.num_heads, "num_attention_heads")
        self.kv_heads = kv_head_shard(dist, cfg.num_kv_heads)
        (q0, q1), (k0, k1) = self.q_heads, self.kv_heads
        self.shards = {"q": (q0 * D, q1 * D), "kv": (k0 * D, k1 * D),
                       **{sym: dist.split(n, name) for sym, (name, n) in self.split_sizes(cfg).items()}}

    @classmethod
    def check_shape(cls, cfg: ModelConfig, world: int) -> None:
        """One-line ValueError naming every dimension ``world`` ranks cannot split (before any weight is read)."""
        check_tp_shape({"num_attention_heads": cfg.num_heads, **dict(cls.split_sizes(cfg).values())},
                       cfg.num_kv_heads, world)

    @classmethod
    def split_sizes(cls, cfg: ModelConfig) -> dict[str, tuple[str, int]]:
        """Symbols cut into ``world`` equal shares besides the heads: symbol -> (config field, size)."""
        return {"inter": ("intermediate_size", cfg.intermediate_size), "vocab": ("vocab_size", cfg.vocab_size)}

    def read(self, ckpt: Checkpoint, name: str, dims: Dims) -> torch.Tensor:
        return read_shard(ckpt, name, dims, self.shards)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return vocab_parallel_embedding(ids, self.embed, self.shards["vocab"][0], self.dist)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        return self.dist.all_reduce(x)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dist.all_gather_last(super().compute_logits(hidden))  # type: ignore[misc]


class Qwen3DistForCausalLM(TensorParallel, Qwen3ForCausalLM):
    pass
