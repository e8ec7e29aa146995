"""pass@k against hand-computed values, maj@k voting, summaries and the budget curve."""
from __future__ import annotations

from fractions import Fraction

import pytest

from litesys.eval.metrics import (
    bootstrap_pass_at_k,
    budget_curve,
    default_budgets,
    ks_up_to,
    majority_correct,
    mean_pass_at_k,
    pareto_frontier,
    pass_at_k,
    summarize,
)

# n = 4 samples, c correct: pass@k = 1 - C(4-c, k) / C(4, k), worked out by hand.
HAND = {  # (c, k): value
    (0, 1): 0, (0, 2): 0, (0, 4): 0,
    (1, 1): Fraction(1, 4), (1, 2): Fraction(1, 2), (1, 4): 1,  # 1 - 3/6
    (2, 1): Fraction(1, 2), (2, 2): Fraction(5, 6), (2, 4): 1,  # 1 - 1/6
    (3, 1): Fraction(3, 4), (3, 2): 1, (3, 4): 1,
    (4, 1): 1, (4, 2): 1, (4, 4): 1,
    (1, 3): Fraction(3, 4), (2, 3): 1, (0, 3): 0,  # 1 - C(3,3)/C(4,3) = 3/4
}


@pytest.mark.parametrize("c,k", sorted(HAND))
def test_pass_at_k_matches_closed_form(c, k):
    assert pass_at_k(4, c, k) == pytest.approx(float(HAND[(c, k)]), abs=1e-12)


def test_pass_at_k_rejects_bad_counts():
    for n, c, k in ((4, 5, 1), (4, 2, 0), (4, 2, 5), (4, -1, 1)):
        with pytest.raises(ValueError, match="pass@k needs"):
            pass_at_k(n, c, k)


def test_ks_and_budgets():
    assert ks_up_to(1) == [1] and ks_up_to(6) == [1, 2, 3, 4, 5, 6]  # every k, pass@6 of 6 trials included
    assert default_budgets(4096) == [64, 128, 256, 512, 1024, 2048, 4096]
    assert default_budgets(3000) == [64, 128, 256, 512, 1024, 2048, 3000]
    assert default_budgets(64) == [8, 16, 32, 64]  # --gen_len <= 64: still a curve, not one point
    assert default_budgets(20) == [2, 4, 8, 16, 20] and default_budgets(1) == [1]


def _rec(pid, trial, correct, key=None, tokens=10):
    return {"problem_id": pid, "trial": trial, "correct": correct, "answer_key": key, "num_tokens": tokens}


def test_majority_vote_uses_answers_not_correctness():
    # two samples say 7 (wrong), one says 5 (right): the vote picks 7
    assert not majority_correct([_rec("a", 0, False, "7"), _rec("a", 1, True, "5"), _rec("a", 2, False, "7")])
    # no answer abstains: 5 wins over nothing
    assert majority_correct([_rec("a", 0, False, None), _rec("a", 1, True, "5"), _rec("a", 2, False, None)])
    # a tie goes to the earliest trial's answer
    assert majority_correct([_rec("a", 0, True, "5"), _rec("a", 1, False, "7")])
    assert not majority_correct([_rec("a", 0, False, "7"), _rec("a", 1, True, "5")])
    assert not majority_correct([_rec("a", 0, False, None)])


def test_summary_over_problems():
    recs = ([_rec("p", t, c, k) for t, (c, k) in enumerate([(True, "1"), (False, "2"), (False, "2"), (True, "1")])]
            + [_rec("q", t, False, "9") for t in range(4)]
            + [_rec("r", t, True, "3") for t in range(4)])
    s = summarize(recs, trials=4)
    assert s["samples"] == 12 and s["problems"] == 3
    assert s["pass@1"] == pytest.approx(6 / 12)
    assert s["pass@k"]["pass@2"] == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert s["pass@k"]["pass@4"] == pytest.approx((1 + 0 + 1) / 3)
    # maj@k votes over the first k trials: p has 1 (trial 0) -> right; maj@2: 1 vs 2 tie -> trial 0 -> right;
    # maj@3: 1,2,2 -> "2" -> wrong; maj@4: 1,2,2,1 tie -> trial 0's "1" -> right
    assert s["pass@k"]["pass@3"] == pytest.approx((1 + 0 + 1) / 3)  # p: 1 - C(2,3)/C(4,3) = 1
    assert s["maj@k"] == {"maj@1": pytest.approx(2 / 3), "maj@2": pytest.approx(2 / 3),
                          "maj@3": pytest.approx(1 / 3), "maj@4": pytest.approx(2 / 3)}
    assert s["per_problem"] == {"p": {"correct": 2, "samples": 4}, "q": {"correct": 0, "samples": 4},
                                "r": {"correct": 4, "samples": 4}}


def test_summary_with_uneven_trials_uses_eligible_problems_only():
    recs = [_rec("p", 0, True), _rec("p", 1, False), _rec("q", 0, False)]
    s = summarize(recs, trials=2)
    assert s["pass@1"] == pytest.approx(1 / 3)
    assert s["pass@k"]["pass@2"] == pytest.approx(1.0)  # only p has 2 samples


def test_budget_curve_counts_long_samples_as_cut():
    recs = [_rec("p", 0, True, tokens=100), _rec("p", 1, True, tokens=1000), _rec("q", 0, False, tokens=50),
            _rec("q", 1, True, tokens=4000)]
    assert budget_curve(recs, [64, 128, 1024, 4096]) == [(64, 0.0), (128, 0.25), (1024, 0.5), (4096, 0.75)]
    assert budget_curve([], [64]) == [(64, 0.0)]


def test_mean_pass_at_k_matches_hand_values_and_skips_short_problems():
    # problems with (n, c) = (4, 1), (4, 2), (2, 2): pass@2 = (1/2 + 5/6 + 1) / 3; pass@3 skips the n=2 problem
    n, c = [4, 4, 2], [1, 2, 2]
    assert mean_pass_at_k(n, c, 2) == pytest.approx((1 / 2 + 5 / 6 + 1) / 3)
    assert mean_pass_at_k(n, c, 3) == pytest.approx((3 / 4 + 1) / 2)
    assert mean_pass_at_k([1], [0], 2) != mean_pass_at_k([1], [0], 2)  # nan: no problem has 2 samples


def test_bootstrap_band_holds_the_estimate_and_collapses_when_certain():
    n, c = [8] * 40, [i % 9 for i in range(40)]
    est = mean_pass_at_k(n, c, 1)
    lo, hi = bootstrap_pass_at_k(n, c, 1, reps=2000, seed=1)
    assert lo < est < hi and 0.05 < hi - lo < 0.4
    assert bootstrap_pass_at_k(n, c, 1, reps=2000, seed=1) == (lo, hi)  # deterministic
    assert bootstrap_pass_at_k([4, 4], [0, 0], 2) == (0.0, 0.0)  # all wrong: no spread
    assert bootstrap_pass_at_k([4, 4], [4, 4], 1) == (1.0, 1.0)
    # more problems -> a narrower band (the band is over problems)
    lo2, hi2 = bootstrap_pass_at_k(n * 9, c * 9, 1, reps=2000, seed=1)
    assert hi2 - lo2 < (hi - lo) * 0.6


def test_pareto_frontier_by_hand():
    pts = [(1.0, 0.2), (2.0, 0.1), (2.0, 0.5), (3.0, 0.5), (4.0, 0.7), (0.5, 0.0), (5.0, 0.6)]
    # (2, 0.1) is beaten by (1, 0.2); (3, 0.5) costs more than (2, 0.5) for the same accuracy; (5, .6) < (4, .7)
    assert pareto_frontier(pts) == [5, 0, 2, 4]
