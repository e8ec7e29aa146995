"""model_type -> executor class. Adding a model = one file + one line here."""
from __future__ import annotations

import importlib

# name -> "module:Class" (imported lazily so one model's extra needs never break the others)
MODELS: dict[str, str] = {
    "qwen2": "litesys.models.qwen2:Qwen2ForCausalLM",
    "qwen3": "litesys.models.qwen3:Qwen3ForCausalLM",
}
ALIASES = {"qwen3moe": "qwen3_moe", "qwen2.5": "qwen2"}


def resolve(model_class: str | None, model_type: str) -> tuple[str, type]:
    name = (model_class or model_type or "").lower()
    name = ALIASES.get(name, name)
    if name not in MODELS:
        raise ValueError(f"unsupported model type {name!r}; supported: {', '.join(sorted(MODELS))} "
                         "(pass model_class= to override the config's model_type)")
    module, cls = MODELS[name].split(":")
    return name, getattr(importlib.import_module(module), cls)
