"""Math grading: two graders over math-verify.

``litesys`` (the default) applies the final-answer policy (answer.py: a cut response needs a
committed answer, a hedged one is wrong), rewrites the answer's text into the LaTeX math-verify reads
(normalize.py), matches multiple-choice letters, and refuses a truncated decimal for a
non-terminating exact gold. ``math-verify`` is plain math-verify configured as lighteval does (closed
``<think>`` blocks removed, ``ExprExtractionConfig`` + ``LatexExtractionConfig`` on prediction and gold,
5-digit float rounding), for numbers comparable with published ones. docs/eval_math.md states the policy.

``grade``/``grade_detail`` run in the calling process. math-verify's own timeouts use SIGALRM, which only
works in a main thread, and sympy can hang in C code that no signal interrupts: long runs grade through
``GradePool`` (litesys/eval/pool.py), which kills an item that overruns and marks it wrong.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace

from litesys.eval.tasks.math.answer import MAX_CANDIDATES, boxes, final_answer
from litesys.eval.tasks.math.normalize import choice_letter, normalize, pred_choice

GRADERS = ("litesys", "math-verify")
# How GradePool (litesys/eval/pool.py) runs this module's grader in its worker processes.
GRADE_ITEM = f"{__name__}:grade_item"
PRELOAD = ("math_verify", __name__)
# gold_format per task: "expr" for integer answers, "latex" for MATH-style answers, "auto" tries both.
GOLD_FORMATS = {"aime24": "expr", "aime25": "expr", "amc23": "expr", "gsm8k": "expr", "math500": "latex"}
TAIL_CHARS = 2000  # the fallback search only looks at the response's tail: the final answer is there
_BOLD_RE = re.compile(r"\\(?:textbf|mathbf|bf)\s*\{([^{}]*)\}")  # bold is formatting, not a text answer
_DECIMAL_RE = re.compile(r"-?\d*\.\d+")
_THINK_RE = re.compile(r"<think>.*?</think>", re.S)


@dataclass
class Graded:
    correct: bool
    extracted: str | None  # the answer text found in the response (None: no answer found)
    key: str | None  # canonical form of the parsed answer, for majority voting
    source: str = "none"  # where the answer was found: box | marker | statement | tail | none
    reason: str | None = None  # why there is no answer: no_final_answer | hedged (None: an answer was found)

    def as_tuple(self) -> tuple:
        return self.correct, self.extracted, self.key, self.source, self.reason


def last_boxed(text: str) -> str | None:
    """Content of the last closed ``\\boxed{...}`` (or ``\\fbox``, or ``\\boxed 5``); an unclosed one is skipped."""
    found = boxes(text)
    return found[-1][2] if found else None


def clean_answer(ans: str) -> str:
    """Formatting that math-verify misreads: bold wrappers and a sentence's final period (``\\boxed{104.}``)."""
    ans = _BOLD_RE.sub(r"\1", ans).strip()
    return re.sub(r"(?<=\d)\s*[.,;:]$", "", ans).strip()


def final_part(response: str) -> str:
    """The part that holds the final answer: after the last ``</think>`` when the model thought."""
    idx = response.rfind("</think>")
    return response[idx + len("</think>"):] if idx >= 0 else response


def gold_format(task: str) -> str:
    return GOLD_FORMATS.get(task, "auto")


def gold_values(gold: str) -> int:
    """How many values the gold lists: top-level comma parts (inside ``\\{...\\}`` for a set), plus one per
    ``\\pm`` (``3, 5, 7`` -> 3, ``1 \\pm \\sqrt{19}`` -> 2, a tuple or interval -> 1)."""
    body = gold.strip()
    if body.startswith("\\{") and body.endswith("\\}"):
        body = body[2:-2]
    depth, parts = 0, 1
    for ch in body:
        depth += ch in "([{"
        depth -= ch in ")]}"
        parts += ch == "," and depth == 0
    return parts + body.count("\\pm")


def _timeouts() -> dict:
    # SIGALRM only works in the main thread; elsewhere the caller must bound the time (GradePool does).
    main = threading.current_thread() is threading.main_thread()
    return {"parse": 5 if main else None, "verify": 5 if main else None}


def _parse_gold(gold: str, fmt: str, timeout: int | None) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    gold = str(gold).strip()
    parsed: list = []
    if fmt in ("expr", "auto"):
        parsed = parse(gold.replace(",", ""), [ExprExtractionConfig()], parsing_timeout=timeout)
    if not parsed and fmt in ("latex", "auto", "expr"):
        text = gold if "\\boxed" in gold or gold.startswith("$") else f"${gold}$"
        parsed = parse(text, [LatexExtractionConfig(boxed_match_priority=0)], parsing_timeout=timeout)
    return parsed


def _parse_answer(text: str, timeout: int | None) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return parse("\\boxed{" + clean_answer(text) + "}", configs, parsing_timeout=timeout)


def _all_equal(parts: list[str], t: dict) -> bool:
    """Do the offered candidates all have one value (then the answer is not a hedge)?"""
    from math_verify import verify

    parsed = [_parse_answer(p, t["parse"]) for p in parts]
    return all(parsed) and all(verify(parsed[0], p, timeout_seconds=t["verify"]) for p in parsed[1:])


def _truncated_decimal(pred_text: str, gold_parsed: list) -> bool:
    """A finite decimal such as ``0.333`` against a gold whose exact value never terminates (``1/3``)."""
    import sympy

    if not _DECIMAL_RE.fullmatch(clean_answer(pred_text).replace(" ", "")):
        return False
    value = gold_parsed[0] if gold_parsed else None
    if not isinstance(value, sympy.Rational) or value.q == 1:
        return False
    q = int(value.q)
    for p in (2, 5):
        while q % p == 0:
            q //= p
    return q != 1


def _grade_litesys(task: str, response: str, gold: str, finish_reason: str | None) -> Graded:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    t = _timeouts()
    gold_text = normalize(str(gold).strip())
    n_values = gold_values(gold_text)
    scalar = n_values == 1 and not gold_text.startswith(("(", "[", "\\left", "\\{"))
    found = final_answer(response, finish_reason, n_values)
    candidates = [normalize(x, scalar) for x in found.parts]
    if found.reason == "hedged" and len(candidates) <= MAX_CANDIDATES and _all_equal(candidates, t):
        found = replace(found, text=found.parts[-1], reason=None)  # "15\frac{39}{40}, or \frac{639}{40}": one value
    letter = choice_letter(gold_text)
    if found.source == "tail":  # a finished response without a commitment: math-verify searches its tail
        tail = normalize(final_part(response)[-TAIL_CHARS:].replace("\\$", ""), scalar)
        pred = parse(tail, [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=t["parse"])
        extracted = pred[-1] if pred and isinstance(pred[-1], str) else (str(pred[0]) if pred else None)
        if not pred:
            return Graded(False, None, None, "none", "no_final_answer")
    elif found.text is None:
        return Graded(False, None, None, found.source, found.reason)
    else:
        extracted = found.text
        if letter is not None:  # multiple choice: the letter decides, with or without the option's text
            got = pred_choice(normalize(found.text, scalar))
            return Graded(got == letter, found.text, got or found.text.strip(), found.source)
        pred = _parse_answer(normalize(found.text, scalar), t["parse"])
        if not pred:
            return Graded(False, found.text, None, found.source)
    gold_parsed = _parse_gold(gold_text, gold_format(task), t["parse"])
    if not gold_parsed:
        raise ValueError(f"cannot parse the gold answer {gold!r} of task {task!r}")
    correct = bool(verify(gold_parsed, pred, timeout_seconds=t["verify"]))
    if correct and found.source != "tail" and _truncated_decimal(normalize(found.text, scalar), gold_parsed):
        correct = False
    key = str(pred[0]) if not isinstance(pred[0], str) else pred[0].strip()
    return Graded(correct, extracted, key, found.source)


def _grade_math_verify(task: str, response: str, gold: str) -> Graded:
    """Plain math-verify as lighteval runs it: reasoning blocks removed, the whole rest searched."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    t = _timeouts()
    text = _THINK_RE.sub("", response)
    configs = [ExprExtractionConfig(), LatexExtractionConfig(boxed_match_priority=0)]
    pred = parse(text, configs, fallback_mode="first_match", parsing_timeout=t["parse"])
    if not pred:
        return Graded(False, None, None, "none", "no_final_answer")
    gold = str(gold).strip()
    gold_text = f"${gold}$" if gold_format(task) == "latex" and not gold.startswith("$") else gold
    gold_parsed = parse(gold_text, [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=t["parse"])
    if not gold_parsed:
        raise ValueError(f"cannot parse the gold answer {gold!r} of task {task!r}")
    correct = bool(verify(gold_parsed, pred, float_rounding=5, timeout_seconds=t["verify"]))
    extracted = pred[-1] if isinstance(pred[-1], str) else str(pred[0])
    key = str(pred[0]) if not isinstance(pred[0], str) else pred[0].strip()
    return Graded(correct, extracted, key, "box" if boxes(text) else "tail")


def grade_detail(task: str, response: str, gold: str, finish_reason: str | None = None,
                 grader: str = "litesys") -> Graded:
    """Grade ``response`` against ``gold`` for ``task`` and say which answer was found, where, and why not.

    ``finish_reason``: the engine's (``stop``/``length``/``repetition``); a cut response needs a committed answer.
    """
    if grader == "litesys":
        return _grade_litesys(task, response, gold, finish_reason)
    if grader == "math-verify":
        return _grade_math_verify(task, response, gold)
    raise ValueError(f"unknown grader {grader!r}; choose one of {', '.join(GRADERS)}")


def grade(task: str, response: str, gold: str, finish_reason: str | None = None, grader: str = "litesys") -> bool:
    """True when the final answer of ``response`` equals ``gold`` (see ``grade_detail``)."""
    return grade_detail(task, response, gold, finish_reason, grader).correct


def grade_item(task: str, response: str, gold: str, finish_reason: str | None = None,
               grader: str = "litesys") -> tuple:
    """Pool entry point: (correct, extracted, key, source, reason), a plain tuple (cheap between processes)."""
    return grade_detail(task, response, gold, finish_reason, grader).as_tuple()
