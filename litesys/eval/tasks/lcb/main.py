"""eval_lcb.py's wiring: flags -> LiveCodeBench problems -> runner job -> generation JSONL (grading is separate).

Each sample line carries the problem fields grade_lcb.py needs (``question_id``, ``difficulty``, the test
cases, ``metadata``, ``starter_code``, ...) and the response as ``output_text``.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
from pathlib import Path

from litesys.eval import cli, run_info
from litesys.eval.runner import Job, RunError, WorkItem, check_run_config, run, sample_seed
from litesys.eval.tasks.lcb.data import (
    PROBLEM_FIELDS,
    SYSTEM_PROMPT,
    build_prompt,
    load_problems,
    problem_tests,
    release_files,
)


def build_parser(prog: str = "eval_lcb.py") -> cli.Parser:
    p = cli.Parser(prog=prog, description="Generate LiveCodeBench solutions; resumable, data parallel. "
                                          "Grade them with grade_lcb.py.")
    g = p.add_argument_group("task")
    cli.add(g, "--release", default="v5",
            help="release_v1..release_v6 | release_latest | v1..v6 (problems added in that release) | vA_vB "
                 "(default v5)")
    # the same data flags as eval_math.py
    cli.add(g, "--data-file", default=None, help="local .jsonl/.parquet with LiveCodeBench's fields instead of the hub")
    cli.add(g, "--data-dir", default=None,
            help="folder with the release's test*.jsonl files, as on the hub (offline --release)")
    cli.add(g, "--start_date", default=None, help="only problems with contest_date >= this (YYYY-MM-DD)")
    cli.add(g, "--end_date", default=None, help="only problems with contest_date <= this (YYYY-MM-DD)")
    g.add_argument("--system-prompt", "--system_prompt", dest="system_prompt", default="none",
                   choices=["none", "lcb"], help="lcb: LiveCodeBench's generic system message (default none)")
    cli.add(g, "--hub_cache", default=None, help="cache folder for the hub download (default: HF's)")
    cli.add_engine_args(p)
    cli.add_sampling_args(p)
    cli.add_repetition_args(p)
    # no --wandb: nothing to log before grade_lcb.py has scored the samples
    cli.add_run_args(p, "outputs/lcb_<release or data file name>/<model name>", wandb=False)
    p.set_defaults(enable_thinking=True)  # LiveCodeBench runs of reasoning models think
    cli.add_sparse_args(p)
    return p


def load(args: argparse.Namespace) -> tuple[list[dict], list[tuple[str, str]]]:
    """The problems to generate for, and the (question_id, reason) of those skipped because their tests do not
    decode: they could only fail at grading."""
    problems = load_problems(args.data_file or args.release, args.start_date, args.end_date, args.hub_cache,
                             None if args.data_file else args.data_dir)
    problems = problems[:args.limit] if args.limit else problems
    kept, skipped = [], []
    for p in problems:
        try:
            problem_tests(p)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            skipped.append((str(p["question_id"]), str(e)))
            continue
        kept.append(p)
    return kept, skipped


def _jsonable(v):
    return v if v is None or isinstance(v, (str, int, float, bool)) else str(v)  # e.g. parquet datetimes


def conversation(problem: dict, system_prompt: str) -> list[dict]:
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}] if system_prompt == "lcb" else []
    return msgs + [{"role": "user", "content": build_prompt(problem)}]


def make_job(args: argparse.Namespace, problems: list[dict] | None = None) -> Job:
    """Module level on purpose: data-parallel workers rebuild the job from the flags."""
    problems = load(args)[0] if problems is None else problems
    items = [WorkItem(str(p["question_id"]), t, conversation(p, args.system_prompt),
                      cli.sampling_params(args, sample_seed(args.seed, str(p["question_id"]), t)),
                      {k: _jsonable(p.get(k)) for k in PROBLEM_FIELDS})
             for p in problems for t in range(args.trial)]
    # output_text: the name grade_lcb.py (and LiveCodeBench's own tools) read the response from
    return Job(items, functools.partial(cli.make_llm, args), desc="lcb", output_field="output_text")


def run_config(args: argparse.Namespace, problems: list[dict]) -> dict:
    """What must match for two runs to share an output folder (trials and --limit may grow)."""
    ids = "\n".join(sorted(str(p["question_id"]) for p in problems))
    return {"task": "lcb", "model": cli.model_id(args.model), "dtype": args.dtype_resolved,
            "data": args.data_file and str(Path(args.data_file).resolve()) or f"livecodebench:{args.release}",
            "data_fingerprint": hashlib.sha256(ids.encode()).hexdigest()[:16], "start_date": args.start_date,
            "end_date": args.end_date, "system_prompt": args.system_prompt,
            "sparse": cli.sparse_record(args), **cli.sampling_config(args)}


def prepare(args: argparse.Namespace) -> tuple[list[dict], list[str], dict, Path]:
    """Every check that can fail on bad input, before anything is written."""
    cli.validate_common(args)
    cli.check_model(args.model)
    if args.data_file and args.data_dir:
        raise cli.UsageError("--data-file and --data-dir both given: pass one")
    try:
        if not args.data_file:
            release_files(args.release)  # an unknown tag fails before any download
        problems, skipped = load(args)
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    for qid, why in skipped:
        print(f"warning: problem {qid} skipped: its test data does not decode ({why})", file=sys.stderr)
    if not problems:
        raise cli.UsageError(f"none of the {len(skipped)} problems has test data that decodes: check the data")
    args.skipped_bad_tests = len(skipped)
    devices = cli.resolve_devices(args)
    args.dtype_resolved = cli.resolve_dtype(args, devices)
    config = run_config(args, problems)  # UsageError on sparse-attention flags that do not combine
    name = Path(args.data_file).stem if args.data_file else args.release
    out = cli.output_dir(args, f"lcb_{name}")
    check_run_config(out, config)
    return problems, devices, config, out


def main(argv: list[str] | None = None, prog: str = "eval_lcb.py", tensor_parallel_size: int = 1,
         runner=run) -> dict:
    """``runner``: ``runner.run``, or ``dist_runner.run_distributed`` under torchrun (eval_lcb_dist.py).

    Returns ``{"problems", "samples", "output_dir", "skipped_bad_tests"}`` (also printed as JSON); ``{}`` off
    global rank 0.
    """
    args = build_parser(prog).parse_args(argv)
    args.tensor_parallel_size = tensor_parallel_size
    try:
        problems, devices, config, out = prepare(args)
    except (cli.UsageError, RunError) as e:
        cli.die(str(e), prog)
    _private(out)
    result = cli.run_or_exit(runner, prog, out, make_job, args, out, devices, config, job=make_job(args, problems))
    if result is None:  # another torchrun rank: global rank 0 reports
        return {}
    # counted from the keys alone: the lines (megabytes of test cases each) are never read back here
    summary = {"problems": len(problems), "samples": result.num_samples, "output_dir": str(out),
               "skipped_bad_tests": args.skipped_bad_tests}
    print(json.dumps(summary))
    info = {**summary, "task": "lcb", "model": config["model"], "trials": args.trial,
            "expected_samples": len(problems) * args.trial, "run_info": run_info.collect(out), "config": config}
    (out / "summary.json").write_text(json.dumps(info, indent=2) + "\n")  # not *.jsonl: grading skips it
    print(f"grade with: python grade_lcb.py --output_dir {out}")
    return summary


def _private(out: Path) -> None:
    """The samples carry the answer key (the private tests): other users, which the grader's sandboxed programs
    run as, must not reach them."""
    out.mkdir(parents=True, exist_ok=True)
    mode = out.stat().st_mode
    if mode & 0o007:
        os.chmod(out, mode & ~0o007)
