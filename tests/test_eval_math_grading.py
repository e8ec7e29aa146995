"""Math grading: hand-written equivalences and the hard per-item timeout (the real gold solutions and the
final-answer policy: tests/test_eval_math_policy.py)."""
from __future__ import annotations

import os
import signal
import time

import pytest

from litesys.eval.pool import GradePool
from litesys.eval.tasks.math.grade import GRADE_ITEM, PRELOAD, grade, grade_detail, last_boxed

EQUIVALENT = [  # (task, response, gold)
    ("math500", "so the answer is $\\boxed{0.5}$", "\\frac{1}{2}"),  # decimal vs fraction
    ("math500", "$\\boxed{\\frac{3}{4}}$", "0.75"),  # fraction vs decimal
    ("math500", "$\\boxed{\\dfrac{3}{4}}$", "\\frac34"),  # \dfrac vs \frac
    ("math500", "\\boxed{[2, 5)}", "[2,5)"),  # half-open interval
    ("math500", "\\boxed{(-\\infty, 3]}", "(-\\infty,3]"),
    ("math500", "\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)"),  # tuple
    ("math500", "\\boxed{\\text{Evelyn}}", "\\text{Evelyn}"),  # text answer
    ("math500", "\\boxed{\\text{(C)}}", "\\text{(C)}"),
    ("math500", "\\boxed{90^\\circ}", "90"),  # degrees
    ("math500", "\\boxed{90}", "90^\\circ"),
    ("gsm8k", "She pays \\boxed{\\$1,000}.", "1000"),  # dollar sign and thousands separator
    ("gsm8k", "The answer is $\\boxed{1{,}000}$", "1000"),
    ("gsm8k", "The total is \\$18.", "18"),  # no box: the final expression
    ("math500", "\\boxed{25\\%}", "25\\%"),  # percentages
    ("gsm8k", "\\boxed{25\\%}", "25"),
    ("math500", "\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{\\sqrt{2}}{2}"),  # nested braces inside the box
    ("math500", "\\boxed{\\left\\{1, \\frac{2}{3}\\right\\}}", "\\{\\frac23, 1\\}"),
    ("math500", "first \\boxed{3}, on second thought \\boxed{5}", "5"),  # several boxes: the last counts
    ("aime24", "<think>maybe \\boxed{12}</think> so \\boxed{073}", "73"),  # after </think>; leading zero
    ("aime24", "measuring gives $CE = \\boxed{104.}$", "104"),  # sentence period inside the box
    ("math500", "\\boxed{x^2+2x+1}", "(x+1)^2"),  # symbolic equality
    ("math500", "\\boxed{10\\text{ cm}}", "10"),  # units
    ("gsm8k", "so she makes 9 * 2 = 18 dollars\n#### 18", "18"),  # the GSM8K answer marker
]

DIFFERENT = [
    ("math500", "\\boxed{0.6}", "\\frac12"),
    ("math500", "\\boxed{\\dfrac{3}{5}}", "\\frac34"),
    ("math500", "\\boxed{[2,5]}", "[2,5)"),
    ("math500", "\\boxed{(3,\\frac{\\pi}{3})}", "(3,\\frac{\\pi}{2})"),
    ("math500", "\\boxed{\\text{Bob}}", "\\text{Evelyn}"),
    ("math500", "\\boxed{91^\\circ}", "90"),
    ("gsm8k", "\\boxed{\\$1,001}", "1000"),
    ("math500", "\\boxed{26\\%}", "25\\%"),
    ("math500", "\\boxed{\\frac{1}{\\sqrt{3}}}", "\\frac{\\sqrt{2}}{2}"),
    ("math500", "first \\boxed{5}, on second thought \\boxed{3}", "5"),
    ("aime24", "<think>\\boxed{73}</think> so \\boxed{74}", "73"),
    ("math500", "\\boxed{x^2+2x}", "(x+1)^2"),
    ("math500", "I do not know.", "5"),
]


@pytest.mark.parametrize("task,response,gold", EQUIVALENT)
def test_equivalent_forms_grade_correct(task, response, gold):
    assert grade(task, response, gold), grade_detail(task, response, gold)


@pytest.mark.parametrize("task,response,gold", DIFFERENT)
def test_different_values_grade_wrong(task, response, gold):
    assert not grade(task, response, gold), grade_detail(task, response, gold)


def test_last_boxed_matches_nested_braces():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{a}{b^{2}}} c") == "\\frac{a}{b^{2}}"
    assert last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"
    assert last_boxed("\\boxed 7.") == "7"
    assert last_boxed("\\boxed{5} then cut \\boxed{\\frac{1}{") == "5"  # an unclosed last box is skipped
    assert last_boxed("no box") is None


def hang_without_signals(*_args):
    """A grade stuck where no SIGALRM reaches it (as sympy can be in C code)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(3600)


def crash(*_args):
    os._exit(3)


def test_pathological_expression_times_out_and_the_rest_is_graded():
    """A tower of powers keeps sympy busy for seconds; the pool stops it at 2 s and goes on."""
    jobs = [("aime24", "\\boxed{9^{9^{9}}}", "5"), ("aime24", "\\boxed{5}", "5"), ("aime24", "\\boxed{6}", "5")]
    t0 = time.monotonic()
    with GradePool(GRADE_ITEM, workers=1, timeout=2, preload=PRELOAD) as pool:
        out = pool.map(jobs)
        assert pool.stats["timeout"] == 1
    assert time.monotonic() - t0 < 15
    assert out[0].status == "timeout"
    assert [o.status for o in out[1:]] == ["ok", "ok"]
    assert out[1].value[0] is True and out[2].value[0] is False


def test_hang_without_signals_and_crash_are_contained():
    fn = f"{__name__}:hang_without_signals"
    with GradePool(fn, workers=2, timeout=1, preload=()) as pool:
        t0 = time.monotonic()
        out = pool.map([(i,) for i in range(3)])
        assert [o.status for o in out] == ["timeout"] * 3
        assert time.monotonic() - t0 < 10
    with GradePool(f"{__name__}:crash", workers=1, timeout=5, preload=()) as pool:
        out = pool.map([(1,), (2,)])
        assert [o.status for o in out] == ["crash", "crash"] and pool.stats["crash"] == 2


def test_grader_records_timeouts_as_wrong_and_the_summary_counts_them():
    """MathGrader (the runner's record processor) marks a timed-out sample wrong, says why, and goes on."""
    from argparse import Namespace

    from litesys.eval.tasks.math.main import MathGrader, summarize_run

    g = MathGrader("aime24", timeout=2, workers=1)
    try:
        recs = g([{"output": "\\boxed{9^{9^{9}}}", "answer": "5"}, {"output": "\\boxed{5}", "answer": "5"}])
    finally:
        g.close()
    assert recs[0]["correct"] is False and recs[0]["grade_status"].startswith("timeout")
    assert recs[1]["correct"] is True and recs[1]["grade_status"] == "ok" and recs[1]["answer_key"] == "5"
    for i, r in enumerate(recs):
        r.update(problem_id=f"p{i}", trial=0, num_tokens=3, finish_reason="stop")
    args = Namespace(task="aime24", trial=1, limit=None, grader="litesys", compare_graders=False)
    s = summarize_run(recs, args, {"model": "m"}, n_problems=2)
    assert s["grading"]["timeouts"] == 1 and s["pass@1"] == 0.5 and s["complete"]


def test_both_graders_keep_the_per_item_time_limit():
    """--compare-graders: each (sample, grader) has its own limit; a timeout marks that grade wrong and says so."""
    from litesys.eval.tasks.math.main import MathGrader

    g = MathGrader("aime24", timeout=2, workers=1, graders=("litesys", "math-verify"))
    try:
        recs = g([{"output": "\\boxed{9^{9^{9}}}", "answer": "5"}, {"output": "\\boxed{5}", "answer": "5"}])
    finally:
        g.close()
    slow, fast = recs
    assert slow["correct"] is False and slow["grade_status"].startswith("timeout")
    assert all(v["status"].startswith("timeout") and v["correct"] is False for v in slow["grades"].values())
    assert fast["grades"]["litesys"]["correct"] and fast["grades"]["math-verify"]["correct"]
    assert fast["grades"]["litesys"]["status"] == "ok" and fast["answer_source"] == "box"
