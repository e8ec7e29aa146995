"""The report's numbers: accuracy of a run at every (trials k, budget) point with its 95% band and its cost per
problem (modelled eFLOPs, measured GPU-seconds), the Pareto frontier over points, and the runs' short labels."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from litesys.eval.metrics import bootstrap_pass_at_k, ks_up_to, mean_pass_at_k, pareto_frontier
from litesys.eval.report_runs import Run

BOOTSTRAP = 1000


@dataclass
class Point:
    """Accuracy of one run at (k trials, budget tokens), with its 95% band and its cost per problem."""

    run: str
    k: int
    budget: int
    accuracy: float
    lo: float
    hi: float
    eflops: float | None  # modelled, per problem (k samples)
    gpu_s: float | None  # measured, per problem (the run's GPU-seconds shared out by modelled cost)


# ---------------------------------------------------------------- labels


def tokens_label(n: int) -> str:
    """1024 -> 1K, 1536 -> 1.5K, 32768 -> 32K, 500 -> 500."""
    if n >= 1024 and n % 512 == 0:
        v = n / 1024
        return f"{v:g}K"
    return str(n)


def method_label(sparse: dict | None) -> str:
    if not sparse:
        return "dense"
    s = sparse
    if s.get("quest_topk_blocks") is not None:
        return f"quest {s['quest_topk_blocks']}x{s.get('quest_block_size') or 16}"
    if s.get("attn_custom"):
        return str(s["attn_custom"])
    for key, name in (("attn_topk", "topk"), ("attn_random_select", "random"), ("attn_random_nsample", "rand-is"),
                      ("attn_nsample", "oracle-sample"), ("attn_oracle_topp", "oracle-topp")):
        if s.get(key) is not None:
            return f"{name} {s[key]}"
    if s.get("attn_block_topk") is not None:
        name = "stride" if s.get("attn_stride") else "block_topk"
        return f"{name} {s['attn_block_topk']}x{s.get('attn_block_size', 16)}"
    if s.get("attn_local") is not None:
        return f"local {s['attn_local']}"
    return "sparse"


def _short_model(model: str) -> str:
    return Path(model.rstrip("/")).name or model


def assign_labels(runs: list[Run]) -> None:
    """model + task + method from each run config; made unique by budget, trials, dtype, then folder name."""
    base = [f"{_short_model(r.model)} {r.task} {method_label(r.config.get('sparse'))}" for r in runs]
    extras = [
        lambda r: tokens_label(r.gen_len) if r.gen_len else "",
        lambda r: f"x{r.trials}",
        lambda r: str(r.config.get("dtype") or ""),
        lambda r: r.path.name,
    ]
    labels = base
    for extra in extras:
        if len(set(labels)) == len(labels):
            break
        dup = {x for x in labels if labels.count(x) > 1}
        labels = [f"{lab} {extra(r)}".strip() if lab in dup else lab for lab, r in zip(labels, runs)]
    for r, lab in zip(runs, labels):
        r.label = lab


# ---------------------------------------------------------------- accuracy and cost per (k, budget)


def run_budgets(run: Run, budgets: list[int]) -> list[int]:
    """The budgets that truncate this run (below its own generation budget), plus that budget."""
    lengths = [s["num_tokens"] for s in run.samples if s["num_tokens"] is not None]
    top = run.gen_len or (max(lengths) if lengths else None)
    if top is None:
        return [max(budgets)] if budgets else []
    return sorted({b for b in budgets if b < top} | {top})


def per_problem(run: Run) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for s in run.samples:
        groups.setdefault(s["problem_id"], []).append(s)
    return groups


def _sample_cost(run: Run, s: dict, budget: int) -> float | None:
    if run.cost_model is None or s["num_tokens"] is None or s["prompt_tokens"] is None:
        return None
    return run.cost_model.sample(s["prompt_tokens"], min(s["num_tokens"], budget)).eflops


def _gpu_rate(run: Run) -> tuple[float | None, str]:
    """Measured GPU-seconds per unit of sample weight (modelled eFLOPs, else generated tokens)."""
    gpu_s, made = run.timing.get("gpu_s"), run.timing.get("samples_generated")
    if not gpu_s or not made:
        return None, ""
    full = [_sample_cost(run, s, s["num_tokens"] or 0) for s in run.samples]
    if all(c is not None for c in full) and full:
        weight = "eflops"
    else:
        full = [float((s["prompt_tokens"] or 0) + (s["num_tokens"] or 0)) for s in run.samples]
        weight = "tokens"
    mean = sum(full) / len(full) if full else 0.0
    return (gpu_s / (mean * made), weight) if mean > 0 else (None, "")


def run_points(run: Run, budgets: list[int], ks: list[int] | None = None, reps: int = BOOTSTRAP) -> list[Point]:
    """Every (k, budget) point of a run. Cost per problem at (k, b) = k x the problem's mean sample cost at b,
    averaged over the problems that have k samples (the ones pass@k averages over)."""
    groups = list(per_problem(run).values())
    n = [len(g) for g in groups]
    ks = ks or ks_up_to(max(n))
    rate, weight = _gpu_rate(run)
    points = []
    for b in run_budgets(run, budgets):
        c = [sum(s["correct"] and (s["num_tokens"] is None or s["num_tokens"] <= b) for s in g) for g in groups]
        costs = [[_sample_cost(run, s, b) for s in g] for g in groups]
        mean_cost = [None if any(x is None for x in cs) else sum(cs) / len(cs) for cs in costs]
        if weight == "tokens":
            mean_w = [sum((s["prompt_tokens"] or 0) + min(s["num_tokens"] or 0, b) for s in g) / len(g)
                      for g in groups]
        else:
            mean_w = mean_cost
        for k in ks:
            elig = [i for i, m in enumerate(n) if m >= k]
            if not elig:
                continue
            acc = mean_pass_at_k(n, c, k)
            lo, hi = bootstrap_pass_at_k(n, c, k, reps=reps, seed=k * 100003 + b)
            ef = None if any(mean_cost[i] is None for i in elig) else k * sum(mean_cost[i] for i in elig) / len(elig)
            gs = None
            if rate is not None and all(mean_w[i] is not None for i in elig):
                gs = rate * k * sum(mean_w[i] for i in elig) / len(elig)
            points.append(Point(run.label, k, b, acc, lo, hi, ef, gs))
    return points


def frontier(points: list[Point], cost: str) -> list[Point]:
    """The Pareto frontier (lowest cost for its accuracy) over all points that have this cost."""
    have = [p for p in points if getattr(p, cost) is not None]
    return [have[i] for i in pareto_frontier([(getattr(p, cost), p.accuracy) for p in have])]
