"""eval_lcb.py's task: LiveCodeBench problems -> prompts -> generation JSONL (grading is separate: grade_lcb.py).

Each sample line carries the problem fields grade_lcb.py needs (``question_id``, ``difficulty``, the test
cases, ``metadata``, ``starter_code``, ...) and the response as ``output_text``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from litesys.eval import cli, run_info, task
from litesys.eval.runner import RunResult
from litesys.eval.tasks.lcb.data import (
    PROBLEM_FIELDS,
    SYSTEM_PROMPT,
    build_prompt,
    load_problems,
    problem_tests,
    release_files,
)


def _jsonable(v):
    return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)  # e.g. parquet datetimes


def conversation(problem: dict, system_prompt: str) -> list[dict]:
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}] if system_prompt == "lcb" else []
    return msgs + [{"role": "user", "content": build_prompt(problem)}]


def decodable(problems: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """The problems whose tests decode, and the (question_id, reason) of the others: they could only fail at
    grading."""
    kept, skipped = [], []
    for p in problems:
        try:
            problem_tests(p)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            skipped.append((str(p["question_id"]), str(e)))
            continue
        kept.append(p)
    return kept, skipped


class LcbTask(task.Task):
    prog = "eval_lcb.py"
    description = "Generate LiveCodeBench solutions; resumable, data parallel. Grade them with grade_lcb.py."
    run_dir = "lcb_<release or data file name>"
    # output_text: the name grade_lcb.py (and LiveCodeBench's own tools) read the response from
    output_field = "output_text"
    wandb = False  # nothing to log before grade_lcb.py has scored the samples
    enable_thinking = True  # LiveCodeBench runs of reasoning models think

    def add_args(self, g) -> None:
        cli.add(g, "--release", default="v5",
                help="release_v1..release_v6 | release_latest | v1..v6 (problems added in that release) | vA_vB "
                     "(default v5)")
        # the same data flags as eval_math.py
        cli.add(g, "--data-file", default=None,
                help="local .jsonl/.parquet with LiveCodeBench's fields instead of the hub")
        cli.add(g, "--data-dir", default=None,
                help="folder with the release's test*.jsonl files, as on the hub (offline --release)")
        cli.add(g, "--start_date", default=None, help="only problems with contest_date >= this (YYYY-MM-DD)")
        cli.add(g, "--end_date", default=None, help="only problems with contest_date <= this (YYYY-MM-DD)")
        g.add_argument("--system-prompt", "--system_prompt", dest="system_prompt", default="none",
                       choices=["none", "lcb"], help="lcb: LiveCodeBench's generic system message (default none)")
        cli.add(g, "--hub_cache", default=None, help="cache folder for the hub download (default: HF's)")

    def check_args(self, args: argparse.Namespace) -> None:
        if args.data_file and args.data_dir:
            raise cli.UsageError("--data-file and --data-dir both given: pass one")

    def load(self, args: argparse.Namespace) -> task.Problems:
        try:
            if not args.data_file:
                release_files(args.release)  # an unknown tag fails before any download
            problems = load_problems(args.data_file or args.release, args.start_date, args.end_date, args.hub_cache,
                                     None if args.data_file else args.data_dir)
        except ValueError as e:
            raise cli.UsageError(str(e)) from None
        problems, skipped = decodable(problems[:args.limit] if args.limit else problems)
        for qid, why in skipped:
            print(f"warning: problem {qid} skipped: its test data does not decode ({why})", file=sys.stderr)
        if not problems:
            raise cli.UsageError(f"none of the {len(skipped)} problems has test data that decodes: check the data")
        ids = "\n".join(sorted(str(p["question_id"]) for p in problems))
        record = {"data": args.data_file and str(Path(args.data_file).resolve()) or f"livecodebench:{args.release}",
                  "data_fingerprint": hashlib.sha256(ids.encode()).hexdigest()[:16]}
        return task.Problems(problems, record, {"skipped_bad_tests": len(skipped)})

    def task_name(self, args: argparse.Namespace) -> str:
        return "lcb"

    def run_name(self, args: argparse.Namespace) -> str:
        return f"lcb_{Path(args.data_file).stem if args.data_file else args.release}"

    def problem_id(self, problem: dict) -> str:
        return str(problem["question_id"])

    def prompt(self, args: argparse.Namespace, problem: dict) -> list[dict]:
        return conversation(problem, args.system_prompt)

    def fields(self, problem: dict) -> dict:
        return {k: _jsonable(problem.get(k)) for k in PROBLEM_FIELDS}

    def run_config(self, args: argparse.Namespace) -> dict:
        return {"start_date": args.start_date, "end_date": args.end_date, "system_prompt": args.system_prompt}

    def before_run(self, output_dir: Path) -> None:
        """The samples carry the answer key (the private tests): other users, which the grader's sandboxed
        programs run as, must not reach them."""
        output_dir.mkdir(parents=True, exist_ok=True)
        mode = output_dir.stat().st_mode
        if mode & 0o007:
            os.chmod(output_dir, mode & ~0o007)

    def finish(self, args: argparse.Namespace, plan: task.Plan, result: RunResult) -> dict:
        """Returns ``{"problems", "samples", "output_dir", "skipped_bad_tests", "skipped_long_prompt"}`` (also
        printed as JSON); summary.json adds the run's settings and run_info."""
        out, n = plan.output_dir, len(plan.problems.items)
        # counted from the keys alone: the lines (megabytes of test cases each) are never read back here
        summary = {"problems": n, "samples": result.num_samples, "output_dir": str(out),
                   "skipped_bad_tests": plan.problems.notes["skipped_bad_tests"],
                   "skipped_long_prompt": len(plan.skipped_long)}
        print(json.dumps(summary))
        info = {**summary, "task": "lcb", "model": plan.config["model"], "trials": args.trial,
                "expected_samples": n * args.trial, "skipped_problems": list(plan.skipped_long),
                "run_info": run_info.collect(out), "config": plan.config}
        (out / "summary.json").write_text(json.dumps(info, indent=2) + "\n")  # not *.jsonl: grading skips it
        print(f"grade with: python grade_lcb.py --output_dir {out}")
        return summary


TASK = LcbTask()

main, prepare, build_parser = TASK.main, TASK.prepare, TASK.build_parser  # eval_lcb.py (and eval_lcb_dist.py)
