"""Compare eval runs: accuracy tables, pass@1 vs generation budget, accuracy vs cost with the Pareto frontier.

    python -m litesys.report RUN [RUN ...] [--budgets 1024,2048,4096] [--arith-intensity I | --gpu NAME]
                             [--png FILE] [--cost-png FILE] [--json FILE] [--no-plot] [--allow-mixed-tasks]

A RUN is a math eval folder (graded samples), an eval_lcb.py folder (its grade_lcb.py verdicts found beside it)
or a verdict file. Budget sweeps truncate the recorded samples (a sample counts only if it finished within the
budget, and costs what it would have cost cut there); trial sweeps use the unbiased pass@k for every k up to
the trial count. Bands are 95% bootstrap intervals over problems and trials. docs/report.md, docs/cost.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from litesys.eval.cost import GPUS, resolve_intensity
from litesys.eval.metrics import default_budgets, mean_pass_at_k
from litesys.eval.report_points import BOOTSTRAP, Point, assign_labels, frontier, per_problem, run_points, tokens_label
from litesys.eval.report_runs import ReportError, Run, load_run

PNG = "pass1_vs_budget.png"
COST_PNG = "accuracy_vs_cost.png"


# ---------------------------------------------------------------- tables


def format_table(summary: dict) -> str:
    """An eval summary (summary.json) as an aligned two-column table."""
    rows = [("task", str(summary.get("task", "?"))), ("model", str(summary.get("model", "?"))),
            ("samples", f"{summary['samples']} ({summary['problems']} problems x {summary.get('trials', '?')} trials)"
             + ("" if summary.get("complete", True) else f", INCOMPLETE: expected {summary.get('expected_samples')}")),
            ("pass@1", f"{summary['pass@1']:.4f}")]
    rows += [(k, f"{v:.4f}") for k, v in summary.get("pass@k", {}).items() if k != "pass@1"]
    rows += [(k, f"{v:.4f}") for k, v in summary.get("maj@k", {}).items()]
    if "mean_tokens" in summary:
        rows.append(("mean tokens", f"{summary['mean_tokens']:.1f}"))
    if summary.get("finish_reasons"):
        rows.append(("finish reasons", ", ".join(f"{k} {v}" for k, v in summary["finish_reasons"].items())))
    if "grading" in summary:
        rows.append(("grading", ", ".join(f"{k} {v}" for k, v in summary["grading"].items())))
    for name, g in (summary.get("graders") or {}).items():
        if isinstance(g, dict):  # --compare-graders: each grader's scores
            rows.append((f"grader {name}", ", ".join(f"{k} {v:.4f}" for k, v in g["pass@k"].items())))
    if "disagreements" in (summary.get("graders") or {}):
        rows.append(("graders disagree", f"{summary['graders']['disagreements']} samples"))
    t = (summary.get("run_info") or {}).get("timing") or {}
    if t:
        rows.append(("time", f"{t['wall_s']:.1f} s wall, {t['gpu_s']:.1f} GPU-s, {t.get('tok_s') or 0:.0f} tok/s "
                             f"({', '.join(t.get('gpus', []))})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _fmt_cost(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:.3g}{unit}"


def runs_table(runs: list[Run], points: dict[str, list[Point]]) -> str:
    rows = []
    for r in runs:
        top = [p for p in points[r.label] if p.k == 1 and p.budget == max(q.budget for q in points[r.label])]
        p1 = top[0] if top else None
        lengths = [s["num_tokens"] for s in r.samples if s["num_tokens"] is not None]
        reasons = Counter(str(s["finish_reason"]) for s in r.samples if s["finish_reason"] is not None)
        flag = "" if r.complete else f"INCOMPLETE {len(r.samples)}/{r.expected}"
        rows.append([r.label, f"{len(r.samples)}/{r.expected}", flag or "ok",
                     f"{p1.accuracy:.4f} [{p1.lo:.3f}, {p1.hi:.3f}]" if p1 else "-",
                     f"{sum(lengths) / len(lengths):.0f}" if lengths else "-",
                     ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "-",
                     _fmt_cost(p1.eflops if p1 else None), _fmt_cost(p1.gpu_s if p1 else None)])
    return _grid(["run", "samples", "status", "pass@1 [95% CI]", "mean len", "finish reasons", "eFLOPs/problem",
                  "GPU-s/problem"], rows)


def passk_table(runs: list[Run], points: dict[str, list[Point]]) -> str:
    top = {r.label: max(p.budget for p in points[r.label]) for r in runs if points[r.label]}
    ks = sorted({p.k for r in runs for p in points[r.label]})
    rows = []
    for k in ks:
        row = [f"pass@{k}"]
        for r in runs:
            hit = [p for p in points[r.label] if p.k == k and p.budget == top.get(r.label)]
            row.append(f"{hit[0].accuracy:.4f}" if hit else "-")
        rows.append(row)
    return _grid(["k"] + [r.label for r in runs], rows)


def budget_table(runs: list[Run], points: dict[str, list[Point]]) -> str:
    budgets = sorted({p.budget for r in runs for p in points[r.label]})
    rows = []
    for b in budgets:
        row = [tokens_label(b)]
        for r in runs:
            hit = [p for p in points[r.label] if p.k == 1 and p.budget == b]
            row.append(f"{hit[0].accuracy:.4f} [{hit[0].lo:.3f}, {hit[0].hi:.3f}]" if hit else "-")
        rows.append(row)
    return _grid(["budget"] + [f"pass@1 {r.label}" for r in runs], rows)


def graders_table(runs: list[Run]) -> str | None:
    """Each grader's pass@1 and pass@k (k = the trials) for the runs graded by both (eval_math.py
    --compare-graders) and the samples they disagree on; None when no run was."""
    rows = []
    for r in runs:
        names = sorted({g for s in r.samples for g in s.get("grades", {})})
        if not names or any(sorted(s.get("grades", {})) != names for s in r.samples):
            continue
        groups = list(per_problem(r).values())
        n, k = [len(g) for g in groups], r.trials
        for name in names:
            c = [sum(s["grades"][name] for s in g) for g in groups]
            rows.append([r.label, name, f"{mean_pass_at_k(n, c, 1):.4f}", f"{mean_pass_at_k(n, c, k):.4f}", ""])
        differ = sum(len(set(s["grades"].values())) > 1 for s in r.samples)
        rows[-1][-1] = f"{differ} of {len(r.samples)} samples"
    return _grid(["run", "grader", "pass@1", "pass@k (k = trials)", "disagree"], rows) if rows else None


def frontier_table(front: list[Point], cost: str) -> str:
    unit = {"eflops": "eFLOPs/problem", "gpu_s": "GPU-s/problem"}[cost]
    rows = [[p.run, str(p.k), tokens_label(p.budget), f"{p.accuracy:.4f}", _fmt_cost(getattr(p, cost))]
            for p in front]
    return _grid(["run", "k", "budget", "accuracy", unit], rows)


# ---------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m litesys.report", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="eval output folder, eval_lcb.py folder, or grade_lcb.py verdict file")
    p.add_argument("--budgets", default=None, help="comma-separated token budgets (default: powers of two)")
    p.add_argument("--arith-intensity", "--arith_intensity", dest="arith_intensity", type=float, default=None,
                   help="FLOPs per byte for eFLOPs = FLOPs + I x bytes (default: the run's GPU, docs/cost.md)")
    p.add_argument("--gpu", default=None, help=f"take I from this GPU of the table ({', '.join(GPUS)})")
    p.add_argument("--png", type=Path, default=None, help=f"pass@1-vs-budget plot (default FIRST_RUN/{PNG})")
    p.add_argument("--cost-png", "--cost_png", dest="cost_png", type=Path, default=None,
                   help=f"accuracy-vs-cost plot (default FIRST_RUN/{COST_PNG})")
    p.add_argument("--json", type=Path, default=None, help="also write every point and both frontiers as JSON")
    p.add_argument("--bootstrap", type=int, default=BOOTSTRAP, help=f"bootstrap resamples (default {BOOTSTRAP})")
    p.add_argument("--no-plot", "--no_plot", dest="no_plot", action="store_true", help="print the tables only")
    p.add_argument("--allow-mixed-tasks", "--allow_mixed_tasks", dest="allow_mixed_tasks", action="store_true",
                   help="compare runs of different tasks (their accuracies do not share a scale)")
    return p


def _parse_budgets(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        budgets = sorted({int(b) for b in text.split(",") if b.strip()})
    except ValueError:
        budgets = []
    if not budgets or budgets[0] < 1:
        raise ReportError(f"--budgets needs comma-separated positive integers, e.g. 1024,2048,4096; got {text!r}")
    return budgets


def load_runs(args: argparse.Namespace) -> tuple[list[Run], list[int]]:
    """Every check that can fail on input, before anything is computed or written."""
    budgets = _parse_budgets(args.budgets)
    if args.bootstrap < 1:
        raise ReportError(f"--bootstrap must be >= 1, got {args.bootstrap}")
    try:
        resolved = resolve_intensity(args.arith_intensity, args.gpu)
    except ValueError as e:
        raise ReportError(str(e)) from None
    intensity = None if resolved is None else resolved[0]
    for flag, path in (("--png", args.png), ("--cost-png", args.cost_png), ("--json", args.json)):
        if path is not None and not path.parent.is_dir():
            raise ReportError(f"{flag} {path}: the folder {path.parent} does not exist; create it or pass another path")
    runs = [load_run(p, intensity) for p in args.runs]
    tasks = {r.task for r in runs}
    if len(tasks) > 1 and not args.allow_mixed_tasks:
        kinds = ", ".join(f"{r.path} ({r.task})" for r in runs)
        raise ReportError(f"the runs are of different tasks ({kinds}); compare one task at a time or pass "
                          "--allow-mixed-tasks")
    if budgets is None:
        tops = [r.gen_len or max((s["num_tokens"] or 1) for s in r.samples) for r in runs]
        budgets = default_budgets(max(tops))
    assign_labels(runs)
    return runs, budgets


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def fail(msg: str) -> int:
        print(f"python -m litesys.report: error: {msg}", file=sys.stderr)
        return 2

    try:
        runs, budgets = load_runs(args)
    except (ReportError, ValueError) as e:
        return fail(str(e))
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return fail("matplotlib is not installed: pip install matplotlib (or pass --no-plot)")
    points = {r.label: run_points(r, budgets, reps=args.bootstrap) for r in runs}
    everything = [p for r in runs for p in points[r.label]]
    fronts = {c: frontier(everything, c) for c in ("eflops", "gpu_s")}
    print(runs_table(runs, points), "", passk_table(runs, points), "", budget_table(runs, points), sep="\n")
    graders = graders_table(runs)
    if graders:
        print(f"\nscores by grader (--compare-graders):\n{graders}")
    for r in runs:
        for note in r.notes:
            print(f"note: {r.label}: {note}")
        if r.cost_model is None:
            print(f"note: {r.label}: no cost model (no cost_model.json and no local checkpoint config): no eFLOPs")
    for c, name in (("eflops", "modelled eFLOPs"), ("gpu_s", "measured GPU-seconds")):
        if fronts[c]:
            print(f"\nPareto frontier, accuracy vs {name} per problem:\n{frontier_table(fronts[c], c)}")
    if args.json:
        args.json.write_text(json.dumps({"points": [asdict(p) for p in everything],
                                         "frontier": {c: [asdict(p) for p in f] for c, f in fronts.items()}},
                                        indent=1) + "\n")
    if args.no_plot:
        return 0
    from litesys.eval.report_plot import plot_budget, plot_cost

    first = runs[0].path
    png, cost_png = args.png or first / PNG, args.cost_png or first / COST_PNG
    plot_budget(runs, points).savefig(png, dpi=120)
    print(f"plot: {png}")
    if any(p.eflops is not None or p.gpu_s is not None for p in everything):
        plot_cost(runs, points, fronts).savefig(cost_png, dpi=120)
        print(f"plot: {cost_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
