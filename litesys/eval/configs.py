"""The typed configs an eval run carries, and their record in the output folder's run_config.json.

``EngineSpec`` (model + ``EngineConfig`` + ``SparseConfig``) builds the engine where a shard runs; it is plain
data, so data-parallel workers receive it pickled inside the ``Job``. ``run_record`` serialises the settings
that change what is generated, under the CLI's names (``max_len``, ``gen_len``, ...: the keys run_config.json
has always had, so earlier runs keep resuming); a resume with any other value is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

# EngineConfig fields that change the samples, recorded under their flag's name.
ENGINE_RECORD = ("max_seq_len", "enable_thinking", "model_class")
# ... recorded only when set, so that runs made before these existed (all with the defaults) keep resuming.
ENGINE_RECORD_IF_SET = {"kv_cache_dtype": "auto", "kv_scales": None, "deterministic": False}
# SamplingParams fields that change the samples (the seed is per (problem, trial), derived from the run seed).
SAMPLING_RECORD = ("temperature", "top_p", "top_k", "min_p", "max_new_tokens", "repeat_check", "repeat_check_window",
                   "repeat_block_size")


@dataclass(frozen=True)
class EngineSpec:
    """How a shard builds its engine: ``LLM(model, config on the shard's device, sparse=sparse)``."""

    model: str  # checkpoint directory (absolute) or hub id
    config: Any  # litesys.engine.config.EngineConfig
    sparse: Any = None  # litesys.attention.sparse.config.SparseConfig, None for dense

    def __call__(self, device: str):
        from litesys import LLM

        config = self.config if str(self.config.device) == device else replace(self.config, device=device)
        return LLM(self.model, config, sparse=self.sparse)


def _key(name: str) -> str:
    from litesys.eval.cli_flags import REPETITION_FLAGS, SAMPLING_FLAGS, api_flags, dest

    flag = {**api_flags(), **{n: f for n, (f, _) in {**SAMPLING_FLAGS, **REPETITION_FLAGS}.items()}}.get(name)
    return dest(flag) if flag else name


def run_record(engine: Any, sampling: Any, sparse: Any, run_seed: int) -> dict:
    """The settings of ``engine`` (EngineConfig), ``sampling`` (SamplingParams) and ``sparse`` that change the
    samples, as run_config.json records them."""
    rec = {_key(n): getattr(sampling, n) for n in SAMPLING_RECORD}
    rec.update({_key(n): getattr(engine, n) for n in ENGINE_RECORD})
    rec.update({_key(n): getattr(engine, n) for n, default in ENGINE_RECORD_IF_SET.items()
                if getattr(engine, n) != default})
    rec["seed"] = run_seed
    rec["sparse"] = None if sparse is None else sparse.to_dict()
    return rec
