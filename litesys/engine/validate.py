"""One-line checks of ``EngineConfig`` fields and ``generate`` prompts, run before anything is loaded or queued."""
from __future__ import annotations

import torch

from litesys.attention import kv_fp8
from litesys.kernels.common import cdiv
from litesys.sampling_params import check_bool, check_int, check_real

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}
ROLES = ("system", "user", "assistant", "tool")


def check_device_name(device: str | torch.device) -> torch.device:
    """``cuda``, ``cuda:N`` or ``cpu`` as written (whether this machine has it: ``resolve_device``)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda', 'cuda:N' or 'cpu', got {device!r}")
    return dev


def resolve_device(device: str | torch.device) -> torch.device:
    """``cuda``, ``cuda:N`` (a visible GPU) or ``cpu``."""
    dev = check_device_name(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA GPU is visible; pass device='cpu' or run on a GPU machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} GPU(s) are visible "
                             "(check CUDA_VISIBLE_DEVICES)")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """A torch dtype or its name; ``auto``: bfloat16 on a GPU, float32 on the CPU (as the eval scripts' --dtype)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise ValueError(f"dtype must be 'auto', 'bfloat16', 'float16', 'float32' or the torch dtype, got {dtype!r}")


def check_engine_config(c) -> None:
    """Types and ranges of an ``EngineConfig`` (the checkpoint- and machine-dependent ones come at build time)."""
    if not c.swap_space_gb >= 0:
        raise ValueError(f"swap_space_gb must be >= 0 (host memory for preempted sequences), got {c.swap_space_gb}")
    check_int("max_seq_len", 32768 if c.max_seq_len is None else c.max_seq_len, 2)
    check_real("gpu_memory_utilization", c.gpu_memory_utilization)
    if not 0.0 < c.gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {c.gpu_memory_utilization}")
    for name in ("max_num_seqs", "max_num_batched_tokens", "tensor_parallel_size"):
        check_int(name, getattr(c, name), 1)
    if c.page_size is not None:
        check_int("page_size", c.page_size, 1, hint=" or None (16; fp8 pages 64)")
    if c.num_kv_pages is not None:
        check_int("num_kv_pages", c.num_kv_pages, 2, hint=" (page 0 is scratch) or None to plan it")
    if c.check_every is not None:
        check_int("check_every", c.check_every, 1, hint=" or None")
    check_int("seed", c.seed)
    if c.enable_thinking is not None:
        check_bool("enable_thinking", c.enable_thinking)
    for name in ("cuda_graphs", "allow_long_max_seq_len", "deterministic", "enable_prefix_cache"):
        check_bool(name, getattr(c, name))
    if c.attention_backend not in ("auto", "torch", "triton"):
        raise ValueError(f"attention_backend must be 'auto', 'torch' or 'triton', got {c.attention_backend!r}")
    if c.load_format not in ("safetensors", "random"):
        raise ValueError(f"load_format must be 'safetensors' or 'random', got {c.load_format!r}")
    check_device_name(c.device)
    resolve_dtype(c.dtype, torch.device("cpu"))  # the name only: "auto" depends on the device
    kv_dtype = kv_fp8.storage_dtype(c.kv_cache_dtype, torch.float32)  # ValueError on an unknown kv_cache_dtype
    if c.kv_scales is not None and not kv_fp8.is_fp8(kv_dtype):
        raise ValueError("kv_scales needs kv_cache_dtype='fp8_e4m3'; drop kv_scales or set the KV dtype")


def context_limit(cfg) -> int | None:
    """The longest context the checkpoint was made for: max_position_embeddings, or its RoPE scaling's reach
    (``original_max_position_embeddings x factor``); None for a scaling without a factor (trusted, as the CLI does)."""
    limit = cfg.max_position_embeddings
    if (cfg.rope.get("rope_type") or "default") == "default":
        return limit
    factor, orig = cfg.rope.get("factor"), cfg.rope.get("original_max_position_embeddings")
    if not isinstance(factor, (int, float)) or isinstance(factor, bool):
        return None
    return max(limit, int((orig or limit) * factor))


def check_max_seq_len(cfg, max_seq_len: int, allow: bool) -> None:
    limit = context_limit(cfg)
    if limit is not None and max_seq_len > limit and not allow:
        raise ValueError(f"max_seq_len={max_seq_len} is above the model's context length {limit} "
                         "(max_position_embeddings / rope scaling in config.json); lower it, or pass "
                         "allow_long_max_seq_len=True to go past what the model was trained for")


def check_prompts(prompts) -> None:
    """``prompts`` is a non-empty list; catches the common slips of passing one prompt bare."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a list of prompts, got a str; pass [text] for a single prompt")
    if not isinstance(prompts, (list, tuple)):
        raise ValueError(f"prompts must be a list of prompts (token-id lists, strings or chat conversations), "
                         f"got {type(prompts).__name__}")
    if len(prompts) == 0:
        raise ValueError("prompts is empty; pass a non-empty list of prompts")
    first = prompts[0]
    if isinstance(first, dict):
        raise ValueError("prompt 0 is a dict: a chat conversation is one prompt, so pass [conversation] "
                         "(a list of conversations, each a list of {'role': ..., 'content': ...} dicts)")
    if isinstance(first, int) and not isinstance(first, bool):
        raise ValueError("prompt 0 is an int: a token-id prompt is one prompt, so pass [[id, id, ...]]")


def check_request(r, max_seq_len: int, page_size: int, num_pages: int) -> None:
    """A request the engine can run: a prompt that leaves room to generate, a pool that holds one sequence."""
    if len(r.prompt) == 0:
        raise ValueError(f"prompt {r.index} is empty; give at least one token")
    if len(r.prompt) >= max_seq_len:
        raise ValueError(f"prompt {r.index} has {len(r.prompt)} tokens, which leaves no room to generate within "
                         f"max_seq_len={max_seq_len}; raise max_seq_len or shorten the prompt")
    need = cdiv(max_seq_len, page_size)
    if need > num_pages - 1:
        raise ValueError(f"the KV pool has {num_pages - 1} pages but one sequence of max_seq_len={max_seq_len} "
                         f"needs {need}; lower max_seq_len or give the cache more memory")


def check_conversation(index: int, conv: list) -> None:
    """Every message is ``{'role': str, 'content': str}`` (content may be absent only beside tool_calls)."""
    for j, m in enumerate(conv):
        where = f"prompt {index}, message {j}"
        if not isinstance(m, dict):
            raise ValueError(f"{where} is a {type(m).__name__}; each chat message is a dict "
                             "{'role': str, 'content': str}")
        if m.get("role") not in ROLES:  # the Qwen templates silently drop any other role
            raise ValueError(f"{where} has role {m.get('role')!r}; each chat message is "
                             "{'role': 'system' | 'user' | 'assistant' | 'tool', 'content': str}")
        content = m.get("content")
        if not isinstance(content, str) and not (content is None and m.get("tool_calls")):
            raise ValueError(f"{where} ({m['role']}) has no 'content' string (got {content!r}); each chat "
                             "message is {'role': str, 'content': str}")
