"""Grading a run with both math graders (``--compare-graders``): per-sample grades, scores, disagreements.

A sample graded by both carries ``grades = {"litesys": {...}, "math-verify": {...}}`` (each: correct, extracted,
answer_key, source, reason, status); the run's ``correct``/``extracted``/... fields are those of ``--grader``.
The summary gets each grader's pass@1/pass@k/maj@k and the number of samples they disagree on; the samples
themselves, with the reason, go to ``grader_disagreements.jsonl``.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

DISAGREEMENTS = "grader_disagreements.jsonl"
OUTPUT_TAIL_CHARS = 600  # enough of the response to see its final answer without the whole reasoning


def grade_fields(value: tuple | None, status: str) -> dict:
    """One grader's outcome as record fields (``value``: ``math.grade_item``'s tuple, None when not ok)."""
    correct, extracted, key, source, reason = value if value is not None else (False, None, None, "none", None)
    return {"correct": bool(correct), "extracted": extracted, "answer_key": key, "source": source,
            "reason": reason, "status": status}


def grading_counts(records: list[dict]) -> dict:
    """How the run's grader found (or missed) each answer: sources and reasons, for the summary."""
    return {"answer_sources": dict(sorted(Counter(r.get("answer_source", "none") for r in records).items())),
            "no_final_answer": sum(r.get("reason") == "no_final_answer" for r in records),
            "hedged": sum(r.get("reason") == "hedged" for r in records)}


def grader_scores(records: list[dict], trials: int, graders: Iterable[str]) -> dict:
    """Each grader's pass@1, pass@k and maj@k over the records' ``grades``, plus the disagreement count."""
    from litesys.eval.metrics import summarize

    out: dict = {}
    for g in graders:
        view = [{"problem_id": r["problem_id"], "trial": r["trial"], **r["grades"][g]} for r in records]
        s = summarize(view, trials)
        out[g] = {"pass@1": s["pass@1"], "pass@k": s["pass@k"], "maj@k": s["maj@k"],
                  "no_final_answer": sum(v["reason"] == "no_final_answer" for v in view),
                  "hedged": sum(v["reason"] == "hedged" for v in view)}
    out["disagreements"] = sum(1 for r in records if disagree(r))
    out["disagreement_file"] = DISAGREEMENTS
    return out


def disagree(record: dict) -> bool:
    grades = record.get("grades") or {}
    return len({bool(v["correct"]) for v in grades.values()}) > 1


def why(record: dict) -> str:
    """One line saying why the graders differ on this sample."""
    grades = record["grades"]
    right = next(g for g, v in grades.items() if v["correct"])
    wrong = next(g for g, v in grades.items() if not v["correct"])
    r, w = grades[right], grades[wrong]
    took = f"{right} took {r['extracted']!r} ({r['source']}) and finds it equal to the gold {record['answer']!r}"
    if w["status"] != "ok":
        return f"{wrong} failed to grade ({w['status']}); {took}"
    if w["reason"] == "no_final_answer":
        cut = record.get("finish_reason") in ("length", "repetition")
        how = f"the response was cut ({record.get('finish_reason')})" if cut else "the response"
        return f"{wrong}: no final answer - {how} committed none after its reasoning; {took}"
    if w["reason"] == "hedged":
        return f"{wrong}: hedged - the final answer offers several candidates; {took}"
    if w["extracted"] == r["extracted"]:
        return (f"same answer {w['extracted']!r}: {wrong} reads it as {w['answer_key']!r}, not equal to the gold; "
                f"{right} reads it as {r['answer_key']!r}")
    return f"different answers: {wrong} took {w['extracted']!r} ({w['source']}); {took}"


def write_disagreements(records: Iterable[dict], path: Path) -> int:
    """Write the disagreeing samples (id, gold, finish reason, both grades, why, the output's tail) atomically."""
    tmp = path.with_suffix(".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            if not disagree(rec):
                continue
            out = rec.get("output") or ""
            line = {"problem_id": rec["problem_id"], "trial": rec["trial"], "answer": rec["answer"],
                    "finish_reason": rec.get("finish_reason"), "why": why(rec), "grades": rec["grades"],
                    "output_tail": out[-OUTPUT_TAIL_CHARS:]}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
