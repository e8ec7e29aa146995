"""Accuracy metrics over graded samples: pass@1, unbiased pass@k, maj@k, per-problem counts, budget curve,
bootstrap intervals and the Pareto frontier.

A sample record needs ``problem_id``, ``trial``, ``correct`` and (for maj@k) ``answer_key``; the budget
curve also needs ``num_tokens``.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from functools import lru_cache
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): 1 - C(n-c, k) / C(n, k) for n samples with c correct."""
    if not (0 <= c <= n) or not (1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def ks_up_to(trials: int) -> list[int]:
    """Every k = 1 .. trials (pass@6 of 6 trials too, not only powers of two)."""
    return list(range(1, trials + 1))


def by_problem(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped per problem, each group sorted by trial, the problems sorted too (so that sums over them do
    not depend on the order the shards hold the samples in)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["problem_id"]].append(r)
    return {pid: sorted(groups[pid], key=lambda r: r["trial"]) for pid in sorted(groups)}


def majority_correct(samples: list[dict]) -> bool:
    """Vote over the samples' answers (samples without an answer abstain); ties go to the earliest trial."""
    votes = Counter(s["answer_key"] for s in samples if s.get("answer_key") is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(s for s in samples if s.get("answer_key") is not None and votes[s["answer_key"]] == top)
    return bool(winner["correct"])


def summarize(records: list[dict], trials: int) -> dict:
    """pass@1 (mean over samples), pass@k and maj@k for every k = 1 .. trials, per-problem counts.

    pass@k averages over problems with at least k samples; maj@k votes over each problem's first k trials.
    """
    groups = by_problem(records)
    per_problem = {pid: {"correct": sum(bool(s["correct"]) for s in g), "samples": len(g)}
                   for pid, g in groups.items()}
    out: dict = {"problems": len(groups), "samples": len(records),
                 "pass@1": sum(bool(r["correct"]) for r in records) / len(records) if records else 0.0}
    pass_k, maj_k = {}, {}
    for k in ks_up_to(trials):
        eligible = [pid for pid, c in per_problem.items() if c["samples"] >= k]
        if not eligible:
            continue
        pass_k[f"pass@{k}"] = sum(pass_at_k(per_problem[p]["samples"], per_problem[p]["correct"], k)
                                  for p in eligible) / len(eligible)
        maj_k[f"maj@{k}"] = sum(majority_correct(groups[p][:k]) for p in eligible) / len(eligible)
    out["pass@k"] = pass_k
    out["maj@k"] = maj_k
    out["per_problem"] = dict(sorted(per_problem.items()))
    return out


def budget_curve(records: list[dict], budgets: list[int]) -> list[tuple[int, float]]:
    """pass@1 had generation been cut at each budget: a sample counts only if correct within that many tokens.

    A sample longer than the budget counts as wrong (cut before its final answer), so the curve is exact for
    answers given at the end, as reasoning models do.
    """
    if not records:
        return [(b, 0.0) for b in budgets]
    return [(b, sum(bool(r["correct"]) and r["num_tokens"] <= b for r in records) / len(records))
            for b in budgets]


def default_budgets(max_tokens: int) -> list[int]:
    """Powers of two from 64 up to ``max_tokens``, plus ``max_tokens`` itself; short budgets (<= 512) start at
    ``max_tokens // 8``, so that ``--gen_len 64`` still gives a curve (8, 16, 32, 64), not one point."""
    budgets, b = [], 64 if max_tokens > 512 else max(1, max_tokens // 8)
    while b < max_tokens:
        budgets.append(b)
        b *= 2
    return budgets + [max_tokens]


# ---------------------------------------------------------------- vectorised pass@k, bootstrap, Pareto frontier


@lru_cache(maxsize=256)
def pass_at_k_table(n_max: int, k: int):
    """``T[n, c]`` = unbiased pass@k of n samples with c correct (0 where n < k or c > n), as a numpy array
    (cached: do not write into it)."""
    import numpy as np

    t = np.zeros((n_max + 1, n_max + 1))
    for n in range(k, n_max + 1):
        for c in range(n + 1):
            t[n, c] = pass_at_k(n, c, k)
    return t


def mean_pass_at_k(n, c, k: int) -> float:
    """pass@k averaged over the problems with at least k samples (``n``, ``c``: per-problem arrays)."""
    import numpy as np

    n, c = np.asarray(n, dtype=int), np.asarray(c, dtype=int)
    ok = n >= k
    if not ok.any():
        return float("nan")
    return float(pass_at_k_table(int(n.max()), k)[n[ok], c[ok]].mean())


def bootstrap_pass_at_k(n, c, k: int, reps: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean_pass_at_k``: problems resampled with replacement and, inside
    each drawn problem, its n trials resampled with replacement (c* ~ Binomial(n, c / n)), so the band holds
    both the choice of problems and the trials' luck. Deterministic for a given ``seed``."""
    import numpy as np

    n, c = np.asarray(n, dtype=int), np.asarray(c, dtype=int)
    keep = n >= k
    n, c = n[keep], c[keep]
    if len(n) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(n), size=(reps, len(n)))
    nn = n[idx]
    cc = rng.binomial(nn, c[idx] / nn)
    vals = pass_at_k_table(int(n.max()), k)[nn, cc].mean(axis=1)
    lo, hi = np.quantile(vals, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def pareto_frontier(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, accuracy) points no other point beats: none costs at most as much with at least
    the accuracy (and is strictly better in one). Sorted by cost; ties in cost keep the most accurate once."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
