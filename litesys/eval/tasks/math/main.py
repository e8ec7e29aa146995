"""eval_math.py's wiring: flags -> checked inputs -> runner job -> graded samples -> summary."""
from __future__ import annotations

import argparse
import functools
import json
import os
from collections import Counter
from pathlib import Path

from litesys.eval import checks, cli, run_info
from litesys.eval.runner import Job, RunError, WorkItem, check_run_config, run, sample_seed
from litesys.eval.tasks.math.compare import (
    DISAGREEMENTS,
    grade_fields,
    grader_scores,
    grading_counts,
    write_disagreements,
)
from litesys.eval.tasks.math.data import CUSTOM, TASKS, TEMPLATES, DataError, Dataset, build_prompt, load_task
from litesys.eval.tasks.math.grade import GRADERS

SUMMARY = "summary.json"
# What the summary reads of each sample: read back projected onto these, so prompts and outputs stay on disk.
SUMMARY_FIELDS = ("correct", "answer_key", "extracted", "num_tokens", "finish_reason", "grade_status",
                  "answer_source", "reason", "grades")


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
    cli.add(g, "--grade_timeout", type=cli.finite_float, default=30.0, help="seconds per answer before it counts wrong")
    cli.add(g, "--grade_workers", type=int, default=None, help="grading processes per worker (default: auto)")
    cli.add(g, "--grader", choices=GRADERS, default="litesys",
            help="litesys: the final-answer policy of docs/eval_math.md (default); math-verify: plain math-verify "
                 "as lighteval runs it")
    cli.add(g, "--compare-graders", action="store_true",
            help=f"grade with both graders: both scores in the summary, the samples they disagree on (with the "
                 f"reason) in {DISAGREEMENTS}")
    cli.add(g, "--on-long-prompt", choices=("skip", "error"), default="skip",
            help="a problem whose prompt leaves no room within --max_len: skip it (counted in the summary as "
                 "skipped_long_prompt; default) or stop before anything is written")
    cli.add_sparse_args(p)
    return p


def load_data(args: argparse.Namespace) -> Dataset:
    return load_task(args.task, args.data_file, args.data_dir, args.question_field, args.answer_field, args.limit)


def run_config(args: argparse.Namespace, data: Dataset) -> dict:
    """What must match for two runs to share an output folder (trials and --limit may grow)."""
    return {"task": args.task, "model": cli.model_id(args.model), "dtype": args.dtype_resolved,
            "data": data.source, "data_fingerprint": data.fingerprint, "prompt_template": args.prompt_template,
            "sparse": cli.sparse_record(args), **cli.sampling_config(args),
            "grader": args.grader, "compare_graders": args.compare_graders}  # samples on disk hold their grades


class MathGrader:
    """Record processor: grades each sample in a process pool with each of ``graders`` (the first one sets
    correct/extracted/answer_key/answer_source/reason; with two, every grade goes under ``grades``)."""

    def __init__(self, task: str, timeout: float, workers: int | None, graders: tuple[str, ...] = ("litesys",)):
        from litesys.eval.pool import GradePool

        self.task, self.graders = task, graders
        self.pool = GradePool("litesys.eval.tasks.math.grade:grade_item", workers=workers, timeout=timeout)
        self.pool.warm()  # before generation starts, so that the first samples are written without delay

    def __call__(self, records: list[dict]) -> list[dict]:
        items = [(self.task, r["output"], r["answer"], r.get("finish_reason"), g)
                 for r in records for g in self.graders]
        outcomes = iter(self.pool.map(items))  # each (sample, grader) has its own time limit
        for rec in records:
            grades = {}
            for g in self.graders:
                out = next(outcomes)
                ok = out.status == "ok"
                grades[g] = grade_fields(out.value if ok else None, out.status if ok else f"{out.status}: {out.value}")
            first = grades[self.graders[0]]
            rec.update(correct=first["correct"], extracted=first["extracted"], answer_key=first["answer_key"],
                       answer_source=first["source"], reason=first["reason"], grade_status=first["status"])
            if len(self.graders) > 1:
                rec["grades"] = grades
        return records

    def close(self) -> None:
        self.pool.close()


def graders(args: argparse.Namespace) -> tuple[str, ...]:
    """``--grader`` first (it sets the headline fields), then the other one under --compare-graders."""
    return (args.grader, *(g for g in GRADERS if g != args.grader)) if args.compare_graders else (args.grader,)


def make_job(args: argparse.Namespace) -> Job:
    """Module level on purpose: data-parallel workers rebuild the job from the flags."""
    data = load_data(args)
    skip = set(getattr(args, "skip_problems", ()))  # prompts too long for --max_len (prepare found them)
    items = [WorkItem(p.id, t, build_prompt(args.prompt_template, p.question),
                      cli.sampling_params(args, sample_seed(args.seed, p.id, t)), {"answer": p.answer})
             for p in data.problems if p.id not in skip for t in range(args.trial)]
    workers = args.grade_workers or max(1, min(4, (os.cpu_count() or 1) // max(args.nproc, 1)))
    return Job(items, functools.partial(cli.make_llm, args), lambda: MathGrader(args.task, args.grade_timeout, workers,
                                                                                 graders(args)),
               desc=args.task)


def summarize_run(records: list[dict], args: argparse.Namespace, config: dict, n_problems: int) -> dict:
    from litesys.eval.metrics import summarize

    s = summarize(records, args.trial)
    status = Counter(r.get("grade_status", "ok").split(":")[0] for r in records)
    return {"task": args.task, "model": config["model"], "trials": args.trial, "limit": args.limit,
            "expected_samples": n_problems * args.trial, "complete": len(records) == n_problems * args.trial,
            "skipped_long_prompt": len(args.skip_problems), "skipped_problems": list(args.skip_problems),
            **{k: s[k] for k in ("problems", "samples", "pass@1", "pass@k", "maj@k")},
            "mean_tokens": sum(r["num_tokens"] for r in records) / len(records) if records else 0.0,
            "finish_reasons": dict(sorted(Counter(r["finish_reason"] for r in records).items())),
            "grading": {"timeouts": status["timeout"], "crashes": status["crash"], "errors": status["error"],
                        "no_answer": sum(r.get("extracted") is None for r in records), **grading_counts(records)},
            "grader": getattr(args, "grader", "litesys"), **_compared(records, args),
            "per_problem": s["per_problem"], "config": config}


def _compared(records: list[dict], args: argparse.Namespace) -> dict:
    """Both graders' scores under --compare-graders (samples graded before it was on have no ``grades``)."""
    if not getattr(args, "compare_graders", False) or not all("grades" in r for r in records):
        return {}
    return {"graders": grader_scores(records, args.trial, graders(args))}


def prepare(args: argparse.Namespace) -> tuple[Dataset, list[str], dict, Path]:
    """Every check that can fail on bad input, before anything is written."""
    cli.validate_common(args)
    if args.grade_timeout <= 0:
        raise cli.UsageError(f"--grade_timeout must be > 0 seconds, got {args.grade_timeout}")
    if args.grade_workers is not None and args.grade_workers < 1:
        raise cli.UsageError(f"--grade_workers must be >= 1, got {args.grade_workers}")
    cli.check_model(args.model)
    data = load_data(args)
    devices = cli.resolve_devices(args)
    args.dtype_resolved = cli.resolve_dtype(args, devices)
    model = checks.check_model(args)  # config, model type, weights, tokenizer, --max_len: no weight is loaded
    prompts = [build_prompt(args.prompt_template, p.question) for p in data.problems]
    lengths = checks.prompt_lengths(model.tokenizer, prompts, args.enable_thinking)
    args.skip_problems = checks.long_prompts([p.id for p in data.problems], lengths, args.max_len,
                                             args.on_long_prompt)
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
    summary = summarize_run(list(result.records(SUMMARY_FIELDS)), args, config,
                            len(data.problems) - len(args.skip_problems))
    if args.compare_graders:  # the disagreeing samples with their outputs, streamed (outputs are large)
        write_disagreements(result.records((*SUMMARY_FIELDS, "answer", "output")), out / DISAGREEMENTS)
    summary["run_info"] = run_info.collect(out)  # wall time, GPU-seconds, tok/s, versions, GPU
    (out / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    from litesys.eval.report import format_table

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
