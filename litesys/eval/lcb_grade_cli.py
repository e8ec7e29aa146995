"""grade_lcb.py's wiring: generation JSONL under a folder -> sandboxed verdicts (resumable) -> pass@k.

Every check that can fail on bad input (folder, lines, test-case encoding, sandbox set-up) runs before the
verdict file is touched; after that each verdict is appended (and flushed) as soon as it is known, so an
interrupted run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from litesys.eval import cli
from litesys.eval import lcb_grade as g
from litesys.eval.lcb import problem_tests
from litesys.eval.sandbox import Limits, Sandbox, SandboxError

LINE_FIELDS = ("question_id", "difficulty", "public_test_cases", "private_test_cases", "metadata", "starter_code")


def build_parser(prog: str = "grade_lcb.py") -> cli.Parser:
    p = cli.Parser(prog=prog, description="Grade eval_lcb.py generations in a sandbox; prints pass@1 and pass@k.")
    cli.add(p, "--output_dir", required=True, help="folder with the generation *.jsonl (searched recursively)")
    cli.add(p, "--output_file", required=True, help="per-sample verdicts (JSONL); rerunning skips graded samples")
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
class Sample:
    key: str
    source: str  # file, relative to --output_dir
    line: int
    question_id: str
    difficulty: str
    code: str
    extra: dict  # trial, seed, finish_reason when present

    def record(self, v: g.Verdict) -> dict:
        return {"key": self.key, "source": self.source, "line": self.line, "question_id": self.question_id,
                "difficulty": self.difficulty, **self.extra, **v.to_json()}


def _lines(path: Path):
    """(line number, byte offset, raw line) of every non-blank line, and whether the last one is unterminated."""
    with open(path, "rb") as f:
        n, offset = 0, 0
        for raw in f:
            n += 1
            if raw.strip():
                yield n, offset, raw
            offset += len(raw)


def collect(output_dir: Path, exclude: set[Path]) -> tuple[list[Sample], dict[str, tuple[Path, int, int]]]:
    """Samples of every ``*.jsonl`` under ``output_dir``, and where each problem's test data first appears."""
    files = sorted(p for p in output_dir.rglob("*.jsonl") if p.is_file() and p.resolve() not in exclude)
    if not files:
        raise cli.UsageError(f"no *.jsonl under {output_dir}: point --output_dir at eval_lcb.py's output folder")
    samples: list[Sample] = []
    where: dict[str, tuple[Path, int, int]] = {}
    for path in files:
        rel = str(path.relative_to(output_dir))
        size = path.stat().st_size
        for n, offset, raw in _lines(path):
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as e:
                if offset + len(raw) == size and not raw.endswith(b"\n"):
                    print(f"warning: {path}:{n} is an unfinished last line (generation still running?); "
                          "skipped", file=sys.stderr)
                    continue
                raise cli.UsageError(f"{path}:{n} is not JSON ({e.msg}); fix or move that file") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("output_text"), str):
                raise cli.UsageError(f"{path}:{n} has no output_text: grade the output of eval_lcb.py (each line "
                                     "needs output_text and the LiveCodeBench problem fields)")
            missing = [k for k in LINE_FIELDS if k not in rec]
            if missing:
                raise cli.UsageError(f"{path}:{n} lacks {', '.join(missing)}: lines must carry the LiveCodeBench "
                                     "problem fields, as eval_lcb.py writes them")
            qid = str(rec["question_id"])
            text = rec["output_text"]
            key = hashlib.sha1(f"{rel}\0{n}\0{qid}\0{text}".encode()).hexdigest()[:20]
            extra = {k: rec[k] for k in ("trial", "seed", "finish_reason") if k in rec}
            samples.append(Sample(key, rel, n, qid, str(rec["difficulty"] or "unknown"), g.extract_code(text), extra))
            where.setdefault(qid, (path, offset, n))
    return samples, where


def _load_problem(path: Path, offset: int) -> dict:
    with open(path, "rb") as f:
        f.seek(offset)
        return json.loads(f.readline())


def read_done(path: Path) -> dict[str, dict]:
    """Verdicts already in the output file (a torn last line, from a run killed mid-write, is ignored)."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1
    done = {}
    for line in data[:good].splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and rec.get("verdict") in g.VERDICTS and "key" in rec:
            done[rec["key"]] = rec
    return done


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


def prepare(args: argparse.Namespace):
    """Every check that can fail on bad input; nothing is written here."""
    out_dir = Path(args.output_dir)
    if not out_dir.is_dir():
        raise cli.UsageError(f"--output_dir {out_dir} is not a folder: pass the folder eval_lcb.py wrote")
    if args.workers < 1:
        raise cli.UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.timeout <= 0:
        raise cli.UsageError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.memory_mb < 256:
        raise cli.UsageError(f"--memory_mb must be >= 256 (Python alone needs that much), got {args.memory_mb}")
    if args.max_tasks < 1:
        raise cli.UsageError(f"--max_tasks must be >= 1, got {args.max_tasks}")
    ks = _parse_ks(args.k)
    out_file = Path(args.output_file)
    if out_file.is_dir():
        raise cli.UsageError(f"--output_file {out_file} is a folder; pass a file path")
    samples, where = collect(out_dir, {out_file.resolve()})
    done = read_done(out_file) if out_file.is_file() else {}
    todo_q = {s.question_id for s in samples if s.key not in done and s.code.strip()}
    n_tests = {}
    for qid in sorted(todo_q):  # decode (and so vet) every test set up front; regraded lazily below
        path, offset, n = where[qid]
        try:
            n_tests[qid] = len(problem_tests(_load_problem(path, offset)).inputs)
        except ValueError as e:
            raise cli.UsageError(f"{path}:{n}: problem {qid}: {e}") from None
    return out_dir, out_file, samples, where, done, n_tests, ks


def grade(args: argparse.Namespace, samples: list[Sample], where: dict, done: dict, n_tests: dict,
          out_file: Path) -> None:
    todo = [s for s in samples if s.key not in done]
    if not todo:
        return
    limits = Limits(memory_bytes=args.memory_mb << 20, max_tasks=args.max_tasks)
    try:
        sandbox = Sandbox(limits, python=args.sandbox_python, uid_base=args.sandbox_uid_base)
    except SandboxError as e:
        raise cli.UsageError(str(e)) from None
    try:
        sandbox.check_slots(args.workers)
    except SandboxError as e:
        sandbox.close()
        raise cli.UsageError(str(e)) from None
    if not sandbox.is_root:
        print("warning: not root, so programs run as you: they can write your files and signal your processes; "
              "grade as root (e.g. in a container) for the full sandbox", file=sys.stderr)
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="grading", unit="sample", dynamic_ncols=True,
               disable=os.environ.get("LITESYS_NO_PROGRESS") == "1")
    by_key = {s.key: s for s in todo}
    left: dict[str, int] = {}
    tests_files: dict[str, Path] = {}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.is_file():  # cut a torn last line so that new verdicts start on a line of their own
        size, good = out_file.stat().st_size, out_file.read_bytes().rfind(b"\n") + 1
        if good != size:
            with open(out_file, "r+b") as f:
                f.truncate(good)
    with sandbox, open(out_file, "a", encoding="utf-8") as fout:
        def write(sample: Sample, v: g.Verdict) -> None:
            fout.write(json.dumps(sample.record(v), ensure_ascii=False) + "\n")
            fout.flush()
            done[sample.key] = sample.record(v)
            bar.update(1)

        for s in todo:
            if not s.code.strip():
                write(s, g.Verdict(g.NO_CODE, 0, n_tests.get(s.question_id, 0), "no fenced code block in the answer"))

        def programs():
            runnable = [s for s in todo if s.code.strip()]
            order = list(dict.fromkeys(s.question_id for s in runnable))
            by_q: dict[str, list[Sample]] = {}
            for s in runnable:
                by_q.setdefault(s.question_id, []).append(s)
            for i, qid in enumerate(order):
                path, offset, _ = where[qid]
                tests = problem_tests(_load_problem(path, offset))
                tpath = sandbox.shared / f"tests{i}.json"
                tpath.write_text(json.dumps(tests.to_json()))
                os.chmod(tpath, 0o644)
                tests_files[qid], left[qid] = tpath, len(by_q[qid])
                for s in by_q[qid]:
                    yield g.Program(s.key, s.code, str(tpath), len(tests.inputs))

        def on_done(program: g.Program, v: g.Verdict) -> None:
            s = by_key[program.key]
            write(s, v)
            left[s.question_id] -= 1
            if left[s.question_id] == 0:
                tests_files.pop(s.question_id).unlink(missing_ok=True)

        runner = g.ProgramRunner(sandbox, timeout=args.timeout)
        pool = g.ProgramPool(runner, args.workers, runner.deadline, sandbox.kill_slot)
        try:
            pool.run(programs(), on_done)
        finally:
            bar.close()


def main(argv: list[str] | None = None, prog: str = "grade_lcb.py") -> dict:
    args = build_parser(prog).parse_args(argv)
    try:
        out_dir, out_file, samples, where, done, n_tests, ks = prepare(args)
        grade(args, samples, where, done, n_tests, out_file)
    except cli.UsageError as e:
        cli.die(str(e), prog)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    records = [done[s.key] for s in samples]
    summary = g.summarize(records, ks)
    summary_path = out_file.with_name(out_file.stem + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    n_q = len({s.question_id for s in samples})
    print(f"LiveCodeBench: {len(samples)} samples of {n_q} problems from {out_dir}")
    print(g.format_summary(summary))
    print(f"verdicts: {out_file}  summary: {summary_path}")
    return summary
