"""eval_math.py's task: math problems -> chat prompts -> graded samples (in a process pool) -> summary.json."""
from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from dataclasses import dataclass

from litesys.eval import cli, run_info, task
from litesys.eval.runner import RunResult
from litesys.eval.tasks.math.compare import (
    DISAGREEMENTS,
    grade_fields,
    grader_scores,
    grading_counts,
    write_disagreements,
)
from litesys.eval.tasks.math.data import CUSTOM, TASKS, TEMPLATES, Problem, build_prompt, load_task
from litesys.eval.tasks.math.grade import GRADE_ITEM, GRADERS, PRELOAD

SUMMARY = "summary.json"
# What the summary reads of each sample: read back projected onto these, so prompts and outputs stay on disk.
SUMMARY_FIELDS = ("correct", "answer_key", "extracted", "num_tokens", "finish_reason", "grade_status",
                  "answer_source", "reason", "grades", "cost")


class MathGrader:
    """Record processor: grades each sample in a process pool with each of ``graders`` (the first one sets
    correct/extracted/answer_key/answer_source/reason; with two, every grade goes under ``grades``)."""

    def __init__(self, task: str, timeout: float, workers: int | None, graders: tuple[str, ...] = ("litesys",)):
        from litesys.eval.pool import GradePool

        self.task, self.graders = task, graders
        self.pool = GradePool(GRADE_ITEM, workers=workers, timeout=timeout, preload=PRELOAD)
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


@dataclass(frozen=True)
class GraderFactory:
    """Picklable: each shard (a data-parallel worker too) builds its grader where it runs."""

    task: str
    timeout: float
    workers: int
    graders: tuple[str, ...]

    def __call__(self) -> MathGrader:
        return MathGrader(self.task, self.timeout, self.workers, self.graders)


def graders(args: argparse.Namespace) -> tuple[str, ...]:
    """``--grader`` first (it sets the headline fields), then the other one under --compare-graders."""
    return (args.grader, *(g for g in GRADERS if g != args.grader)) if args.compare_graders else (args.grader,)


class MathTask(task.Task):
    prog = "eval_math.py"
    description = "Generate and grade math answers; resumable, data parallel."
    run_dir = "<task>"

    def add_args(self, g) -> None:
        cli.add(g, "--task", required=True, help=f"{' | '.join(TASKS)} | {CUSTOM} (a local file)")
        cli.add(g, "--data-file", default=None, help="local JSONL/parquet instead of the hub")
        cli.add(g, "--data-dir", default=None, help="folder with <task>.jsonl or <task>.parquet")
        cli.add(g, "--question-field", default=None, help="question column of a local file (default problem/question)")
        cli.add(g, "--answer-field", default=None, help="answer column of a local file (default answer)")
        g.add_argument("--prompt-template", "--prompt_template", dest="prompt_template", default="litesys",
                       choices=list(TEMPLATES), help="litesys: the original LiteSys prompt; qwen: Qwen's math prompt")
        cli.add(g, "--grade_timeout", type=cli.finite_float, default=30.0,
                help="seconds per answer before it counts wrong")
        cli.add(g, "--grade_workers", type=int, default=None, help="grading processes per worker (default: auto)")
        cli.add(g, "--grader", choices=GRADERS, default="litesys",
                help="litesys: the final-answer policy of docs/eval_math.md (default); math-verify: plain "
                     "math-verify as lighteval runs it")
        cli.add(g, "--compare-graders", action="store_true",
                help=f"grade with both graders: both scores in the summary, the samples they disagree on (with the "
                     f"reason) in {DISAGREEMENTS}")

    def check_args(self, args: argparse.Namespace) -> None:
        if args.grade_timeout <= 0:
            raise cli.UsageError(f"--grade_timeout must be > 0 seconds, got {args.grade_timeout}")
        if args.grade_workers is not None and args.grade_workers < 1:
            raise cli.UsageError(f"--grade_workers must be >= 1, got {args.grade_workers}")

    def load(self, args: argparse.Namespace) -> task.Problems:
        data = load_task(args.task, args.data_file, args.data_dir, args.question_field, args.answer_field,
                         args.limit)
        return task.Problems(data.problems, {"data": data.source, "data_fingerprint": data.fingerprint})

    def task_name(self, args: argparse.Namespace) -> str:
        return args.task

    def problem_id(self, problem: Problem) -> str:
        return problem.id

    def prompt(self, args: argparse.Namespace, problem: Problem) -> list[dict]:
        return build_prompt(args.prompt_template, problem.question)

    def fields(self, problem: Problem) -> dict:
        return {"answer": problem.answer}

    def run_config(self, args: argparse.Namespace) -> dict:
        # the samples on disk hold their grades: another grader must not mix with them
        return {"prompt_template": args.prompt_template, "grader": args.grader,
                "compare_graders": args.compare_graders}

    def processor(self, args: argparse.Namespace, nproc: int) -> GraderFactory:
        workers = args.grade_workers or max(1, min(4, (os.cpu_count() or 1) // max(nproc, 1)))
        return GraderFactory(args.task, args.grade_timeout, workers, graders(args))

    def finish(self, args: argparse.Namespace, plan: task.Plan, result: RunResult) -> dict:
        out = plan.output_dir
        summary = summarize_run(list(result.records(SUMMARY_FIELDS)), args, plan.config, len(plan.problems.items),
                                plan.skipped_long)
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


def summarize_run(records: list[dict], args: argparse.Namespace, config: dict, n_problems: int,
                  skipped: tuple[str, ...] = ()) -> dict:
    """summary.json: scores, counts, grading outcomes, modelled cost; ``skipped``: problems left out (too long)."""
    from litesys.eval.metrics import summarize

    s = summarize(records, args.trial)
    status = Counter(r.get("grade_status", "ok").split(":")[0] for r in records)
    return {"task": args.task, "model": config["model"], "trials": args.trial, "limit": args.limit,
            "expected_samples": n_problems * args.trial, "complete": len(records) == n_problems * args.trial,
            "skipped_long_prompt": len(skipped), "skipped_problems": list(skipped),
            **{k: s[k] for k in ("problems", "samples", "pass@1", "pass@k", "maj@k")},
            "mean_tokens": sum(r["num_tokens"] for r in records) / len(records) if records else 0.0,
            "finish_reasons": dict(sorted(Counter(r["finish_reason"] for r in records).items())),
            "grading": {"timeouts": status["timeout"], "crashes": status["crash"], "errors": status["error"],
                        "no_answer": sum(r.get("extracted") is None for r in records), **grading_counts(records)},
            "grader": args.grader, **_compared(records, args), **run_info.cost_summary(records),
            "per_problem": s["per_problem"], "config": config}


def _compared(records: list[dict], args: argparse.Namespace) -> dict:
    """Both graders' scores under --compare-graders (samples graded before it was on have no ``grades``)."""
    if not args.compare_graders or not all("grades" in r for r in records):
        return {}
    return {"graders": grader_scores(records, args.trial, graders(args))}


def _log_wandb(project: str, summary: dict) -> None:
    import wandb

    run = wandb.init(project=project, config=summary["config"])
    run.log({"pass@1": summary["pass@1"], **summary["pass@k"], **summary["maj@k"],
             "mean_tokens": summary["mean_tokens"]})
    run.finish()


TASK = MathTask()

main, prepare, build_parser = TASK.main, TASK.prepare, TASK.build_parser  # eval_math.py (and eval_math_dist.py)
