"""The eval scripts' command line: one-line errors, the run flags and their checks, devices, output folders.

The typed configs' flags (engine, sampling, sparse attention) are generated from the configs' fields in
cli_flags.py. A bad flag or value exits with one line on stderr and code 2, before anything is written.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, NoReturn

from litesys.eval.cli_flags import (  # noqa: F401 - the flag helpers the tasks use, from one place
    UsageError,
    add,
    add_engine_args,
    add_repetition_args,
    add_sampling_args,
    add_sparse_args,
    api_flags,
    engine_config,
    finite_float,
    sampling_params,
    sparse_config,
)


def __getattr__(name: str):
    if name == "API_FLAGS":  # API argument name -> flag, from the configs' field metadata (built on first use)
        return api_flags()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        die(f"{message} (see {self.prog} --help)", self.prog)


@lru_cache(maxsize=1)
def _api_patterns() -> tuple[re.Pattern, re.Pattern]:
    names = api_flags()
    assign = re.compile(r"(?<![\w\-./])(" + "|".join(names) + r")=('[^']*'|\"[^\"]*\"|[^\s,;)]+)?")
    # bare names that cannot be prose ("the model" stays as it is)
    bare = re.compile(r"(?<![\w\-./=])(" + "|".join(k for k in names if "_" in k or k == "temperature")
                      + r")(?![\w=(])")
    return assign, bare


def flag_message(message: str) -> str:
    """An API error in the CLI's words: ``max_seq_len=4096`` -> ``--max_len 4096``, ``top_k`` -> ``--top_k``."""
    flags = api_flags()
    assign_re, bare_re = _api_patterns()

    def assign(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        if name == "repeat_check" and value == "False":
            return "--no-repeat-check"
        return flags[name] + (" " + value.strip("'\"") if value else "")

    return bare_re.sub(lambda m: flags[m.group(1)], assign_re.sub(assign, message))


def die(message: str, prog: str | None = None) -> NoReturn:
    """One line on stderr in the CLI's words (API argument names become flags), exit code 2."""
    prog = prog or os.path.basename(sys.argv[0])
    print(f"{prog}: error: {flag_message(' '.join(str(message).split()))}", file=sys.stderr)  # one line
    sys.exit(2)


def run_or_exit(runner: Callable[..., Any], prog: str, output_dir: Path, *args: Any, **kw: Any) -> Any:
    """``runner(*args, **kw)`` with its failures reported the eval scripts' way: a failed run exits 1, the engine's
    one-line input errors (model, prompt length) exit 2, Ctrl-C exits 130 (finished samples are kept)."""
    from litesys.eval.fileio import RunError

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


def task_parser(task: Any, prog: str) -> Parser:
    """An eval script's flags: the task's own (``task.add_args``), ``--on-long-prompt``, then the engine, sampling,
    repetition, run and sparse-attention flags every task shares (``task``: a ``litesys.eval.task.Task``)."""
    p = Parser(prog=prog, description=task.description)
    g = p.add_argument_group("task")
    task.add_args(g)
    add(g, "--on-long-prompt", choices=("skip", "error"), default="skip",
        help="a problem whose prompt leaves no room within --max_len: skip it (counted in the summary as "
             "skipped_long_prompt; default) or stop before anything is written")
    add_engine_args(p)
    add_sampling_args(p)
    add_repetition_args(p)
    add_run_args(p, f"outputs/{task.run_dir}/<model name>", wandb=task.wandb)
    if task.enable_thinking is not None:
        p.set_defaults(enable_thinking=task.enable_thinking)
    add_sparse_args(p)
    return p


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
    add(g, "--arith-intensity", type=finite_float, default=None, metavar="I",
        help="FLOPs per byte for the recorded eFLOPs = FLOPs + I x bytes (default: the GPU's, docs/cost.md)")
    add(g, "--gpu", default=None, help="price eFLOPs as on this GPU of docs/cost.md's table (default: the one used)")
    if wandb:
        add(g, "--wandb", default=None, metavar="PROJECT", help="also log the summary to this wandb project")


def validate_run(args: argparse.Namespace) -> None:
    """The run flags' checks, and those across configs (the configs check their own fields); UsageError."""
    if args.trial < 1:
        raise UsageError(f"--trial must be >= 1, got {args.trial}")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    if args.nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {args.nproc}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.gen_len > args.max_len:
        raise UsageError(f"--gen_len {args.gen_len} is larger than --max_len {args.max_len}; raise --max_len "
                         "(it counts prompt + generation) or lower --gen_len")
    # (scales without fp8: EngineConfig refuses the pair, with the flags' names)
    if args.kv_scales and args.kv_cache_dtype != "auto" and not os.path.isfile(args.kv_scales):
        raise UsageError(f"--kv_scales {args.kv_scales} is not a file; pass a JSON file with k_scale/v_scale")
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


def model_id(model: str) -> str:
    """A local checkpoint as an absolute path (same run whatever the working folder), else the hub id."""
    return os.path.abspath(model) if os.path.exists(model) else model


def output_dir(args: argparse.Namespace, run_name: str) -> Path:
    """``--output_dir``, else ``outputs/<run_name>/<model name>``; refuses a path that is a file."""
    out = Path(args.output_dir or Path("outputs") / run_name / Path(args.model.rstrip("/")).name)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out} is a file; pass a folder")
    return out
