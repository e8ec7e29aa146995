"""LiveCodeBench code generation: problems by release tag, prompts as LiveCodeBench builds them, test cases.

Release tags follow the dataset's own loader: ``release_vN`` is cumulative (test.jsonl .. testN.jsonl),
``vN`` is only the problems added in release N (``v5`` = test5.jsonl), ``vA_vB`` the releases A..B.
A local ``.jsonl``/``.parquet`` with the same fields (``data_file``), or a folder holding the release's
``test*.jsonl`` files as on the hub (``data_dir``), works offline.
"""
from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from litesys.eval.fileio import read_rows

HUB_REPO = "livecodebench/code_generation_lite"
_FILES = ["test.jsonl"] + [f"test{i}.jsonl" for i in range(2, 7)]
RELEASES: dict[str, list[str]] = {f"release_v{i}": _FILES[:i] for i in range(1, 7)}
RELEASES["release_latest"] = _FILES
RELEASES.update({f"v{i}": [_FILES[i - 1]] for i in range(1, 7)})
RELEASES.update({f"v{a}_v{b}": _FILES[a - 1:b] for a in range(1, 7) for b in range(a + 1, 7)})

# The fields a generation line carries so that grading needs nothing else.
PROBLEM_FIELDS = ("question_id", "question_title", "platform", "contest_id", "contest_date", "difficulty",
                  "starter_code", "public_test_cases", "private_test_cases", "metadata")
REQUIRED_FIELDS = ("question_id", "question_content", "difficulty", "starter_code", "public_test_cases",
                   "private_test_cases", "metadata")

# LiveCodeBench's generic user prompt (lcb_runner/prompts/code_generation.py), kept verbatim so scores compare.
SYSTEM_PROMPT = ("You are an expert Python programmer. You will be given a question (problem specification) and "
                 "will generate a correct Python program that matches the specification and passes all tests.")
_FORMAT_STARTER = ("You will use the following starter code to write the solution to the problem and enclose your "
                   "code within delimiters.")
_FORMAT_STDIN = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test "
                 "on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
                 "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.")


def build_prompt(problem: dict) -> str:
    """The user message: statement, then the starter code (functional) or the stdin/stdout instruction."""
    prompt = f"### Question:\n{problem['question_content']}\n\n"
    if problem.get("starter_code"):
        prompt += f"### Format: {_FORMAT_STARTER}\n```python\n{problem['starter_code']}\n```\n\n"
    else:
        prompt += f"### Format: {_FORMAT_STDIN}\n```python\n# YOUR CODE HERE\n```\n\n"
    return prompt + "### Answer: (use the provided format with backticks)\n\n"


# ---- loading ------------------------------------------------------------------------------------------------
def release_files(tag: str) -> list[str]:
    if tag.endswith((".jsonl", ".parquet")):
        raise ValueError(f"--release takes a release tag, not a file: pass --data-file {tag}")
    if tag not in RELEASES:
        raise ValueError(f"unknown LiveCodeBench release {tag!r}: use release_v1..release_v6, release_latest, "
                         "v1..v6 (problems added in that release) or vA_vB; for a local file pass --data-file")
    return RELEASES[tag]


def _local_release(tag: str, data_dir: str) -> list[Path]:
    folder = Path(data_dir)
    if not folder.is_dir():
        raise ValueError(f"--data-dir {data_dir} is not a folder")
    paths = [folder / name for name in release_files(tag)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"--data-dir {data_dir} lacks {', '.join(missing)} (release {tag}): put LiveCodeBench's "
                         "test*.jsonl files there, pass --data-file, or drop --data-dir to use the hub")
    return paths


def _download(files: list[str], cache_dir: str | None) -> list[Path]:
    from huggingface_hub import hf_hub_download

    paths = []
    for name in files:
        try:
            paths.append(Path(hf_hub_download(HUB_REPO, name, repo_type="dataset", cache_dir=cache_dir)))
        except Exception as e:
            raise ValueError(f"cannot fetch {name} of {HUB_REPO} ({type(e).__name__}): check the network, or pass "
                             "a local copy with --data-file FILE or --data-dir DIR") from None
    return paths


def _parse_date(text: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {text!r} is not a date: use YYYY-MM-DD") from None


def load_problems(dataset: str, start_date: str | None = None, end_date: str | None = None,
                  cache_dir: str | None = None, data_dir: str | None = None) -> list[dict]:
    """Problems of a release tag (from ``data_dir``, else downloaded from the hub) or of a local file, optionally
    only those whose ``contest_date`` lies in [start_date, end_date] (compared as datetimes, as lcb_runner does)."""
    local = Path(dataset)
    if dataset.endswith((".jsonl", ".parquet")):
        if not local.is_file():
            raise ValueError(f"--data-file {dataset} does not exist; pass a LiveCodeBench .jsonl/.parquet file")
        rows = read_rows(local)
        where = dataset
    elif data_dir:
        rows = [r for p in _local_release(dataset, data_dir) for r in read_rows(p)]
        where = f"{data_dir}:{dataset}"
    else:
        rows = [r for p in _download(release_files(dataset), cache_dir) for r in read_rows(p)]
        where = f"{HUB_REPO}:{dataset}"
    for i, row in enumerate(rows):
        missing = [k for k in REQUIRED_FIELDS if k not in row]
        if missing:
            raise ValueError(f"{where}: problem #{i} lacks {', '.join(missing)}: it is not LiveCodeBench data")
    lo = _parse_date(start_date, "--start_date") if start_date else None
    hi = _parse_date(end_date, "--end_date") if end_date else None
    if lo or hi:
        kept = []
        for row in rows:
            when = row.get("contest_date")
            if not when:
                raise ValueError(f"{where}: problem {row['question_id']} has no contest_date: drop "
                                 "--start_date/--end_date")
            when = when if isinstance(when, datetime) else _parse_date(str(when), "contest_date")
            if (lo is None or lo <= when) and (hi is None or when <= hi):
                kept.append(row)
        rows = kept
    if not rows:
        raise ValueError(f"{where}: no problems (left) to evaluate: check --release/--data-file and "
                         "--start_date/--end_date")
    return rows


# ---- test cases ---------------------------------------------------------------------------------------------
class _PlainDataUnpickler(pickle.Unpickler):
    """Admits only what pickle builds without looking anything up (str, bytes, numbers, lists, dicts, ...):
    every class, function or reduce target goes through find_class, which refuses."""

    def find_class(self, module: str, name: str):  # noqa: ANN201
        raise pickle.UnpicklingError(f"test data may only hold plain data; refusing to load {module}.{name}")


def decode_test_cases(raw: str | list) -> list[dict]:
    """``public_test_cases``/``private_test_cases``: JSON, or base64 -> zlib -> pickle -> JSON."""
    if isinstance(raw, list):
        cases = raw
    else:
        try:
            cases = json.loads(raw)
        except (json.JSONDecodeError, TypeError):
            try:
                blob = zlib.decompress(base64.b64decode(raw.encode("ascii"), validate=False))
            except Exception as e:
                raise ValueError(f"test cases are neither JSON nor base64+zlib ({type(e).__name__})") from None
            try:
                obj = _PlainDataUnpickler(io.BytesIO(blob)).load()
            except pickle.UnpicklingError as e:
                raise ValueError(str(e)) from None
            except Exception as e:
                raise ValueError(f"test cases are not a valid pickle ({type(e).__name__}: {e})") from None
            if isinstance(obj, bytes):
                obj = obj.decode("utf-8")
            cases = json.loads(obj) if isinstance(obj, str) else obj
    if not isinstance(cases, list) or not all(
            isinstance(c, dict) and isinstance(c.get("input"), str) and isinstance(c.get("output"), str)
            for c in cases):
        raise ValueError("test cases must be a list of {input: str, output: str}")
    return cases


def func_name(problem: dict) -> str | None:
    meta = problem.get("metadata") or {}
    if isinstance(meta, str):
        try:
            meta = json.loads(meta) if meta.strip() else {}
        except json.JSONDecodeError:
            raise ValueError("metadata is not JSON") from None
    return (meta or {}).get("func_name") or None


@dataclass
class ProblemTests:
    inputs: list[str]
    outputs: list[str]
    fn_name: str | None  # set: functional (LeetCode-style) problem; None: stdin/stdout

    def to_json(self) -> dict:
        return {"inputs": self.inputs, "outputs": self.outputs, "fn_name": self.fn_name}


def problem_tests(problem: dict) -> ProblemTests:
    """Public then private tests, as lcb_runner orders them; a functional problem's inputs (one JSON value per
    line) and outputs must be JSON, so that a bad row fails here, not as every sample's runtime error."""
    cases = []
    for field in ("public_test_cases", "private_test_cases"):
        try:
            cases += decode_test_cases(problem[field])
        except ValueError as e:
            raise ValueError(f"{field}: {e}") from None
    if not cases:
        raise ValueError("the problem has no test cases")
    tests = ProblemTests([c["input"] for c in cases], [c["output"] for c in cases], func_name(problem))
    if tests.fn_name:
        for i, (inp, out) in enumerate(zip(tests.inputs, tests.outputs)):
            for what, text in [*((f"input line {j}", line) for j, line in enumerate(inp.split("\n"))),
                               ("output", out)]:
                try:
                    json.loads(text, parse_int=len)  # the value is not needed: no int-size limit, no cost
                except (ValueError, RecursionError):
                    raise ValueError(f"test {i}: the {what} of a functional problem is not JSON") from None
    return tests
