"""grade_lcb.py's files: generation lines in; the verdict file (a config header, then rows) out.

Verdict file (JSONL, mode 600: details quote expected outputs):
  line 1: {"format": "litesys-lcb-verdicts", "version": 1, "config": {"timeout", "memory_mb", "max_tasks",
           "output_cap", "python", "grader"}}
  then one row per (sample, I/O mode): key, io, source, line, question_id, difficulty, [trial, seed,
           finish_reason], verdict, passed, tests_passed, tests_total, detail, elapsed_s.
A rerun with the same config appends only what is missing; with another config (e.g. --timeout) the old file
is moved to ``<file>.old`` and everything is graded again. Sample search skips verdict files, so the verdict
file may live inside the generation folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from litesys.eval import cli
from litesys.eval.tasks.lcb.grade import extract_code
from litesys.eval.tasks.lcb.judge import VERDICTS, Verdict

LINE_FIELDS = ("question_id", "difficulty", "public_test_cases", "private_test_cases", "metadata", "starter_code")
FORMAT = "litesys-lcb-verdicts"
VERSION = 1


@dataclass
class Sample:
    key: str
    source: str  # file, relative to --output_dir
    line: int
    question_id: str | None
    difficulty: str
    code: str
    extra: dict  # trial, seed, finish_reason when present
    bad: str | None = None  # why this line cannot be graded (malformed fields)

    def record(self, io: str, v: Verdict) -> dict:
        return {"key": self.key, "io": io, "source": self.source, "line": self.line, "question_id": self.question_id,
                "difficulty": self.difficulty, **self.extra, **v.to_json()}


def _lines(path: Path):
    """(line number, byte offset, raw line) of every non-blank line."""
    with open(path, "rb") as f:
        n, offset = 0, 0
        for raw in f:
            n += 1
            if raw.strip():
                yield n, offset, raw
            offset += len(raw)


def is_verdict_file(path: Path) -> bool:
    """A grade_lcb.py verdict file: this format's header, or (older files) a first row with a verdict and no
    output_text."""
    for _, _, raw in _lines(path):
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError:
            return False
        return isinstance(rec, dict) and (rec.get("format") == FORMAT or (
            "verdict" in rec and "key" in rec and "output_text" not in rec))
    return False


def _sample(rel: str, n: int, raw: bytes, rec: object) -> Sample:
    """One generation line; a malformed one becomes a Sample with ``bad`` set (it is reported, never graded)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("output_text"), str):
        why = "is not a JSON object" if not isinstance(rec, dict) else "has no output_text string"
        key = hashlib.sha1(f"{rel}\0{n}\0".encode() + raw).hexdigest()[:20]
        qid = rec.get("question_id") if isinstance(rec, dict) else None
        return Sample(key, rel, n, None if qid is None else str(qid), "unknown", "", {}, f"the line {why}")
    qid, text = rec.get("question_id"), rec["output_text"]
    key = hashlib.sha1(f"{rel}\0{n}\0{qid}\0{text}".encode()).hexdigest()[:20]
    extra = {k: rec[k] for k in ("trial", "seed", "finish_reason") if k in rec}
    missing = [k for k in LINE_FIELDS if k not in rec]
    bad = None
    if missing:
        bad = f"the line lacks {', '.join(missing)}"
    elif not isinstance(qid, (str, int)) or isinstance(qid, bool):
        bad = f"question_id {qid!r} is not a string"
    return Sample(key, rel, n, None if qid is None else str(qid), str(rec.get("difficulty") or "unknown"),
                  extract_code(text), extra, bad)


def collect(output_dir: Path, exclude: set[Path]) -> tuple[list[Sample], dict[str, tuple[Path, int, int]]]:
    """Samples of every ``*.jsonl`` under ``output_dir`` (verdict files skipped), and where each problem's test
    data first appears."""
    files = sorted(p for p in output_dir.rglob("*.jsonl") if p.is_file() and p.resolve() not in exclude)
    samples: list[Sample] = []
    where: dict[str, tuple[Path, int, int]] = {}
    found = False
    for path in files:
        if is_verdict_file(path):
            print(f"note: {path} is a grade_lcb.py verdict file; not graded", file=sys.stderr)
            continue
        found = True
        rel = str(path.relative_to(output_dir))
        size = path.stat().st_size
        first = True
        for n, offset, raw in _lines(path):
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as e:
                if offset + len(raw) == size and not raw.endswith(b"\n"):
                    print(f"warning: {path}:{n} is an unfinished last line (generation still running?); "
                          "skipped", file=sys.stderr)
                    continue
                rec = e
            if first and (not isinstance(rec, dict) or "output_text" not in rec):
                raise cli.UsageError(f"{path}:{n} has no output_text: grade the output of eval_lcb.py (each line "
                                     "needs output_text and the LiveCodeBench problem fields)")
            first = False
            s = _sample(rel, n, raw, rec if not isinstance(rec, Exception) else None)
            if isinstance(rec, Exception):
                s.bad = f"the line is not JSON ({rec.msg})"
            if s.bad:
                print(f"warning: {path}:{n}: {s.bad}; verdict bad_test_data", file=sys.stderr)
            elif s.question_id not in where:
                where[s.question_id] = (path, offset, n)
            samples.append(s)
    if not found:
        raise cli.UsageError(f"no *.jsonl generations under {output_dir}: point --output_dir at eval_lcb.py's "
                             "output folder")
    return samples, where


def load_problem(path: Path, offset: int) -> dict:
    with open(path, "rb") as f:
        f.seek(offset)
        return json.loads(f.readline())


# ---- the verdict file ---------------------------------------------------------------------------------------------
def read_verdicts(path: Path) -> tuple[dict | None, dict[tuple[str, str], dict]]:
    """(config from the header or None, rows by (key, io)); a torn last line is ignored, a later row wins."""
    if not path.is_file():
        return None, {}
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1
    config, done = None, {}
    for i, line in enumerate(data[:good].splitlines()):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict):
            continue
        if i == 0 and rec.get("format") == FORMAT:
            config = rec.get("config")
        elif rec.get("verdict") in VERDICTS and "key" in rec:
            done[(rec["key"], rec.get("io") or "lcb_runner")] = rec
    return config, done


def open_verdicts(path: Path, config: dict, replace: bool):
    """The verdict file opened for appending (mode 600), with its header; ``replace`` moves an old file aside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if replace and path.exists():
        os.replace(path, path.with_name(path.name + ".old"))
    if path.is_file():  # cut a torn last line so that new rows start on a line of their own
        size, good = path.stat().st_size, path.read_bytes().rfind(b"\n") + 1
        if good != size:
            with open(path, "r+b") as f:
                f.truncate(good)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    f = os.fdopen(fd, "a", encoding="utf-8")
    if f.tell() == 0:
        f.write(json.dumps({"format": FORMAT, "version": VERSION, "config": config}) + "\n")
        f.flush()
    return f
