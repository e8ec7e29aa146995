"""``EngineConfig``: every ``LLM`` setting as one frozen, validated value (metadata: a one-line ``help`` and the eval
CLI's ``flag``, from which the CLIs make their flags), and the engine's named tuning numbers. What depends on the
checkpoint or the machine (``None``/``"auto"`` values, GPU availability) is resolved by ``engine/build.py``."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

# ---- tuning numbers (not settings: changing one changes speed or memory, never the tokens) --------------------
KV_WATERMARK_DIVISOR = 100  # admission keeps max(1, num_pages // 100) pages free for running sequences to grow
CHECK_EVERY_CUDA, CHECK_EVERY_CPU = 4, 1  # decode steps between host reads of the finish flags (check_every=None)
GRAPH_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256)  # CUDA-graph batch buckets
GRAPH_BATCH_STEP = 64  # past the list: one bucket every 64 sequences up to max_num_seqs
GRAPH_MIN_LEN = 256  # smallest raw-logits length bucket of the lazily captured (sparse) decode graphs


def _f(default: Any, help: str, flag: str | None = None) -> Any:
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass(frozen=True)
class EngineConfig:
    device: str = _f("cuda", "cuda, cuda:N or cpu", "--device")
    dtype: Any = _f("auto", "auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16 or float32", "--dtype")
    max_seq_len: int | None = _f(None, "prompt + generation tokens (None: the model's context, <= 32K)", "--max_len")
    model_class: str | None = _f(None, "qwen2, qwen3, qwen3moe, llama (None: the config's model_type)",
                                 "--model_class")
    gpu_memory_utilization: float = _f(0.9, "GPU memory share for weights + KV pages", "--gpu_memory_utilization")
    page_size: int | None = _f(None, "tokens per KV page (None: 16, fp8 pages 64; a sparse method may set its own)")
    max_num_seqs: int = _f(256, "most sequences decoded at once", "--max_num_seqs")
    max_num_batched_tokens: int = _f(16384, "most prompt tokens in one prefill step (longer ones: chunks of it)")
    num_kv_pages: int | None = _f(None, "KV pool size in pages (None: planned from free memory)")
    seed: int = _f(0, "run seed: a request without its own seed derives one from it and its index", "--seed")
    enable_thinking: bool | None = _f(None, "chat template's thinking switch (None: its own)", "--enable-thinking")
    attention_backend: str = _f("auto", "auto (Triton on GPU, torch on CPU), torch or triton")
    cuda_graphs: bool = _f(True, "capture the decode step as CUDA graphs (GPU only)")
    check_every: int | None = _f(None, "decode steps between finish checks (None: CHECK_EVERY_CUDA/_CPU)")
    tensor_parallel_size: int = _f(1, "GPUs one model is sharded over (under torchrun)", "--tp")
    tokenizer: str | None = _f(None, "tokenizer directory (None: the checkpoint's)")
    load_format: str = _f("safetensors", "safetensors, or random (real shapes, random weights: benchmarks)")
    allow_long_max_seq_len: bool = _f(False, "allow max_seq_len past the model's context length")
    kv_cache_dtype: str = _f("auto", "KV pages: auto (the model dtype) or fp8_e4m3", "--kv_cache_dtype")
    kv_scales: Any = _f(None, "fixed fp8 K/V scales: JSON file, dict or tensor (None: calibrated)", "--kv_scales")
    swap_space_gb: float = _f(4.0, "host memory for preempted sequences' pages (0: recompute them)")
    enable_prefix_cache: bool = _f(True, "reuse cached prompt KV pages across requests (docs/prefix_cache.md)")
    deterministic: bool = _f(False, "batch-invariant kernels: a sample does not depend on its batch", "--deterministic")

    def __post_init__(self) -> None:
        from litesys.engine import validate  # torch: not paid by tools that only read the fields (CLI flags)

        validate.check_engine_config(self)  # one-line ValueErrors naming the field

    @classmethod
    def of(cls, config: EngineConfig | None, overrides: dict[str, Any]) -> EngineConfig:
        """``config`` (or the defaults) with keyword ``overrides``; an unknown name is a one-line TypeError."""
        names = [f.name for f in fields(cls)]
        bad = [k for k in overrides if k not in names]
        if bad:
            raise TypeError(f"unknown LLM argument {bad[0]!r}; the settings are EngineConfig's fields: "
                            f"{', '.join(names)}")
        if config is not None and not isinstance(config, cls):
            raise TypeError(f"config must be an EngineConfig or None, got {type(config).__name__}")
        return replace(config, **overrides) if config is not None else cls(**overrides)

