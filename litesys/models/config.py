"""Model config read from a checkpoint's config.json (no transformers classes at run time)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ModelConfig:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    max_position_embeddings: int
    rope: dict
    eos_token_ids: list[int]
    attention_bias: bool = False
    raw: dict = field(default_factory=dict)  # the whole config.json, for model-specific fields (MoE)

    @classmethod
    def from_dir(cls, path: Path) -> ModelConfig:
        raw = json.loads((path / "config.json").read_text())
        rope = dict(raw.get("rope_parameters") or {})
        if raw.get("rope_scaling"):  # pre-v5 checkpoints keep theta and scaling apart
            rope.update(raw["rope_scaling"])
        rope.setdefault("rope_theta", raw.get("rope_theta", 10000.0))
        if "type" in rope and "rope_type" not in rope:
            rope["rope_type"] = rope.pop("type")
        heads = raw["num_attention_heads"]
        eos = _eos_ids(path, raw)
        return cls(
            model_type=raw.get("model_type", ""), vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
            intermediate_size=raw.get("intermediate_size", 0), num_layers=raw["num_hidden_layers"],
            num_heads=heads, num_kv_heads=raw.get("num_key_value_heads") or heads,
            head_dim=raw.get("head_dim") or raw["hidden_size"] // heads, rms_norm_eps=raw.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            max_position_embeddings=raw.get("max_position_embeddings", 32768), rope=rope, eos_token_ids=eos,
            attention_bias=bool(raw.get("attention_bias", False)), raw=raw,
        )


def _eos_ids(path: Path, raw: dict) -> list[int]:
    """EOS ids from generation_config.json and config.json together (Qwen: <|im_end|> and <|endoftext|>)."""
    ids: list[int] = []
    sources = [raw]
    gen = path / "generation_config.json"
    if gen.exists():
        sources.insert(0, json.loads(gen.read_text()))
    for src in sources:
        e = src.get("eos_token_id")
        for i in (e if isinstance(e, list) else [e]):
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    return ids
