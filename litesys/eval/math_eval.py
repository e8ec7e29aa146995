"""eval_math.py's wiring: flags -> checked inputs -> runner job -> graded samples -> summary."""
from __future__ import annotations

import argparse
import functools
import json
import os
from collections import Counter
from pathlib import Path

from litesys.eval import cli
from litesys.eval.data import CUSTOM, TASKS, TEMPLATES, DataError, Dataset, build_prompt, load_task
from litesys.eval.runner import Job, RunError, WorkItem, check_run_config, run, sample_seed

SUMMARY = "summary.json"
# What the summary reads of each sample: read back projected onto these, so prompts and outputs stay on disk.
SUMMARY_FIELDS = ("correct", "answer_key", "extracted", "num_tokens", "finish_reason", "grade_status")


def build_parser(prog: str = "eval_math.py") -> cli.Parser:
    p = cli.Parser(prog=prog, description="Generate and grade math answers; resumable, data parallel.")
    g = p.add_argument_group("task")
    cli.add(g, "--task", required=True, help=f"{' | '.join(TASKS)} | {CUSTOM} (a local file)")
    cli.add(g, "--data-file", default=None, help="local JSONL/parquet instead of the hub")
    cli.add(g, "--data-dir", default=None, help="folder with <task>.jsonl or <task>.parquet")
    cli.add(g, "--question-field", default=None, help="question column of a local file (default problem/question)")
    cli.add(g, "--answer-field", default=None, help="answer column of a local file (default answer)")
    g.add_argument("--prompt-template", "--prompt_template", dest="prompt_template", default="litesys",
                   choices=list(TEMPLATES), help="litesys: the original LiteSys prompt; qwen: Qwen's math prompt")
    cli.add_engine_args(p)
    cli.add_sampling_args(p)
    cli.add_repetition_args(p)
    cli.add_run_args(p)
    cli.add(g, "--grade_timeout", type=float, default=30.0, help="seconds per answer before it counts wrong")
    cli.add(g, "--grade_workers", type=int, default=None, help="grading processes per worker (default: auto)")
    cli.add_sparse_args(p)
    return p


def load_data(args: argparse.Namespace) -> Dataset:
    return load_task(args.task, args.data_file, args.data_dir, args.question_field, args.answer_field, args.limit)


def run_config(args: argparse.Namespace, data: Dataset) -> dict:
    """What must match for two runs to share an output folder (trials and --limit may grow)."""
    return {"task": args.task, "model": cli.model_id(args.model), "dtype": args.dtype_resolved,
            "data": data.source, "data_fingerprint": data.fingerprint, "prompt_template": args.prompt_template,
            "sparse": cli.sparse_record(args), **cli.sampling_config(args)}


class MathGrader:
    """Record processor: grades each sample in a process pool and adds correct/extracted/answer_key."""

    def __init__(self, task: str, timeout: float, workers: int | None):
        from litesys.eval.grader_pool import GradePool

        self.task = task
        self.pool = GradePool("litesys.eval.math:grade_item", workers=workers, timeout=timeout)
        self.pool.warm()  # before generation starts, so that the first samples are written without delay

    def __call__(self, records: list[dict]) -> list[dict]:
        outcomes = self.pool.map([(self.task, r["output"], r["answer"]) for r in records])
        for rec, out in zip(records, outcomes):
            ok = out.status == "ok"
            rec["correct"], rec["extracted"], rec["answer_key"] = out.value if ok else (False, None, None)
            rec["grade_status"] = out.status if ok else f"{out.status}: {out.value}"
        return records

    def close(self) -> None:
        self.pool.close()


def make_job(args: argparse.Namespace) -> Job:
    """Module level on purpose: data-parallel workers rebuild the job from the flags."""
    data = load_data(args)
    items = [WorkItem(p.id, t, build_prompt(args.prompt_template, p.question),
                      cli.sampling_params(args, sample_seed(args.seed, p.id, t)), {"answer": p.answer})
             for p in data.problems for t in range(args.trial)]
    workers = args.grade_workers or max(1, min(4, (os.cpu_count() or 1) // max(args.nproc, 1)))
    return Job(items, functools.partial(cli.make_llm, args), lambda: MathGrader(args.task, args.grade_timeout, workers),
               desc=args.task)


def summarize_run(records: list[dict], args: argparse.Namespace, config: dict, n_problems: int) -> dict:
    from litesys.eval.metrics import summarize

    s = summarize(records, args.trial)
    status = Counter(r.get("grade_status", "ok").split(":")[0] for r in records)
    return {"task": args.task, "model": config["model"], "trials": args.trial, "limit": args.limit,
            "expected_samples": n_problems * args.trial, "complete": len(records) == n_problems * args.trial,
            **{k: s[k] for k in ("problems", "samples", "pass@1", "pass@k", "maj@k")},
            "mean_tokens": sum(r["num_tokens"] for r in records) / len(records) if records else 0.0,
            "finish_reasons": dict(sorted(Counter(r["finish_reason"] for r in records).items())),
            "grading": {"timeouts": status["timeout"], "crashes": status["crash"], "errors": status["error"],
                        "no_answer": sum(r.get("extracted") is None for r in records)},
            "per_problem": s["per_problem"], "config": config}


def prepare(args: argparse.Namespace) -> tuple[Dataset, list[str], dict, Path]:
    """Every check that can fail on bad input, before anything is written."""
    cli.validate_common(args)
    if args.grade_timeout <= 0:
        raise cli.UsageError(f"--grade_timeout must be > 0 seconds, got {args.grade_timeout}")
    cli.check_model(args.model)
    data = load_data(args)
    devices = cli.resolve_devices(args)
    args.dtype_resolved = cli.resolve_dtype(args, devices)
    config = run_config(args, data)  # UsageError on sparse-attention flags that do not combine
    out = cli.output_dir(args, args.task)
    check_run_config(out, config)
    return data, devices, config, out


def main(argv: list[str] | None = None, prog: str = "eval_math.py", tensor_parallel_size: int = 1,
         runner=run) -> dict:
    """``runner``: ``runner.run``, or ``dist_runner.run_distributed`` under torchrun (None off global rank 0)."""
    args = build_parser(prog).parse_args(argv)
    args.tensor_parallel_size = tensor_parallel_size
    try:
        data, devices, config, out = prepare(args)
    except (cli.UsageError, DataError, RunError, FileNotFoundError) as e:
        cli.die(str(e), prog)
    result = cli.run_or_exit(runner, prog, out, make_job, args, out, devices, config)
    if result is None:  # another torchrun rank: global rank 0 writes the summary
        return {}
    summary = summarize_run(list(result.records(SUMMARY_FIELDS)), args, config, len(data.problems))
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    from litesys.report import format_table

    print(format_table(summary))
    print(f"samples: {out}/samples.*.jsonl  summary: {out / SUMMARY}")
    if args.wandb:
        _log_wandb(args.wandb, summary)
    return summary


def _log_wandb(project: str, summary: dict) -> None:
    import wandb

    run = wandb.init(project=project, config=summary["config"])
    run.log({"pass@1": summary["pass@1"], **summary["pass@k"], **summary["maj@k"],
             "mean_tokens": summary["mean_tokens"]})
    run.finish()
