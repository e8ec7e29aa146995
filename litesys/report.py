"""Tables and the pass@1-vs-generation-budget plot of finished eval runs.

    python -m litesys.report OUTPUT_DIR [OUTPUT_DIR ...] [--budgets 1024,2048,4096] [--png FILE] [--no-plot]

Works on any eval output folder whose samples carry ``correct`` and ``num_tokens`` (math, code, ...).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from litesys.eval.metrics import budget_curve, default_budgets, summarize

PNG = "pass1_vs_budget.png"


def format_table(summary: dict) -> str:
    """The summary as an aligned two-column table."""
    rows = [("task", str(summary.get("task", "?"))), ("model", str(summary.get("model", "?"))),
            ("samples", f"{summary['samples']} ({summary['problems']} problems x {summary.get('trials', '?')} trials)"
             + ("" if summary.get("complete", True) else f", expected {summary.get('expected_samples')}")),
            ("pass@1", f"{summary['pass@1']:.4f}")]
    rows += [(k, f"{v:.4f}") for k, v in summary.get("pass@k", {}).items() if k != "pass@1"]
    rows += [(k, f"{v:.4f}") for k, v in summary.get("maj@k", {}).items()]
    if "mean_tokens" in summary:
        rows.append(("mean tokens", f"{summary['mean_tokens']:.1f}"))
    if summary.get("finish_reasons"):
        rows.append(("finish reasons", ", ".join(f"{k} {v}" for k, v in summary["finish_reasons"].items())))
    if "grading" in summary:
        rows.append(("grading", ", ".join(f"{k} {v}" for k, v in summary["grading"].items())))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def format_curve(curves: dict[str, list[tuple[int, float]]]) -> str:
    names = list(curves)
    budgets = [b for b, _ in curves[names[0]]]
    lines = ["budget  " + "  ".join(names)]
    for i, b in enumerate(budgets):
        lines.append(f"{b:>6}  " + "  ".join(f"{curves[n][i][1]:.4f}".rjust(len(n)) for n in names))
    return "\n".join(lines)


def load_run(folder: Path) -> tuple[list[dict], dict]:
    from litesys.eval.runner import RUN_CONFIG, read_samples

    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; pass an eval --output_dir")
    records = read_samples(folder)
    if not records:
        raise ValueError(f"{folder} holds no samples; run an eval with --output_dir {folder} first")
    if any("correct" not in r or "num_tokens" not in r for r in records):
        raise ValueError(f"{folder} has samples without correct/num_tokens; it is not a graded eval output")
    cfg_path = folder / RUN_CONFIG
    config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    return records, config


def plot(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in curves.items():
        ax.plot([b for b, _ in pts], [a for _, a in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("generation budget (tokens)")
    ax.set_ylabel("pass@1")
    ax.set_title("pass@1 had generation been cut at each budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m litesys.report", description=__doc__.split("\n")[0])
    p.add_argument("output_dirs", nargs="+", type=Path)
    p.add_argument("--budgets", default=None, help="comma-separated token budgets (default: powers of two)")
    p.add_argument("--png", type=Path, default=None, help=f"plot path (default FIRST_DIR/{PNG})")
    p.add_argument("--no-plot", action="store_true", help="print the tables only")
    args = p.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"python -m litesys.report: error: {msg}", file=sys.stderr)
        return 2

    try:
        runs = {str(d): load_run(d) for d in args.output_dirs}
        budgets = [int(b) for b in args.budgets.split(",")] if args.budgets else None
    except ValueError as e:
        return fail(str(e))
    if budgets is not None and (not budgets or min(budgets) < 1):
        return fail("--budgets needs positive integers, e.g. 1024,2048,4096")
    if budgets is None:
        top = max(c.get("gen_len") or max(r["num_tokens"] for r in recs) for recs, c in runs.values())
        budgets = default_budgets(top)
    curves = {}
    for name, (records, config) in runs.items():
        s = summarize(records, max(r["trial"] for r in records) + 1)
        s.update(task=config.get("task"), model=config.get("model"), trials=max(r["trial"] for r in records) + 1)
        print(f"== {name}\n{format_table(s)}\n")
        curves[name] = budget_curve(records, budgets)
    print(format_curve(curves))
    if args.no_plot:
        return 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return fail("no PNG written: matplotlib is not installed; pip install matplotlib (or pass --no-plot)")
    png = args.png or args.output_dirs[0] / PNG
    plot(curves, png)
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
