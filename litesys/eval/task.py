"""The one eval ``main``: a ``Task`` (its flags, problems, prompts, the fields each sample carries, a grader and a
summary) driven through flags -> every check -> typed configs -> runner -> summary.

Everything that can fail on bad input runs in ``prepare``, before the output folder is touched; it builds the
typed configs once (``EngineSpec``: model + ``EngineConfig`` + ``SparseConfig``; ``SamplingParams``) and the run
config recorded beside the samples. The parsed flags are never changed; data-parallel workers get the ``Job``.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from litesys.eval import checks, cli, configs, cost
from litesys.eval.fileio import DataError
from litesys.eval.runner import Job, RunError, RunResult, WorkItem, check_run_config, run, sample_seed


@dataclass(frozen=True)
class Problems:
    """What a task loaded: its problems in order, the run-config keys that pin the data, counts for the summary."""

    items: list
    record: dict  # e.g. {"data": source, "data_fingerprint": sha}: a changed data file must not mix with old results
    notes: dict = field(default_factory=dict)  # e.g. {"skipped_bad_tests": 2}


@dataclass(frozen=True)
class Plan:
    """A checked run: everything the runner and the summary need; nothing here is written yet."""

    problems: Problems  # those generated for (prompts too long for --max_len left out)
    skipped_long: tuple[str, ...]  # problem ids left out for their prompt length
    devices: list[str]
    engine: configs.EngineSpec
    sampling: Any  # SamplingParams with seed 0; each (problem, trial) gets its own seed
    config: dict  # run_config.json
    output_dir: Path
    intensity: tuple[float, str] | None = None  # --arith-intensity / --gpu: (I, source) of the recorded eFLOPs


class Task:
    """A task's part of an eval script; subclasses override what differs (tasks/math/main.py, tasks/lcb/main.py)."""

    prog = "eval.py"
    description = ""
    run_dir = "<task>"  # --help's default output folder: outputs/<run_dir>/<model name>
    output_field = "output"  # the sample record's key of the generated text
    wandb = True  # --wandb: log the summary (tasks graded at generation time)
    enable_thinking: bool | None = None  # default of --enable-thinking (None: the chat template's own)

    def add_args(self, group: argparse._ArgumentGroup) -> None:
        """The task's own flags."""

    def check_args(self, args: argparse.Namespace) -> None:
        """The task's own flag checks (UsageError)."""

    def load(self, args: argparse.Namespace) -> Problems:
        raise NotImplementedError

    def task_name(self, args: argparse.Namespace) -> str:
        raise NotImplementedError

    def run_name(self, args: argparse.Namespace) -> str:
        """The default output folder under outputs/ (then the model's name)."""
        return self.task_name(args)

    def problem_id(self, problem: Any) -> str:
        raise NotImplementedError

    def prompt(self, args: argparse.Namespace, problem: Any) -> Any:
        raise NotImplementedError

    def fields(self, problem: Any) -> dict:
        """Task fields copied into each of the problem's sample records."""
        return {}

    def run_config(self, args: argparse.Namespace) -> dict:
        """The task's flags that change what is generated or recorded (besides the engine/sampling/sparse ones)."""
        return {}

    def processor(self, args: argparse.Namespace, nproc: int) -> Callable | None:
        """A picklable factory of the record processor (e.g. grading) each shard runs, or None."""
        return None

    def before_run(self, output_dir: Path) -> None:
        """Called after every check, before the runner writes anything."""

    def finish(self, args: argparse.Namespace, plan: Plan, result: RunResult) -> dict:
        """Summarise a finished run (global rank 0 only); the returned dict is ``main``'s."""
        raise NotImplementedError

    # ---- the entry points, the same for every task (tasks/<name>/main.py: ``main = TASK.main``, ...)
    def main(self, argv: list[str] | None = None, prog: str | None = None, tensor_parallel_size: int = 1,
             runner: Callable[..., RunResult | None] | None = None) -> dict:
        return main(self, argv, prog, tensor_parallel_size, runner or run)

    def prepare(self, args: argparse.Namespace, tensor_parallel_size: int = 1) -> Plan:
        return prepare(self, args, tensor_parallel_size)

    def build_parser(self, prog: str | None = None) -> cli.Parser:
        return build_parser(self, prog)


def build_parser(task: Task, prog: str | None = None) -> cli.Parser:
    return cli.task_parser(task, prog or task.prog)


def prepare(task: Task, args: argparse.Namespace, tensor_parallel_size: int = 1) -> Plan:
    """Every check that can fail on bad input, before anything is written; raises UsageError/DataError/RunError."""
    cli.validate_run(args)
    task.check_args(args)
    try:
        intensity = cost.resolve_intensity(args.arith_intensity, args.gpu)  # --arith-intensity / --gpu
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    sampling = cli.sampling_params(args)
    sparse = cli.sparse_config(args)
    devices = cli.resolve_devices(args)
    dtype = cli.resolve_dtype(args, devices)
    engine = configs.EngineSpec(cli.model_id(args.model), cli.engine_config(args, devices[0], dtype,
                                                                            tensor_parallel_size), sparse)
    model = checks.check_model(args.model, args.model_class, args.max_len)  # config, weights, tokenizer: no load
    checks.check_tensor_parallel(model, tensor_parallel_size)
    problems = task.load(args)
    ids = [task.problem_id(p) for p in problems.items]
    lengths = checks.prompt_lengths(model.tokenizer, [task.prompt(args, p) for p in problems.items],
                                    args.enable_thinking)
    skipped = checks.long_prompts(ids, lengths, args.max_len, args.on_long_prompt)
    if skipped:
        drop = set(skipped)
        problems = replace(problems, items=[p for p, i in zip(problems.items, ids) if i not in drop])
    config = {"task": task.task_name(args), "model": engine.model, "dtype": dtype, **problems.record,
              **task.run_config(args), **configs.run_record(engine.config, sampling, sparse, args.seed)}
    if intensity is not None:  # the recorded eFLOPs use it: a resume must not mix two (only when set: old runs resume)
        config["arith_intensity"] = intensity[0]
    out = cli.output_dir(args, task.run_name(args))
    check_run_config(out, config)
    return Plan(problems, tuple(skipped), devices, engine, sampling, config, out, intensity)


def make_job(task: Task, args: argparse.Namespace, plan: Plan) -> Job:
    """Every (problem, trial) as a work item with its own seed, and how to build the engine and the grader."""
    items = []
    for p in plan.problems.items:
        pid, prompt, fields = task.problem_id(p), task.prompt(args, p), task.fields(p)
        items += [WorkItem(pid, t, prompt, replace(plan.sampling, seed=sample_seed(args.seed, pid, t)), fields)
                  for t in range(args.trial)]
    return Job(items, plan.engine, task.processor(args, len(plan.devices)), desc=task.task_name(args),
               output_field=task.output_field, tensor_parallel_size=plan.engine.config.tensor_parallel_size,
               intensity=plan.intensity)


def main(task: Task, argv: list[str] | None = None, prog: str | None = None, tensor_parallel_size: int = 1,
         runner: Callable[..., RunResult | None] = run) -> dict:
    """Parse, check, run, summarise. ``runner``: ``runner.run``, or ``dist_runner.run_distributed`` under torchrun
    (it returns None off global rank 0, where ``main`` returns ``{}``)."""
    prog = prog or task.prog
    args = build_parser(task, prog).parse_args(argv)
    try:
        plan = prepare(task, args, tensor_parallel_size)
    except (cli.UsageError, DataError, RunError, FileNotFoundError) as e:
        cli.die(str(e), prog)
    task.before_run(plan.output_dir)
    job = make_job(task, args, plan)
    result = cli.run_or_exit(runner, prog, plan.output_dir, job, plan.output_dir, plan.devices, plan.config)
    if result is None:  # another torchrun rank: global rank 0 writes the summary
        return {}
    return task.finish(args, plan, result)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
