"""Tensor-parallel Qwen3-MoE: the dense variant's ``TensorParallel`` plus the experts' intermediate dim.

Each rank reads only its slice of every expert's intermediate dim (gate/up rows, down columns), keeps the
full router, computes the (identical) routing itself and all-reduces once after the MoE block -- the experts
are row-parallel as a whole.
"""
from __future__ import annotations

from litesys.models.config import ModelConfig
from litesys.models.qwen3_dist import TensorParallel
from litesys.models.qwen3_moe import Qwen3MoeForCausalLM, sparse_layers


class Qwen3MoeDistForCausalLM(TensorParallel, Qwen3MoeForCausalLM):
    per_slot_to_norm = False  # the all-reduce takes the summed [T, H]

    @classmethod
    def split_sizes(cls, cfg: ModelConfig) -> dict[str, tuple[str, int]]:
        sizes = super().split_sizes(cfg)
        sparse = sparse_layers(cfg)
        if all(sparse):  # no dense MLP layer: intermediate_size is never cut
            del sizes["inter"]
        if any(sparse):
            sizes["moe_inter"] = ("moe_intermediate_size", int(cfg.raw["moe_intermediate_size"]))
        return sizes
