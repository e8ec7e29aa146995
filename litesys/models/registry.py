"""model_type -> executor class. Adding a model = one file + one line here (plus one in DIST_MODELS for TP)."""
from __future__ import annotations

import importlib

# name -> "module:Class" (imported lazily so one model's extra needs never break the others)
MODELS: dict[str, str] = {
    "qwen2": "litesys.models.qwen2:Qwen2ForCausalLM",
    "qwen3": "litesys.models.qwen3:Qwen3ForCausalLM",
    "qwen3_moe": "litesys.models.qwen3_moe:Qwen3MoeForCausalLM",
}
# tensor-parallel variants (thin subclasses: sharding + collectives only)
DIST_MODELS: dict[str, str] = {
    "qwen2": "litesys.models.qwen2_dist:Qwen2DistForCausalLM",
    "qwen3": "litesys.models.qwen3_dist:Qwen3DistForCausalLM",
    "qwen3_moe": "litesys.models.qwen3_moe_dist:Qwen3MoeDistForCausalLM",
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


def dist_variant(name: str, single: type) -> type:
    if name not in DIST_MODELS:
        raise ValueError(f"model type {name!r} has no tensor-parallel variant; run it with tensor_parallel_size=1")
    return _load(DIST_MODELS[name])
