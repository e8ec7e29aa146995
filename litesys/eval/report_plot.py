"""The report's figures (matplotlib ``Figure`` objects, no pyplot state): pass@1 vs generation budget, and
accuracy vs modelled eFLOPs / measured GPU-seconds per problem with the Pareto frontier across runs."""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from litesys.eval.report_points import Point, tokens_label
from litesys.eval.report_runs import Run

FRONTIER_STYLE = dict(color="black", linewidth=1.6, marker="D", markersize=5, zorder=5, label="Pareto frontier")


def _title(runs: list[Run]) -> str:
    tasks = sorted({r.task for r in runs})
    models = sorted({r.label.split(" ")[0] for r in runs})
    return f"{' + '.join(tasks)} · {models[0] if len(models) == 1 else f'{len(models)} models'}"


def _label(r: Run) -> str:
    return r.label if r.complete else f"{r.label} [INCOMPLETE {len(r.samples)}/{r.expected}]"


def _style(r: Run) -> dict:
    return {} if r.complete else {"linestyle": "--"}  # incomplete runs are dashed (and flagged in the legend)


def plot_budget(runs: list[Run], points: dict[str, list[Point]]) -> Figure:
    """pass@1 had generation been cut at each budget, with 95% bootstrap bands; y fixed to [0, 1]."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    ticks = set()
    for r in runs:
        pts = sorted((p for p in points[r.label] if p.k == 1), key=lambda p: p.budget)
        x = [p.budget for p in pts]
        ticks.update(x)
        (line,) = ax.plot(x, [p.accuracy for p in pts], marker="o", label=_label(r), **_style(r))
        ax.fill_between(x, [p.lo for p in pts], [p.hi for p in pts], color=line.get_color(), alpha=0.15,
                        linewidth=0)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: tokens_label(int(round(v)))))
    if len(ticks) == 1:  # one budget: give the single point some room
        (b,) = ticks
        ax.set_xlim(b / 2, b * 2)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("generation budget (tokens)")
    ax.set_ylabel("pass@1")
    ax.set_title(f"{_title(runs)}: pass@1 had generation been cut at each budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _cost_axis(ax, runs: list[Run], points: dict[str, list[Point]], front: list[Point], cost: str,
               xlabel: str) -> None:
    drawn = False
    for r in runs:
        pts = [p for p in points[r.label] if getattr(p, cost) is not None]
        if not pts:
            continue
        drawn = True
        top_k = max(p.k for p in pts)
        color = None
        for k in sorted({1, top_k}):  # budget sweeps at pass@1 and pass@(all trials); every k is in the scatter
            line_pts = sorted((p for p in pts if p.k == k), key=lambda p: getattr(p, cost))
            x = [getattr(p, cost) for p in line_pts]
            (line,) = ax.plot(x, [p.accuracy for p in line_pts], marker="o" if k == 1 else "s", markersize=4,
                              color=color, alpha=1.0 if k == 1 else 0.7,
                              label=f"{_label(r)}, pass@{k}" if k == 1 or k == top_k else None, **_style(r))
            color = line.get_color()
            ax.fill_between(x, [p.lo for p in line_pts], [p.hi for p in line_pts], color=color, alpha=0.12,
                            linewidth=0)
        others = [p for p in pts if p.k not in (1, top_k)]
        if others:  # trial sweep: pass@k for every k at every budget
            ax.scatter([getattr(p, cost) for p in others], [p.accuracy for p in others], s=8, color=color, alpha=0.4)
    if front:
        ax.plot([getattr(p, cost) for p in front], [p.accuracy for p in front], drawstyle="steps-post",
                **FRONTIER_STYLE)
    if drawn:
        ax.set_xscale("log")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (pass@k)")
    ax.grid(alpha=0.3, which="both")
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no cost recorded for these runs", ha="center", va="center", transform=ax.transAxes)


def plot_cost(runs: list[Run], points: dict[str, list[Point]], fronts: dict[str, list[Point]]) -> Figure:
    """Two panels: accuracy vs modelled eFLOPs per problem, accuracy vs measured GPU-seconds per problem."""
    fig = Figure(figsize=(13, 5))
    ax_e, ax_g = fig.subplots(1, 2)
    _cost_axis(ax_e, runs, points, fronts.get("eflops", []), "eflops", "eFLOPs per problem (modelled, docs/cost.md)")
    _cost_axis(ax_g, runs, points, fronts.get("gpu_s", []), "gpu_s", "GPU-seconds per problem (measured)")
    fig.suptitle(f"{_title(runs)}: accuracy vs cost (k trials x budget; black: Pareto frontier)")
    fig.tight_layout()
    return fig
