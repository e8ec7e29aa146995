"""Read eval output folders (math: graded samples; LiveCodeBench: samples + a grade_lcb.py verdict file) into one
shape for the report: per sample ``problem_id``, ``trial``, ``correct``, ``num_tokens``, ``prompt_tokens``,
``finish_reason``, plus the run's config, expected sample count, cost model and measured timing.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from litesys.eval import run_info
from litesys.eval.cost import CostModel, Method, ModelShape, arith_intensity

SAMPLE_FIELDS = ("correct", "num_tokens", "prompt_tokens", "finish_reason", "answer_key", "grades")
_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float8_e4m3fn": 1, "fp8": 1}


class ReportError(ValueError):
    """A run cannot be reported; the message says what to pass instead."""


@dataclass
class Run:
    path: Path
    kind: str  # "math" | "lcb"
    task: str
    config: dict
    samples: list[dict]
    trials: int
    expected: int
    cost_model: CostModel | None = None
    timing: dict = field(default_factory=dict)
    label: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return len({s["problem_id"] for s in self.samples})

    @property
    def complete(self) -> bool:
        return len(self.samples) >= self.expected

    @property
    def gen_len(self) -> int | None:
        g = self.config.get("gen_len")
        return int(g) if isinstance(g, int) else None

    @property
    def model(self) -> str:
        return str(self.config.get("model") or "?")


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _has_shards(folder: Path) -> bool:
    from litesys.eval.runner import SHARD_GLOB

    return folder.is_dir() and any(folder.glob(SHARD_GLOB))


def _cost_model(folder: Path, config: dict, intensity: float | None) -> CostModel | None:
    """The run's recorded cost model, else one built from its local checkpoint's config.json (older runs)."""
    d = _read_json(folder / run_info.COST_MODEL)
    if d.get("shape"):
        return CostModel.from_json(d, intensity)
    model_cfg = Path(str(config.get("model", ""))) / "config.json"
    if not model_cfg.is_file():
        return None
    shape = ModelShape.from_config(json.loads(model_cfg.read_text()))
    try:
        method = Method.from_sparse(config.get("sparse"), shape.num_q_heads, shape.num_kv_heads)
    except ValueError:
        return None
    return CostModel(shape, method, _DTYPE_BYTES.get(str(config.get("dtype")), 2),
                     intensity if intensity is not None else arith_intensity(None)[0])


def _expected(folder: Path, samples: list[dict], trials_seen: int) -> tuple[int, int]:
    """(trials, expected samples): summary.json's when the eval wrote one, else problems x the most trials."""
    summary = _read_json(folder / "summary.json")
    trials = summary.get("trials") if isinstance(summary.get("trials"), int) else trials_seen
    problems = len({s["problem_id"] for s in samples})
    expected = summary.get("expected_samples")
    if not isinstance(expected, int):
        expected = problems * trials
    return max(trials, trials_seen), max(expected, len(samples))


def load_math(folder: Path, intensity: float | None) -> Run:
    from litesys.eval.runner import RUN_CONFIG, read_samples

    records = read_samples(folder, SAMPLE_FIELDS)
    if any("correct" not in r for r in records):
        raise ReportError(f"{folder} has samples without correct: grade it first (math) or pass its "
                          "grade_lcb.py verdict file (LiveCodeBench)")
    config = _read_json(folder / RUN_CONFIG)
    trials, expected = _expected(folder, records, max(r["trial"] for r in records) + 1)
    samples = [{"problem_id": str(r["problem_id"]), "trial": int(r["trial"]), "correct": bool(r["correct"]),
                "num_tokens": r.get("num_tokens"), "prompt_tokens": r.get("prompt_tokens"),
                "finish_reason": r.get("finish_reason"), "answer_key": r.get("answer_key"),
                **({"grades": {g: bool(v.get("correct")) for g, v in r["grades"].items()}} if r.get("grades") else {})}
               for r in records]
    return Run(folder, "math", str(config.get("task") or "?"), config, samples, trials, expected,
               _cost_model(folder, config, intensity), run_info.timing(folder))


# ---------------------------------------------------------------- LiveCodeBench


def _verdict_rows(path: Path) -> list[dict]:
    """Verdict lines of a grade_lcb.py output (docs/eval_lcb.md): ``question_id``, ``trial``, ``passed`` or
    ``verdict``, ``source``/``line`` of the graded sample. Other lines (a header, a torn last line) are skipped."""
    rows = []
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "question_id" in rec and ("passed" in rec or "verdict" in rec):
                rows.append(rec)
    return rows


def _passed(row: dict) -> bool:
    if isinstance(row.get("passed"), bool):
        return row["passed"]
    return str(row.get("verdict", "")).lower() == "passed"


def find_verdicts(folder: Path) -> Path | None:
    """The verdict file of an eval_lcb.py folder: ``<folder>.verdicts.jsonl`` (the command eval_lcb.py prints),
    else a ``*verdicts*.jsonl`` inside it or next to it named after it."""
    cands = [folder.with_name(folder.name + ".verdicts.jsonl"), folder / "verdicts.jsonl",
             *sorted(folder.glob("*verdict*.jsonl")), *sorted(folder.parent.glob(f"{folder.name}*verdict*.jsonl"))]
    return next((c for c in cands if c.is_file()), None)


def find_samples_dir(verdicts: Path, rows: list[dict]) -> Path | None:
    """The generation folder a verdict file grades: named by the file (``D.verdicts.jsonl`` -> ``D``), the
    folder it sits in, or the folder its rows' ``source`` paths point into."""
    name = verdicts.name
    cands = []
    for suffix in (".verdicts.jsonl", "_verdicts.jsonl", "-verdicts.jsonl", ".jsonl"):
        if name.endswith(suffix):
            cands.append(verdicts.with_name(name[: -len(suffix)]))
    cands.append(verdicts.parent)
    parents = {str(Path(r["source"]).parent) for r in rows if isinstance(r.get("source"), str)}
    if len(parents) == 1 and parents != {"."}:
        cands += [verdicts.parent / parents.pop()]
    return next((c for c in cands if _has_shards(c)), None)


# Top-level keys found without parsing a line (LiveCodeBench lines carry megabytes of test cases): inside a JSON
# string every quote is escaped, so `"num_tokens": ` can only be a key.
_INT_FIELD = {k: re.compile(rb'"' + k.encode() + rb'": (\d+)') for k in ("num_tokens", "prompt_tokens")}
_REASON = re.compile(rb'"finish_reason": "([A-Za-z_]+)"')


def _sample_index(folder: Path) -> tuple[dict, dict]:
    """Lengths of a generation folder's samples by (file name, line) and by (problem id, trial)."""
    from litesys.eval.fileio import complete_lines
    from litesys.eval.runner import SHARD_GLOB, RunError, line_key

    by_line, by_key = {}, {}
    for path in sorted(folder.glob(SHARD_GLOB)):
        for n, line in complete_lines(path):
            try:
                pid, trial = line_key(path, n, line)
            except (RunError, KeyError):
                continue
            small: dict = {"problem_id": str(pid), "trial": trial}
            for k, pat in _INT_FIELD.items():
                m = pat.search(line)
                small[k] = int(m.group(1)) if m else None
            m = _REASON.search(line)
            small["finish_reason"] = m.group(1).decode() if m else None
            by_line[(path.name, n)] = small
            by_key.setdefault((str(pid), trial), small)
    return by_line, by_key


def _rows_of(rows: list[dict], folder: Path, verdicts: Path) -> list[dict]:
    """A verdict file that grades several runs at once (grade_lcb.py over a parent folder): this run's rows only,
    told apart by the folder part of their ``source``."""
    parents = {Path(str(r.get("source", ""))).parent.as_posix() for r in rows}
    if len(parents) <= 1:
        return rows
    mine = [r for r in rows if folder.resolve().as_posix().endswith("/" + Path(str(r.get("source"))).parent.as_posix())]
    if not mine:
        raise ReportError(f"{verdicts} grades several runs ({', '.join(sorted(parents))}) and none is {folder}; "
                          "pass the run folder that was graded")
    return mine


def load_lcb(path: Path, intensity: float | None) -> Run:
    from litesys.eval.runner import RUN_CONFIG

    if path.is_dir():
        folder, verdicts = path, find_verdicts(path)
        if verdicts is None:
            raise ReportError(f"{path} holds LiveCodeBench samples but no verdicts: grade them (python grade_lcb.py "
                              f"--output_dir {path} --output_file {path}.verdicts.jsonl) or pass the verdict file")
        rows = _verdict_rows(verdicts)
    else:
        verdicts, rows = path, _verdict_rows(path)
        if not rows:
            raise ReportError(f"{path} has no verdict lines (question_id + passed/verdict); pass an eval output "
                              "folder or a grade_lcb.py --output_file")
        folder = find_samples_dir(path, rows)
        if folder is None:
            raise ReportError(f"no eval_lcb.py folder found for {path} (looked for {path.name.split('.')[0]}/ next "
                              "to it and the folder of its rows' source); pass that folder instead")
    if not rows:
        raise ReportError(f"{verdicts} has no verdict lines; grade {folder} with grade_lcb.py first")
    rows = _rows_of(rows, folder, verdicts)
    by_line, by_key = _sample_index(folder)
    latest: dict[tuple[str, int], dict] = {}
    for r in rows:
        src = Path(str(r.get("source", ""))).name
        linked = by_line.get((src, r.get("line"))) or by_key.get((str(r["question_id"]), r.get("trial"))) or {}
        trial = r.get("trial", linked.get("trial"))
        if not isinstance(trial, int):
            raise ReportError(f"{verdicts}: a verdict of {r['question_id']} has no trial and links to no sample "
                              f"in {folder}; regrade with grade_lcb.py")
        latest[(str(r["question_id"]), trial)] = {  # a regrade's later line wins
            "problem_id": str(r["question_id"]), "trial": trial, "correct": _passed(r),
            "num_tokens": linked.get("num_tokens"), "prompt_tokens": linked.get("prompt_tokens"),
            "finish_reason": r.get("finish_reason", linked.get("finish_reason")), "answer_key": None}
    samples = sorted(latest.values(), key=lambda s: (s["problem_id"], s["trial"]))
    config = _read_json(folder / RUN_CONFIG)
    trials, expected = _expected(folder, samples, max(s["trial"] for s in samples) + 1)
    expected = max(expected, len(by_key))  # generated but not graded yet counts as missing
    run = Run(folder, "lcb", "lcb", config, samples, trials, expected, _cost_model(folder, config, intensity),
              run_info.timing(folder))
    if any(s["num_tokens"] is None for s in samples):
        run.notes.append(f"{sum(s['num_tokens'] is None for s in samples)} verdicts link to no sample line: "
                         "no lengths for them")
    return run


def load_run(path: Path, intensity: float | None = None) -> Run:
    """A math folder, an eval_lcb.py folder (verdicts found beside it) or a grade_lcb.py verdict file."""
    path = Path(path)
    if path.is_file():
        return load_lcb(path, intensity)
    if not path.is_dir():
        raise ReportError(f"{path} does not exist; pass an eval --output_dir or a grade_lcb.py verdict file")
    if not _has_shards(path):
        raise ReportError(f"{path} holds no samples (samples.*.jsonl); run an eval with --output_dir {path} first")
    from litesys.eval.runner import iter_samples

    first = next(iter_samples(path, ("correct",)), {})
    return load_math(path, intensity) if "correct" in first else load_lcb(path, intensity)
