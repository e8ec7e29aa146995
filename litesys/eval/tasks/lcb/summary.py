"""LiveCodeBench scores from verdict rows: pass@k per I/O mode, the problems where the modes differ, bad data.

Rows are grade_lcb.py's verdict lines (docs/eval_lcb.md): ``key`` (the sample), ``io``, ``question_id``,
``difficulty``, ``verdict``, ``passed``, ... Rows with verdict ``bad_test_data`` are never scored: they are
counted apart. The headline numbers (top-level ``all``/``by_difficulty``) are lcb_runner's when graded.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from litesys.eval.tasks.lcb.judge import BAD_TEST_DATA

HEADLINE_IO = "lcb_runner"


def summarize(records: list[dict], ks: list[int] | None = None) -> dict:
    """pass@1 and unbiased pass@k over problems (each problem weighs the same), overall and per difficulty.

    ``records`` need ``question_id``, ``difficulty`` and ``passed``. pass@k averages the problems with at
    least k samples; default ks: 1, 2, 4, ... up to the most samples any problem has.
    """
    from litesys.eval.metrics import ks_up_to, pass_at_k

    per: dict[str, list] = {}
    for r in records:
        e = per.setdefault(r["question_id"], [r.get("difficulty") or "unknown", 0, 0])
        e[1] += 1
        e[2] += bool(r["passed"])
    most = max((n for _, n, _ in per.values()), default=0)
    ks = sorted(set(ks or ks_up_to(most)))

    def block(items: list) -> dict:
        out: dict = {"problems": len(items), "samples": sum(n for _, n, _ in items)}
        for k in ks:
            eligible = [(n, c) for _, n, c in items if n >= k]
            if eligible:
                out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in eligible) / len(eligible)
        return out

    groups = defaultdict(list)
    for e in per.values():
        groups[e[0]].append(e)
    order = [d for d in ("easy", "medium", "hard") if d in groups] + sorted(set(groups) - {"easy", "medium", "hard"})
    return {"all": block(list(per.values())), "by_difficulty": {d: block(groups[d]) for d in order},
            "verdicts": dict(Counter(r["verdict"] for r in records).most_common())}


def io_differences(by_io: dict[str, list[dict]]) -> list[dict]:
    """Problems on which the I/O modes disagree on at least one sample: per mode, samples passed; and the samples."""
    if len(by_io) < 2:
        return []
    modes = list(by_io)
    verdict = {m: {r["key"]: r for r in rows} for m, rows in by_io.items()}
    common = set.intersection(*(set(v) for v in verdict.values()))
    per_q: dict[str, dict] = {}
    for key in sorted(common):
        rows = {m: verdict[m][key] for m in modes}
        first = rows[modes[0]]
        e = per_q.setdefault(first["question_id"], {"question_id": first["question_id"],
                                                    "difficulty": first.get("difficulty"),
                                                    **{m: {"passed": 0, "samples": 0} for m in modes},
                                                    "samples": []})
        for m in modes:
            e[m]["samples"] += 1
            e[m]["passed"] += bool(rows[m]["passed"])
        if len({bool(r["passed"]) for r in rows.values()}) > 1:
            e["samples"].append({"source": first.get("source"), "line": first.get("line"),
                                 "trial": first.get("trial"), **{m: rows[m]["verdict"] for m in modes}})
    return [e for e in per_q.values() if e["samples"]]


def summarize_all(rows: list[dict], ks: list[int] | None = None) -> dict:
    """The full summary: headline mode's blocks at the top level, every mode under ``io``, differences, bad data."""
    by_io: dict[str, list[dict]] = {}
    bad: dict[tuple, dict] = {}
    for r in rows:
        if r["verdict"] == BAD_TEST_DATA:
            bad.setdefault((r.get("source"), r.get("line")), r)
            continue
        by_io.setdefault(r.get("io") or HEADLINE_IO, []).append(r)
    modes = sorted(by_io, key=lambda m: (m != HEADLINE_IO, m))
    per_io = {m: summarize(by_io[m], ks) for m in modes}
    headline = modes[0] if modes else HEADLINE_IO
    empty = summarize([], ks)
    bad_rows = [{"question_id": r.get("question_id"), "source": r.get("source"), "line": r.get("line"),
                 "detail": r.get("detail", "")} for r in bad.values()]
    return {**per_io.get(headline, empty), "headline_io": headline, "io": per_io,
            "io_differences": io_differences({m: by_io[m] for m in modes}),
            "bad_test_data": {"problems": len({r["question_id"] for r in bad_rows}), "samples": len(bad_rows),
                              "rows": bad_rows}}


def _shown(cols: list[str]) -> list[str]:
    """At most 1, 2, 4, 8, ... and the largest k on screen (the summary file has every k)."""
    ks = [int(c[5:]) for c in cols]
    return cols if len(cols) <= 8 else [c for c, k in zip(cols, ks) if k & (k - 1) == 0 or k == max(ks)]


def format_summary(summary: dict) -> str:
    cols = _shown([k for k in summary["all"] if k.startswith("pass@")])
    head = f"{'':<10}{'problems':>9}{'samples':>9}" + "".join(f"{c:>10}" for c in cols)
    rows = [head]
    for name, b in [("all", summary["all"]), *summary["by_difficulty"].items()]:
        cells = "".join(f"{100 * b[c]:>9.2f}%" if c in b else f"{'-':>10}" for c in cols)
        rows.append(f"{name:<10}{b['problems']:>9}{b['samples']:>9}{cells}")
    rows.append("verdicts: " + ", ".join(f"{k} {v}" for k, v in summary["verdicts"].items()))
    return "\n".join(rows)


def format_all(summary: dict, listed: int = 20) -> str:
    """Every mode's table (headline first), then the problems where the modes differ, then bad test data."""
    out = []
    for mode, block in summary["io"].items():
        tag = " (headline)" if mode == summary["headline_io"] and len(summary["io"]) > 1 else ""
        out += [f"--io {mode}{tag}:", format_summary(block)]
    diffs = summary["io_differences"]
    if len(summary["io"]) > 1:
        modes = list(summary["io"])
        out.append(f"I/O modes differ on {len(diffs)} problem(s)" + (":" if diffs else ""))
        for e in diffs[:listed]:
            counts = ", ".join(f"{m} {e[m]['passed']}/{e[m]['samples']}" for m in modes)
            s = e["samples"][0]
            why = " vs ".join(f"{m}: {s[m]}" for m in modes)
            out.append(f"  {e['question_id']}: passed {counts} (e.g. trial {s.get('trial')}: {why})")
        if len(diffs) > listed:
            out.append(f"  ... {len(diffs) - listed} more in the summary file")
    bad = summary["bad_test_data"]
    if bad["samples"]:
        qids = ", ".join(str(r["question_id"]) for r in bad["rows"][:listed])
        out.append(f"bad test data (not scored): {bad['problems']} problem(s), {bad['samples']} sample(s): {qids}")
    return "\n".join(out)
