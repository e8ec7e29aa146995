"""Argparse pieces shared by the eval scripts (eval_math.py, eval_lcb.py, ...), and their checks.

Every flag that has an underscore also answers to its dashed spelling (``--max_len`` = ``--max-len``).
A bad flag or value exits with one line on stderr and code 2, before anything is written.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

DTYPES = ("auto", "bfloat16", "float16", "float32")
KV_CACHE_DTYPES = ("auto", "fp8_e4m3")  # litesys.attention.kv_fp8.KV_CACHE_DTYPES (not imported: no torch here)


class UsageError(ValueError):
    """Bad command-line input; the message says what to do."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        die(f"{message} (see {self.prog} --help)", self.prog)


# The API's argument names (in messages from LLM/SamplingParams) -> the flags that set them.
API_FLAGS = {"max_seq_len": "--max_len", "max_new_tokens": "--gen_len", "model_class": "--model_class",
             "gpu_memory_utilization": "--gpu_memory_utilization", "max_num_seqs": "--max_num_seqs",
             "tensor_parallel_size": "--tp", "enable_thinking": "--enable-thinking", "temperature": "--temperature",
             "top_p": "--top_p", "top_k": "--top_k", "min_p": "--min_p", "repeat_check_window": "--repeat_check_window",
             "repeat_block_size": "--repeat_block_size", "repeat_check": "--repeat-check", "seed": "--seed",
             "model": "--model", "dtype": "--dtype", "device": "--device"}
_API_ASSIGN = re.compile(r"(?<![\w\-./])(" + "|".join(API_FLAGS) + r")=('[^']*'|\"[^\"]*\"|[^\s,;)]+)?")
# bare names that cannot be prose ("the model" stays as it is)
_API_BARE = re.compile(r"(?<![\w\-./=])(" + "|".join(k for k in API_FLAGS if "_" in k or k == "temperature")
                       + r")(?![\w=(])")


def flag_message(message: str) -> str:
    """An API error in the CLI's words: ``max_seq_len=4096`` -> ``--max_len 4096``, ``top_k`` -> ``--top_k``."""
    def assign(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if name == "repeat_check" and value == "False":
            return "--no-repeat-check"
        return API_FLAGS[name] + (" " + value.strip("'\"") if value else "")

    return _API_BARE.sub(lambda m: API_FLAGS[m.group(1)], _API_ASSIGN.sub(assign, message))


def die(message: str, prog: str | None = None) -> NoReturn:
    """One line on stderr in the CLI's words (API argument names become flags), exit code 2."""
    prog = prog or os.path.basename(sys.argv[0])
    print(f"{prog}: error: {flag_message(' '.join(str(message).split()))}", file=sys.stderr)  # one line
    sys.exit(2)


def finite_float(text: str) -> float:
    """argparse type: a float that is a real number (``nan``/``inf`` would reach the run config and the sampler)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def run_or_exit(runner: Callable[..., Any], prog: str, output_dir: Path, *args: Any, **kw: Any) -> Any:
    """``runner(*args, **kw)`` with its failures reported the eval scripts' way: a failed run exits 1, the engine's
    one-line input errors (model, prompt length) exit 2, Ctrl-C exits 130 (finished samples are kept)."""
    from litesys.eval.runner import RunError

    try:
        return runner(*args, **kw)
    except RunError as e:
        print(f"{prog}: error: {flag_message(str(e))}", file=sys.stderr)
        sys.exit(1)
    except (ValueError, FileNotFoundError) as e:
        die(str(e), prog)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished samples are saved in {output_dir} - rerun the same command to resume",
              file=sys.stderr)
        sys.exit(130)


def add(group, name: str, **kw) -> None:
    """Add ``--name`` under both spellings (``--max_len``/``--max-len``); ``dest`` is the underscore one."""
    under = "--" + name[2:].replace("-", "_")
    dashed = "--" + name[2:].replace("_", "-")
    names = [name] + [n for n in (under, dashed) if n != name]
    group.add_argument(*names, dest=under[2:], **kw)


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("engine")
    add(g, "--model", required=True, help="checkpoint directory or hub id")
    add(g, "--model_class", default=None, help="qwen2 | qwen3 | qwen3moe (default: the config's model_type)")
    add(g, "--max_len", type=int, default=32768, help="max sequence length, prompt + generation (default 32768)")
    add(g, "--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 on GPU, float32 on CPU")
    add(g, "--device", default="auto", help="auto | cuda | cpu (default: cuda when available)")
    add(g, "--gpu_memory_utilization", type=finite_float, default=0.9, help="share of GPU memory to use (default 0.9)")
    add(g, "--max_num_seqs", type=int, default=256, help="most sequences decoded at once (default 256)")
    add(g, "--kv_cache_dtype", default="auto", choices=KV_CACHE_DTYPES,
        help="KV pages: auto = the model dtype, fp8_e4m3 = FP8 with per-head scales (docs/kv_fp8.md)")
    add(g, "--kv_scales", default=None, metavar="JSON",
        help="fp8 K/V scales file (default: calibrated on each layer's first prefill)")
    g.add_argument("--enable-thinking", "--enable_thinking", dest="enable_thinking", default=None,
                   action=argparse.BooleanOptionalAction,
                   help="chat template's thinking switch (default: the template's own)")


def add_sampling_args(parser: argparse.ArgumentParser, temperature: float = 0.6, top_p: float = 0.95,
                      top_k: int = 20, min_p: float = 0.0, gen_len: int = 32768) -> None:
    """Sampling flags; the defaults are Qwen3's recommended thinking-mode settings."""
    g = parser.add_argument_group("sampling")
    add(g, "--gen_len", type=int, default=gen_len, help=f"max generated tokens per sample (default {gen_len})")
    add(g, "--temperature", type=finite_float, default=temperature, help=f"0 = greedy (default {temperature})")
    add(g, "--top_p", type=finite_float, default=top_p, help=f"default {top_p}")
    add(g, "--top_k", type=int, default=top_k, help=f"0 disables (default {top_k})")
    add(g, "--min_p", type=finite_float, default=min_p, help=f"default {min_p}")


def add_repetition_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("repetition stop")
    g.add_argument("--repeat-check", "--repeat_check", dest="repeat_check", default=True,
                   action=argparse.BooleanOptionalAction,
                   help="stop a sample that repeats its last block (default on)")
    add(g, "--repeat_check_window", type=int, default=1024, help="tokens looked back (default 1024)")
    add(g, "--repeat_block_size", type=int, default=64, help="block that must repeat (default 64)")


def add_run_args(parser: argparse.ArgumentParser, default_output: str = "outputs/<task>/<model name>",
                 wandb: bool = True) -> None:
    """Run flags; ``wandb=False`` for tasks with no metrics at generation time (eval_lcb.py grades separately)."""
    g = parser.add_argument_group("run")
    add(g, "--trial", type=int, default=1, help="samples per problem (default 1)")
    add(g, "--seed", type=int, default=0, help="run seed; each (problem, trial) seed derives from it")
    add(g, "--limit", type=int, default=None, help="only the first N problems")
    add(g, "--output_dir", default=None,
        help=f"where the samples (and summary) go (default {default_output})")
    add(g, "--nproc", type=int, default=1, help="data-parallel workers, one device each (default 1)")
    if wandb:
        add(g, "--wandb", default=None, metavar="PROJECT", help="also log the summary to this wandb project")


def add_sparse_args(parser: argparse.ArgumentParser) -> None:
    """The sparse-attention flags (``--attn_*``, ``--quest_*``; docs/sparse.md)."""
    from litesys.attention.sparse import config as sparse_config

    sparse_config.add_cli_args(parser)


def sparse_config(args: argparse.Namespace):
    """The ``SparseConfig`` the flags ask for, or None (dense); bad combinations raise UsageError."""
    from litesys.attention.sparse import config as sparse_config

    try:
        return sparse_config.from_args(args)
    except ValueError as e:
        raise UsageError(str(e)) from None


def sparse_record(args: argparse.Namespace) -> dict | None:
    """The sparse settings as plain data for the run config (resume compares them), None when dense."""
    cfg = sparse_config(args)
    return None if cfg is None else cfg.to_dict()


def make_llm(args: argparse.Namespace, device: str) -> Any:
    """The engine every eval task runs: flags -> ``LLM`` on ``device`` (sparse attention and TP when asked)."""
    import torch

    from litesys import LLM

    kw: dict[str, Any] = dict(device=device, dtype=getattr(torch, args.dtype_resolved), max_seq_len=args.max_len,
                              model_class=args.model_class, gpu_memory_utilization=args.gpu_memory_utilization,
                              max_num_seqs=args.max_num_seqs, seed=args.seed, enable_thinking=args.enable_thinking)
    sparse = sparse_config(args)
    if sparse is not None:
        kw["sparse"] = sparse
    tp = getattr(args, "tensor_parallel_size", 1)  # set by the torchrun entry points (dist_runner.torchrun_main)
    if tp > 1:
        kw["tensor_parallel_size"] = tp
    kw.update(kv_record(args))
    return LLM(args.model, **kw)


def kv_record(args: argparse.Namespace) -> dict:
    """``kv_cache_dtype``/``kv_scales`` when not the defaults: LLM arguments, and run-config keys (so a resume
    cannot mix KV dtypes; runs made before the flag existed, all bf16, keep resuming)."""
    rec = {}
    if getattr(args, "kv_cache_dtype", "auto") != "auto":
        rec["kv_cache_dtype"] = args.kv_cache_dtype
    if getattr(args, "kv_scales", None):
        rec["kv_scales"] = os.path.abspath(args.kv_scales)
    return rec


def validate_common(args: argparse.Namespace) -> None:
    """Checks shared by all eval scripts; raises UsageError."""
    if args.trial < 1:
        raise UsageError(f"--trial must be >= 1, got {args.trial}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    if args.nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {args.nproc}")
    if args.max_num_seqs < 1:
        raise UsageError(f"--max_num_seqs must be >= 1, got {args.max_num_seqs}")
    if not 0 < args.gpu_memory_utilization <= 1:
        raise UsageError(f"--gpu_memory_utilization must be in (0, 1] (a share of the GPU's memory), got "
                         f"{args.gpu_memory_utilization}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.gen_len < 1:
        raise UsageError(f"--gen_len must be >= 1, got {args.gen_len}")
    if args.max_len < 2:
        raise UsageError(f"--max_len must be >= 2, got {args.max_len}")
    if getattr(args, "kv_scales", None):
        if args.kv_cache_dtype == "auto":
            raise UsageError("--kv_scales needs --kv_cache_dtype fp8_e4m3")
        if not os.path.isfile(args.kv_scales):
            raise UsageError(f"--kv_scales {args.kv_scales} is not a file; pass a JSON file with k_scale/v_scale")
    if args.gen_len > args.max_len:
        raise UsageError(f"--gen_len {args.gen_len} is larger than --max_len {args.max_len}; raise --max_len "
                         "(it counts prompt + generation) or lower --gen_len")
    sampling_params(args, seed=0)  # SamplingParams' own checks, as one-line errors
    if getattr(args, "wandb", None):
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise UsageError("--wandb needs the wandb package: pip install wandb") from None


def resolve_devices(args: argparse.Namespace) -> list[str]:
    """One device per data-parallel worker: cuda:0..N-1, or N CPU processes."""
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda but no GPU is visible; pass --device cpu")
        if args.nproc > 1:
            if device != "cuda":
                raise UsageError("--nproc > 1 picks the GPUs itself (cuda:0..N-1); pass --device cuda")
            if args.nproc > torch.cuda.device_count():
                raise UsageError(f"--nproc {args.nproc} but only {torch.cuda.device_count()} GPU(s) visible; "
                                 "lower --nproc")
            return [f"cuda:{i}" for i in range(args.nproc)]
        return [device]
    if device != "cpu":
        raise UsageError(f"--device {device!r} is not cuda, cuda:N or cpu")
    cores = cpu_cores()
    if args.nproc > cores:
        raise UsageError(f"--nproc {args.nproc} but only {cores} CPU core(s) available to this process; lower "
                         "--nproc (each CPU worker needs a core of its own)")
    return ["cpu"] * args.nproc


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_dtype(args: argparse.Namespace, devices: list[str]) -> str:
    if args.dtype != "auto":
        return args.dtype
    return "float32" if devices[0] == "cpu" else "bfloat16"


def sampling_params(args: argparse.Namespace, seed: int):
    """One request's SamplingParams from the flags (n=1: each trial is its own seeded request)."""
    from litesys.sampling_params import SamplingParams

    try:
        return SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                              max_new_tokens=args.gen_len, seed=seed, n=1, repeat_check=args.repeat_check,
                              repeat_check_window=args.repeat_check_window,
                              repeat_block_size=args.repeat_block_size)
    except ValueError as e:
        raise UsageError(str(e)) from None


def sampling_config(args: argparse.Namespace) -> dict:
    """The flags that change what is generated (for the run-config file)."""
    keys = ("temperature", "top_p", "top_k", "min_p", "gen_len", "repeat_check", "repeat_check_window",
            "repeat_block_size", "seed", "max_len", "enable_thinking", "model_class")
    return {**{k: getattr(args, k) for k in keys}, **kv_record(args)}


def model_id(model: str) -> str:
    """A local checkpoint as an absolute path (same run whatever the working folder), else the hub id."""
    return os.path.abspath(model) if os.path.exists(model) else model


def check_model(model: str) -> None:
    if not os.path.exists(model) and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise UsageError(f"--model {model} is neither a local checkpoint directory nor a hub id (org/name)")


def output_dir(args: argparse.Namespace, run_name: str) -> Path:
    """``--output_dir``, else ``outputs/<run_name>/<model name>``; refuses a path that is a file."""
    out = Path(args.output_dir or Path("outputs") / run_name / Path(args.model.rstrip("/")).name)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out} is a file; pass a folder")
    return out
