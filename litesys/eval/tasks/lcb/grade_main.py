"""grade_lcb.py's wiring: generation JSONL under a folder -> sandboxed runs, judged here -> verdicts -> pass@k.

Every check that can fail on bad input (flags, folder, lines, sandbox set-up, who can read the answer key) runs
before the verdict file is touched; after that each verdict is appended (and flushed) as soon as it is known, so
an interrupted run resumes where it stopped. Rows whose test data cannot be used get verdict ``bad_test_data``
(a warning each); they are reported apart and never scored, and the others are graded (``--strict``: exit 2
before anything is written instead).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from litesys.eval import cli, run_info
from litesys.eval.sandbox import Limits, Sandbox, SandboxError
from litesys.eval.tasks.lcb import grade as g
from litesys.eval.tasks.lcb.data import problem_tests
from litesys.eval.tasks.lcb.files import LINE_FIELDS, Sample, collect, load_problem, open_verdicts, read_verdicts  # noqa: F401
from litesys.eval.tasks.lcb.judge import Expected
from litesys.eval.tasks.lcb.summary import format_all, summarize_all

GRADER_VERSION = 2  # bump when a change to the harness or the judge can change a verdict
OUTPUT_CAP = 64 << 20  # characters a program may print per test
_PROBE = """import json
ok = []
for p in json.load(open("paths.json")):
    try:
        open(p, "rb").close()
        ok.append(p)
    except OSError:
        pass
print(json.dumps(ok))
"""


def build_parser(prog: str = "grade_lcb.py") -> cli.Parser:
    p = cli.Parser(prog=prog, description="Grade eval_lcb.py generations in a sandbox; prints pass@1 and pass@k.")
    cli.add(p, "--output_dir", required=True, help="folder with the generation *.jsonl (searched recursively)")
    cli.add(p, "--output_file", default=None,
            help="per-sample verdicts (JSONL; default OUTPUT_DIR/verdicts.jsonl); rerunning skips graded samples")
    cli.add(p, "--io", default="both", choices=[*g.IO_MODES, "both"],
            help="lcb_runner: run stdin programs as lcb_runner does (headline numbers); script: as real scripts "
                 "(real stdin pipe); both (default): grade both, report both")
    p.add_argument("--strict", action="store_true",
                   help="exit 2 (before grading) when any row has bad test data, instead of reporting it apart")
    cli.add(p, "--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
            help="programs run at once (default: half the CPUs)")
    cli.add(p, "--timeout", type=float, default=6.0, help="seconds per test, as lcb_runner (default 6)")
    cli.add(p, "--memory_mb", type=int, default=4096, help="address-space cap per program (default 4096)")
    cli.add(p, "--max_tasks", type=int, default=4,
            help="processes + threads a program may have at once (RLIMIT_NPROC; default 4)")
    cli.add(p, "--k", default=None, help="comma-separated ks for pass@k (default 1,2,4,... up to the samples)")
    cli.add(p, "--sandbox_python", default=None, help="interpreter for programs (default: first usable one)")
    cli.add(p, "--sandbox_uid_base", type=int, default=65000,
            help="as root, worker i runs programs as uid/gid BASE+i, which must be unused (default 65000)")
    return p


@dataclass
class Plan:
    out_dir: Path
    out_file: Path
    modes: tuple[str, ...]
    samples: list[Sample]
    where: dict
    done: dict  # (key, io) -> row
    n_tests: dict  # question_id -> tests, for the problems still to grade
    ks: list[int] | None
    config: dict
    replace: bool  # the verdict file holds another config: start over
    sandbox: Sandbox


def _parse_ks(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise cli.UsageError(f"--k must be comma-separated integers >= 1, got {text!r}")
    return ks


def _check_flags(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise cli.UsageError(f"--workers must be >= 1, got {args.workers}")
    if not args.timeout > 0:
        raise cli.UsageError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.memory_mb < 256:
        raise cli.UsageError(f"--memory_mb must be >= 256 (Python alone needs that much), got {args.memory_mb}")
    if args.max_tasks < 1:
        raise cli.UsageError(f"--max_tasks must be >= 1, got {args.max_tasks}")


def _vet_tests(samples: list[Sample], where: dict, todo_q: set[str], strict: bool) -> dict[str, int]:
    """Decode every test set still needed (regraded lazily later); a problem that does not decode marks its
    samples bad, with one warning."""
    n_tests = {}
    for qid in sorted(todo_q):
        path, offset, n = where[qid]
        try:
            n_tests[qid] = len(problem_tests(load_problem(path, offset)).inputs)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            why = f"bad test data: {e}"
            bad = [s for s in samples if s.question_id == qid and not s.bad]
            for s in bad:
                s.bad = why
            msg = f"{path}:{n}: problem {qid}: {why}"
            if strict:
                raise cli.UsageError(f"--strict: {msg}; fix the data or drop --strict to grade the rest") from None
            print(f"warning: {msg}; its {len(bad)} sample(s) get verdict bad_test_data", file=sys.stderr)
    return n_tests


def _probe_readable(sandbox: Sandbox, files: list[Path], out_dir: Path) -> None:
    """As root, refuse when the sandbox users could read a generation file: it holds the expected outputs."""
    paths = [str(p.resolve()) for p in files]
    res = sandbox.run(0, {"probe.py": _PROBE.encode(), "paths.json": json.dumps(paths).encode()}, "probe.py", [],
                      wall_s=60)
    try:
        readable = json.loads(res.stdout)
    except ValueError:
        raise cli.UsageError("the sandbox could not check who can read --output_dir: rerun, or pass "
                             "--sandbox_python") from None
    if readable:
        raise cli.UsageError(f"--output_dir {out_dir}: the sandbox users can read {readable[0]}"
                             f"{f' and {len(readable) - 1} more' if len(readable) > 1 else ''}, which hold(s) the "
                             f"expected outputs, so graded programs could too: run `chmod o-rwx {out_dir}` "
                             "(eval_lcb.py makes its folders so) and rerun")


def prepare(args: argparse.Namespace) -> Plan:
    """Every check that can fail on bad input; nothing is written here (the sandbox lives in a temp dir)."""
    out_dir = Path(args.output_dir)
    if not out_dir.is_dir():
        raise cli.UsageError(f"--output_dir {out_dir} is not a folder: pass the folder eval_lcb.py wrote")
    _check_flags(args)
    ks = _parse_ks(args.k)
    modes = g.IO_MODES if args.io == "both" else (args.io,)
    out_file = Path(args.output_file) if args.output_file else out_dir / "verdicts.jsonl"
    if out_file.is_dir():
        raise cli.UsageError(f"--output_file {out_file} is a folder; pass a file path")
    samples, where = collect(out_dir, {out_file.resolve()})
    limits = Limits(memory_bytes=args.memory_mb << 20, max_tasks=args.max_tasks)
    try:
        sandbox = Sandbox(limits, python=args.sandbox_python, uid_base=args.sandbox_uid_base)
    except SandboxError as e:
        raise cli.UsageError(str(e)) from None
    try:
        sandbox.check_slots(args.workers)
        config = {"timeout": args.timeout, "memory_mb": args.memory_mb, "max_tasks": args.max_tasks,
                  "output_cap": OUTPUT_CAP, "python": sandbox.python_version, "grader": GRADER_VERSION}
        old_config, done = read_verdicts(out_file)
        replace = out_file.is_file() and old_config != config
        if replace:
            done = {}
        todo_q = {s.question_id for s in samples if not s.bad and s.code.strip()
                  and any(done.get((s.key, m), {}).get("verdict") in (None, g.BAD_TEST_DATA) for m in modes)}
        n_tests = _vet_tests(samples, where, todo_q, args.strict)
        if args.strict and any(s.bad for s in samples):
            first = next(s for s in samples if s.bad)
            raise cli.UsageError(f"--strict: {out_dir / first.source}:{first.line}: {first.bad}; fix the data or "
                                 "drop --strict to grade the other rows")
        if sandbox.is_root:
            _probe_readable(sandbox, sorted({out_dir / s.source for s in samples}), out_dir)
    except SandboxError as e:
        sandbox.close()
        raise cli.UsageError(str(e)) from None
    except BaseException:
        sandbox.close()
        raise
    if replace:
        changed = ", ".join(f"{k} {(old_config or {}).get(k)} -> {v}" for k, v in config.items()
                            if (old_config or {}).get(k) != v)
        print(f"note: {out_file} was graded with other settings ({changed}): regrading everything; the old "
              f"verdicts move to {out_file.name}.old", file=sys.stderr)
    return Plan(out_dir, out_file, modes, samples, where, done, n_tests, ks, config, replace, sandbox)


def grade(args: argparse.Namespace, plan: Plan) -> None:
    done, modes, sandbox = plan.done, plan.modes, plan.sandbox
    todo = [(s, m) for s in plan.samples for m in modes
            if done.get((s.key, m), {}).get("verdict") in (None, g.BAD_TEST_DATA)]
    if not todo and not plan.replace:
        return
    if not sandbox.is_root:
        print("warning: not root, so programs run as you: they can read (including the expected outputs in "
              "--output_dir) and write your files and signal your processes; grade as root (e.g. in a container) "
              "for the full sandbox", file=sys.stderr)
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="grading", unit="sample", dynamic_ncols=True,
               disable=os.environ.get("LITESYS_NO_PROGRESS") == "1")
    by_key = {s.key: s for s, _ in todo}
    left: dict[str, int] = {}
    inputs_files: dict[str, Path] = {}
    with open_verdicts(plan.out_file, plan.config, plan.replace) as fout:
        def write(s: Sample, mode: str, v: g.Verdict) -> None:
            row = s.record(mode, v)
            old = done.get((s.key, mode))
            if not (old and old["verdict"] == v.verdict == g.BAD_TEST_DATA and old["detail"] == v.detail):
                fout.write(json.dumps(row, ensure_ascii=False) + "\n")
                fout.flush()
            done[(s.key, mode)] = row
            bar.update(1)

        runnable = []
        for s, m in todo:
            if s.bad:
                write(s, m, g.Verdict(g.BAD_TEST_DATA, 0, 0, s.bad))
            elif not s.code.strip():
                write(s, m, g.Verdict(g.NO_CODE, 0, plan.n_tests.get(s.question_id, 0),
                                      "no fenced code block in the answer"))
            else:
                runnable.append((s, m))

        def programs():
            order = list(dict.fromkeys(s.question_id for s, _ in runnable))
            by_q: dict[str, list] = {}
            for s, m in runnable:
                by_q.setdefault(s.question_id, []).append((s, m))
            for i, qid in enumerate(order):
                path, offset, _ = plan.where[qid]
                tests = problem_tests(load_problem(path, offset))
                expected = Expected.from_tests(tests.outputs, tests.fn_name)
                ipath = sandbox.shared / f"inputs{i}.json"  # inputs only: the outputs stay in this process
                ipath.write_text(json.dumps({"inputs": tests.inputs, "fn_name": tests.fn_name}))
                os.chmod(ipath, 0o644)
                jobs = _jobs(by_q[qid], functional=bool(tests.fn_name))
                inputs_files[qid], left[qid] = ipath, len(jobs)
                for key, s, run_as, record_as in jobs:
                    yield g.Program(key, s.code, str(ipath), len(tests.inputs), expected, run_as, record_as)

        def on_done(program: g.Program, v: g.Verdict) -> None:
            s = by_key[program.key.rsplit(":", 1)[0]]
            for mode in program.record_as:
                write(s, mode, v)
            left[s.question_id] -= 1
            if left[s.question_id] == 0:
                inputs_files.pop(s.question_id).unlink(missing_ok=True)

        runner = g.ProgramRunner(sandbox, timeout=args.timeout, output_cap=OUTPUT_CAP)
        pool = g.ProgramPool(runner, args.workers, runner.deadline, sandbox.kill_slot)
        try:
            pool.run(programs(), on_done)
        finally:
            bar.close()


def _jobs(items: list[tuple[Sample, str]], functional: bool) -> list[tuple]:
    """(program key, sample, mode to run, modes to record) per run. A functional problem runs the same way in
    both modes, so it runs once and is recorded under each mode asked for."""
    if not functional:
        return [(f"{s.key}:{m}", s, m, (m,)) for s, m in items]
    per: dict[str, list] = {}
    for s, m in items:
        per.setdefault(s.key, [s, []])[1].append(m)
    return [(f"{key}:{modes[0]}", s, modes[0], tuple(modes)) for key, (s, modes) in per.items()]


def main(argv: list[str] | None = None, prog: str = "grade_lcb.py") -> dict:
    args = build_parser(prog).parse_args(argv)
    try:
        plan = prepare(args)
    except cli.UsageError as e:
        cli.die(str(e), prog)
    t0 = time.time()
    try:
        grade(args, plan)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; verdicts so far are in {plan.out_file} - rerun the same command to resume",
              file=sys.stderr)
        sys.exit(130)
    finally:
        plan.sandbox.close()
    rows = [plan.done[(s.key, m)] for s in plan.samples for m in plan.modes if (s.key, m) in plan.done]
    summary = {**summarize_all(rows, plan.ks), "config": plan.config, "verdict_file": str(plan.out_file),
               # as eval_math.py's summary: the generation's timing, versions, GPU; plus this grading's seconds
               "run_info": {**run_info.collect(plan.out_dir), "grade_s": round(time.time() - t0, 3)}}
    summary_path = plan.out_file.with_name(plan.out_file.stem + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    n_q = len({s.question_id for s in plan.samples if not s.bad})
    print(f"LiveCodeBench: {len(plan.samples)} samples of {n_q} problems from {plan.out_dir}")
    print(format_all(summary))
    print(f"verdicts: {plan.out_file}  summary: {summary_path}")
    return summary
