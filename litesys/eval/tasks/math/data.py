"""Math tasks: where each one lives on the hub, how to read local copies, and the prompt templates."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from litesys.eval.fileio import DataError, read_rows

__all__ = ["DataError"]  # raised by the loaders below (defined with the file readers)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    hub_id: str
    hub_config: str | None
    split: str
    question_field: str
    answer_field: str


TASKS: dict[str, TaskSpec] = {
    "aime24": TaskSpec("aime24", "HuggingFaceH4/aime_2024", None, "train", "problem", "answer"),
    "aime25": TaskSpec("aime25", "math-ai/aime25", None, "test", "problem", "answer"),
    "amc23": TaskSpec("amc23", "math-ai/amc23", None, "test", "question", "answer"),
    "math500": TaskSpec("math500", "HuggingFaceH4/MATH-500", None, "test", "problem", "answer"),
    "gsm8k": TaskSpec("gsm8k", "openai/gsm8k", "main", "test", "question", "answer"),
}
CUSTOM = "custom"  # a local file plus --question-field/--answer-field
QUESTION_FALLBACKS = ("problem", "question")  # local copies name the question either way
ID_FIELDS = ("id", "unique_id", "problem_id")
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")

TEMPLATES = {
    # The original LiteSys prompt (lighteval's MATH prompt).
    "litesys": ("Solve the following math problem efficiently and clearly.  The last line of your response should "
                "be of the following format: 'Therefore, the final answer is: $\\boxed{{ANSWER}}$. I hope it is "
                "correct' (without quotes) where ANSWER is just the final number or expression that solves the "
                "problem. Think step by step before answering.\n\n{question}"),
    # Qwen's recommended math prompt.
    "qwen": "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
}


@dataclass
class Problem:
    id: str
    question: str
    answer: str


@dataclass
class Dataset:
    task: str
    problems: list[Problem]
    source: str  # hub id or local path, recorded in the run config
    fingerprint: str  # sha256 of the problems: a changed data file must not mix with old results


def build_prompt(template: str, question: str) -> list[dict]:
    """The chat conversation for one problem (the engine applies the model's chat template)."""
    if template not in TEMPLATES:
        raise DataError(f"unknown --prompt-template {template!r}; choose one of {', '.join(TEMPLATES)}")
    return [{"role": "user", "content": TEMPLATES[template].format(question=question)}]


def normalize_gold(task: str, answer) -> str:
    """Gold answer as text: GSM8K's hub answers are whole solutions ending in ``#### N``; AMC floats to ints."""
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    text = str(answer).strip()
    if task == "gsm8k" and "####" in text:
        text = text.rsplit("####", 1)[1].strip().replace(",", "")
    return text


def resolve_local(task: str, data_file: str | None, data_dir: str | None) -> Path | None:
    """The local file to read, or None to use the hub."""
    if data_file:
        path = Path(data_file)
        if not path.is_file():
            raise DataError(f"--data-file {data_file} does not exist; pass a JSONL or parquet file")
        return path
    if data_dir:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(f"--data-dir {data_dir} is not a directory")
        for suffix in LOCAL_SUFFIXES:
            if (folder / f"{task}{suffix}").is_file():
                return folder / f"{task}{suffix}"
        raise DataError(f"no {task}.jsonl or {task}.parquet in --data-dir {data_dir}; "
                        "pass --data-file or drop --data-dir to load from the hub")
    return None


def read_hub(spec: TaskSpec) -> list[dict]:
    try:
        import datasets
    except ImportError as e:
        raise DataError(f"loading {spec.hub_id} needs the datasets library: pip install datasets "
                        "(or pass --data-dir/--data-file with a local copy)") from e
    try:  # datasets caches the download; HF_DATASETS_OFFLINE=1 reads only that cache
        ds = datasets.load_dataset(spec.hub_id, spec.hub_config, split=spec.split)
    except Exception as e:  # noqa: BLE001 - offline, unknown revision, auth...: one line, not a traceback
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise DataError(f"could not load {spec.hub_id} from the hub ({type(e).__name__}: {first}); pass "
                        f"--data-dir/--data-file with a local copy of --task {spec.name}") from None
    return [dict(r) for r in ds]


def _pick(fields: list[str], explicit: str | None, candidates: tuple[str, ...], what: str, flag: str,
          where: str) -> str:
    options = (explicit,) if explicit else candidates
    for name in options:
        if name in fields:
            return name
    raise DataError(f"{where} has no {what} field {' or '.join(repr(o) for o in options)} "
                    f"(fields: {', '.join(fields)}); pass {flag}")


def load_task(task: str, data_file: str | None = None, data_dir: str | None = None,
              question_field: str | None = None, answer_field: str | None = None,
              limit: int | None = None) -> Dataset:
    """Problems of ``task`` from a local file (``data_file``/``data_dir``) or the hub; first ``limit`` only."""
    if task != CUSTOM and task not in TASKS:
        raise DataError(f"unknown --task {task!r}; choose one of {', '.join([*TASKS, CUSTOM])}")
    if task == CUSTOM and not data_file:
        raise DataError("--task custom needs --data-file (plus --question-field/--answer-field if not "
                        "'problem'/'answer')")
    spec = TASKS.get(task)
    path = resolve_local(task, data_file, data_dir)
    if path is not None:
        rows, source = read_rows(path), str(path.resolve())
    else:
        rows, source = read_hub(spec), f"hf:{spec.hub_id}" + (f"/{spec.hub_config}" if spec.hub_config else "")
    # hub revisions and local copies name the question either way
    q_candidates = tuple(dict.fromkeys(((spec.question_field,) if spec else ()) + QUESTION_FALLBACKS))
    a_candidates = (spec.answer_field,) if spec else ("answer",)
    if not rows:
        raise DataError(f"{source} holds no rows")
    fields = list(rows[0])
    q = _pick(fields, question_field, q_candidates, "question", "--question-field", source)
    a = _pick(fields, answer_field, a_candidates, "answer", "--answer-field", source)
    id_field = next((f for f in ID_FIELDS if f in fields), None)
    problems = []
    for i, row in enumerate(rows):
        if row.get(q) is None or row.get(a) is None:
            raise DataError(f"{source} row {i} has no {q!r} or {a!r} value; fix the file or pass other fields")
        pid = str(row[id_field]) if id_field and row.get(id_field) is not None else f"{task}-{i}"
        problems.append(Problem(pid, str(row[q]), normalize_gold(task, row[a])))
    if len({p.id for p in problems}) != len(problems):
        raise DataError(f"{source} has duplicate problem ids in field {id_field!r}; results are keyed by id")
    # Fingerprint of the whole file, so that a larger --limit later still resumes the same run.
    digest = hashlib.sha256(json.dumps([[p.id, p.question, p.answer] for p in problems]).encode()).hexdigest()
    return Dataset(task, problems[:limit] if limit else problems, source, digest[:16])
