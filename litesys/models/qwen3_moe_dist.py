"""Tensor-parallel Qwen3-MoE: the single-GPU executor behind the ``TensorParallel`` mixin.

``qwen3_moe.py`` is already written for ``dist.world`` ranks: each rank reads only its slice of every
expert's intermediate dim (gate/up rows, down columns), keeps the full router, computes the (identical)
routing itself and all-reduces once after the MoE block -- the experts are row-parallel as a whole.
Here: the TP shape check with the MoE dimensions and the KV-head replication of the dense variant.
"""
from __future__ import annotations

from litesys.models.config import ModelConfig
from litesys.models.qwen3_dist import TensorParallel
from litesys.models.qwen3_moe import Qwen3MoeForCausalLM, sparse_layers


class Qwen3MoeDistForCausalLM(TensorParallel, Qwen3MoeForCausalLM):
    @classmethod
    def tp_dims(cls, cfg: ModelConfig) -> dict[str, int]:
        dims = super().tp_dims(cfg)
        sparse = sparse_layers(cfg)
        if all(sparse):  # no dense MLP layer: intermediate_size is never cut
            dims.pop("intermediate_size")
        if any(sparse):
            dims["moe_intermediate_size"] = int(cfg.raw["moe_intermediate_size"])
        return dims
