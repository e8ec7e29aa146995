"""model_type -> executor class. Adding a model = one file + one line in MODELS (+ one in DIST_MODELS for TP)."""
from __future__ import annotations

import importlib

import torch

from litesys.distributed import Dist
from litesys.models.config import ModelConfig

# name -> "module:Class" (imported lazily so one model's extra needs never break the others)
MODELS: dict[str, str] = {
    "qwen2": "litesys.models.qwen2:Qwen2ForCausalLM",
    "qwen3": "litesys.models.qwen3:Qwen3ForCausalLM",
    "qwen3_moe": "litesys.models.qwen3_moe:Qwen3MoeForCausalLM",
    "llama": "litesys.models.llama:LlamaForCausalLM",
}
# optional tensor-parallel variants (the executor + this rank's slices and the collectives)
DIST_MODELS: dict[str, str] = {
    "qwen2": "litesys.models.qwen2_dist:Qwen2DistForCausalLM",
    "qwen3": "litesys.models.qwen3_dist:Qwen3DistForCausalLM",
    "qwen3_moe": "litesys.models.qwen3_moe_dist:Qwen3MoeDistForCausalLM",
    "llama": "litesys.models.llama_dist:LlamaDistForCausalLM",
}
ALIASES = {"qwen3moe": "qwen3_moe", "qwen2.5": "qwen2", "qwen2_5": "qwen2"}


def _load(spec: str) -> type:
    module, cls = spec.split(":")
    return getattr(importlib.import_module(module), cls)


def resolve(model_class: str | None, model_type: str) -> tuple[str, type]:
    name = (model_class or model_type or "").lower()
    name = ALIASES.get(name, name)
    if name not in MODELS:
        raise ValueError(f"unsupported model type {name!r}; supported: {', '.join(sorted(MODELS))} "
                         "(pass model_class= to override the config's model_type)")
    return name, _load(MODELS[name])


def dist_variant(name: str) -> type:
    if name not in DIST_MODELS:
        raise ValueError(f"model type {name!r} has no tensor-parallel variant; run it with tensor_parallel_size=1")
    return _load(DIST_MODELS[name])


def build_model(name: str, cfg: ModelConfig, device: torch.device | str, dtype: torch.dtype, max_seq_len: int,
                dist: Dist | None = None):
    """The executor of model ``name`` (from ``resolve``), or its tensor-parallel variant when ``dist.world > 1``."""
    if dist is None or dist.world == 1:
        return _load(MODELS[name])(cfg, device, dtype, max_seq_len)
    return dist_variant(name)(cfg, device, dtype, max_seq_len, dist)
