"""The eval scripts' flags for the typed configs, generated from the configs' fields, and the configs built back
from the parsed flags (once, in the launching process).

* ``EngineConfig`` (litesys/engine/config.py): every field whose metadata names a ``flag``; its type, default and
  help come from the field, the CLI's own defaults and choices from ``ENGINE_CLI``.
* ``SamplingParams``: the fields of ``SAMPLING_FLAGS`` (an API object knows no flags: this table names them).
* ``SparseConfig``: every field, as ``--<field>`` (``attn_custom_args`` as repeated ``--attn_custom_arg K=V``).

``api_flags()`` maps every API argument name to its flag, so the API's one-line errors can be shown in the CLI's
words. Every flag with an underscore also answers to its dashed spelling (``--max_len`` = ``--max-len``).
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import MISSING, Field, fields
from functools import lru_cache
from typing import Any


class UsageError(ValueError):
    """Bad command-line input; the message says what to do."""


def finite_float(text: str) -> float:
    """argparse type: a float that is a real number (``nan``/``inf`` would reach the run config and the sampler)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def add(group, name: str, **kw) -> None:
    """Add ``--name`` under both spellings (``--max_len``/``--max-len``); ``dest`` is the underscore one."""
    under = "--" + name[2:].replace("-", "_")
    dashed = "--" + name[2:].replace("_", "-")
    names = [name] + [n for n in (under, dashed) if n != name]
    group.add_argument(*names, dest=under[2:], **kw)


def dest(flag: str) -> str:
    """The argparse destination (and run-config key) of a flag: ``--enable-thinking`` -> ``enable_thinking``."""
    return flag.lstrip("-").replace("-", "_")


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None  # type: ignore[misc]


def _add_field(group, f: Field, flag: str, help: str, **override) -> None:
    """One flag for a config field: bool -> --x/--no-x, int/float/str by the annotation, list[int] -> nargs."""
    kind = str(f.type)
    kw: dict[str, Any] = {"default": _default(f), "help": help}
    if kind.startswith("bool"):
        kw["action"] = argparse.BooleanOptionalAction
    elif kind.startswith("list[int]"):
        kw.update(type=int, nargs="*")
    elif "float" in kind:
        kw["type"] = finite_float
    elif "int" in kind and "str" not in kind:
        kw["type"] = int
    kw.update(override)
    add(group, flag, **kw)


# ---------------------------------------------------------------- engine

DTYPES = ("auto", "bfloat16", "float16", "float32")
# The CLI's defaults and choices where they differ from the API's (the rest comes from EngineConfig's fields).
ENGINE_CLI: dict[str, dict] = {
    "device": {"default": "auto", "help": "auto | cuda | cpu (default: cuda when available)"},
    "dtype": {"default": "auto", "choices": DTYPES, "type": str, "help": "auto: bfloat16 on GPU, float32 on CPU"},
    "max_seq_len": {"default": 32768},
    "kv_scales": {"metavar": "JSON", "type": str},
    "kv_cache_dtype": {"choices": ("auto", "fp8_e4m3")},  # litesys.attention.kv_fp8.KV_CACHE_DTYPES
}
# Fields whose flag another parser owns: --seed (the run flags: the run seed is the engine's) and --tp
# (dist_runner.torchrun_main, on the *_dist.py scripts).
ENGINE_FLAGS_ELSEWHERE = ("seed", "tensor_parallel_size")


def engine_fields() -> list[Field]:
    from litesys.engine.config import EngineConfig

    return [f for f in fields(EngineConfig) if f.metadata.get("flag") and f.name not in ENGINE_FLAGS_ELSEWHERE]


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("engine")
    add(g, "--model", required=True, help="checkpoint directory or hub id")
    for f in engine_fields():
        over = dict(ENGINE_CLI.get(f.name, {}))
        default = over.get("default", _default(f))
        help = over.pop("help", None) or (f"{f.metadata['help']} (default {default})" if default is not None
                                          else f.metadata["help"])
        _add_field(g, f, f.metadata["flag"], help, **over)


def engine_config(args: argparse.Namespace, device: str, dtype: str, tensor_parallel_size: int = 1):
    """The ``EngineConfig`` the flags ask for on ``device``; its own checks raise UsageError (in flag words)."""
    from litesys.engine.config import EngineConfig

    kw = {f.name: getattr(args, dest(f.metadata["flag"])) for f in engine_fields()}
    if kw.get("kv_scales"):
        kw["kv_scales"] = os.path.abspath(kw["kv_scales"])  # the run config names the file whatever the cwd
    kw.update(device=device, dtype=dtype, seed=args.seed, tensor_parallel_size=tensor_parallel_size)
    try:
        return EngineConfig(**kw)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


# ---------------------------------------------------------------- sampling

# SamplingParams field -> (flag, help). Seeds are per (problem, trial); n is 1 (each trial is its own request).
SAMPLING_FLAGS: dict[str, tuple[str, str]] = {
    "max_new_tokens": ("--gen_len", "max generated tokens per sample"),
    "temperature": ("--temperature", "0 = greedy"),
    "top_p": ("--top_p", "nucleus sampling mass"),
    "top_k": ("--top_k", "0 disables"),
    "min_p": ("--min_p", "minimum probability relative to the top token"),
}
REPETITION_FLAGS: dict[str, tuple[str, str]] = {
    "repeat_check": ("--repeat-check", "stop a sample that repeats its last block"),
    "repeat_check_window": ("--repeat_check_window", "tokens looked back"),
    "repeat_block_size": ("--repeat_block_size", "block that must repeat"),
}
# The eval scripts' sampling defaults: Qwen3's recommended thinking-mode settings, long generations.
EVAL_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "max_new_tokens": 32768}


def _sampling_group(parser: argparse.ArgumentParser, title: str, table: dict[str, tuple[str, str]]) -> None:
    from litesys.sampling_params import SamplingParams

    g = parser.add_argument_group(title)
    by_name = {f.name: f for f in fields(SamplingParams)}
    for name, (flag, help) in table.items():
        f = by_name[name]
        default = EVAL_SAMPLING.get(name, _default(f))
        _add_field(g, f, flag, f"{help} (default {'on' if default is True else default})", default=default)


def add_sampling_args(parser: argparse.ArgumentParser) -> None:
    _sampling_group(parser, "sampling", SAMPLING_FLAGS)


def add_repetition_args(parser: argparse.ArgumentParser) -> None:
    _sampling_group(parser, "repetition stop", REPETITION_FLAGS)


def sampling_params(args: argparse.Namespace):
    """The ``SamplingParams`` the flags ask for (seed 0, n 1: each (problem, trial) gets its own seed)."""
    from litesys.sampling_params import SamplingParams

    kw = {name: getattr(args, dest(flag)) for name, (flag, _) in {**SAMPLING_FLAGS, **REPETITION_FLAGS}.items()}
    try:
        return SamplingParams(**kw, seed=0, n=1)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None


# ---------------------------------------------------------------- sparse attention

SPARSE_HELP = {
    "attn_local": "StreamingLLM local window; with another method: its local window",
    "attn_topk": "top-k positions per KV group",
    "attn_block_topk": "top-k blocks per KV group",
    "attn_block_size": "block size of --attn_block_topk",
    "attn_stride": "with --attn_block_topk: overlapping blocks every STRIDE tokens",
    "attn_random_select": "N uniform random positions per KV group",
    "attn_random_nsample": "N random positions with importance-sampling correction",
    "attn_nsample": "oracle sampling: N draws per head from the attention",
    "attn_oracle_topp": "oracle: smallest set holding P of the attention mass",
    "attn_custom": "a registered method by name (e.g. threshold)",
    "attn_sink": "attention sinks always kept",
    "attn_layer_skip": "layers kept dense (default: 0)",
    "attn_seed": "seed of the random methods",
    "quest_block_size": "Quest block = KV page size (default 16)",
    "quest_topk_blocks": "Quest: pages per step besides sink/local pages",
}
CUSTOM_ARGS = "attn_custom_args"  # the one field set by a repeated flag: --attn_custom_arg KEY=VALUE


def add_sparse_args(parser: argparse.ArgumentParser) -> None:
    """The sparse-attention flags (``--attn_*``, ``--quest_*``; docs/sparse.md), one per SparseConfig field."""
    from litesys.attention.sparse.config import SparseConfig

    g = parser.add_argument_group("sparse attention (docs/sparse.md)")
    for f in fields(SparseConfig):
        if f.name == CUSTOM_ARGS:
            add(g, "--attn_custom_arg", action="append", default=[], metavar="KEY=VALUE",
                help="option for --attn_custom (repeatable)")
        else:
            _add_field(g, f, "--" + f.name, SPARSE_HELP.get(f.name, ""))


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def sparse_config(args: argparse.Namespace):
    """The ``SparseConfig`` the flags ask for, or None (dense); bad combinations raise UsageError."""
    from litesys.attention.sparse.config import SparseConfig

    custom = {}
    for item in getattr(args, "attn_custom_arg", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--attn_custom_arg takes KEY=VALUE, got {item!r}")
        custom[key] = _parse_value(value)
    names = [f.name for f in fields(SparseConfig) if f.name != CUSTOM_ARGS]
    try:
        cfg = SparseConfig(**{n: getattr(args, n) for n in names}, **{CUSTOM_ARGS: custom})
    except ValueError as e:
        raise UsageError(str(e)) from None
    return cfg if cfg.method is not None else None


# ---------------------------------------------------------------- API names -> flags


@lru_cache(maxsize=1)
def api_flags() -> dict[str, str]:
    """Every API argument name the CLI sets -> its flag (for messages from LLM / EngineConfig / SamplingParams)."""
    from litesys.engine.config import EngineConfig

    table = {f.name: f.metadata["flag"] for f in fields(EngineConfig) if f.metadata.get("flag")}
    table.update({name: flag for name, (flag, _) in {**SAMPLING_FLAGS, **REPETITION_FLAGS}.items()})
    return {"model": "--model", **table}
