"""Math answer extraction and grading with math-verify.

The prediction is the response's final answer: the last ``\\boxed{}`` (after ``</think>`` when the model
thought), else math-verify's own search of the response's tail (answer anchors, then the final expression).
The gold is parsed as a plain expression for integer-answer tasks and as LaTeX for MATH.

``grade``/``grade_detail`` run in the calling process. math-verify's own timeouts use SIGALRM, which only
works in a main thread, and sympy can hang in C code that no signal interrupts: long runs grade through
``GradePool`` (litesys/eval/grader_pool.py), which kills an item that overruns and marks it wrong.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

# gold_format per task: "expr" for integer answers, "latex" for MATH-style answers, "auto" tries both.
GOLD_FORMATS = {"aime24": "expr", "aime25": "expr", "amc23": "expr", "gsm8k": "expr", "math500": "latex"}
TAIL_CHARS = 2000  # the fallback search only looks at the response's tail: the final answer is there
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_BOLD_RE = re.compile(r"\\(?:textbf|mathbf|bf)\s*\{([^{}]*)\}")  # bold is formatting, not a text answer


@dataclass
class Graded:
    correct: bool
    extracted: str | None  # the answer text found in the response (None: no answer found)
    key: str | None  # canonical form of the parsed answer, for majority voting


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox``) with nested braces, or of ``\\boxed 5``."""
    for m in reversed(list(_BOX_RE.finditer(text))):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{" and text[j - 1] != "\\":
                    depth += 1
                elif text[j] == "}" and text[j - 1] != "\\":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1:j].strip()
                j += 1
            continue  # unclosed box (e.g. cut by the length limit): try an earlier one
        tok = re.match(r"[^\s$]+", text[i:])
        if tok:
            return tok.group(0).rstrip(".,")
    return None


def clean_answer(ans: str) -> str:
    """Formatting that math-verify misreads: bold wrappers and a sentence's final period (``\\boxed{104.}``)."""
    ans = _BOLD_RE.sub(r"\1", ans).strip()
    return re.sub(r"(?<=\d)\s*[.,;:]$", "", ans).strip()


def after_marker(text: str) -> str | None:
    """The GSM8K convention: the answer is the rest of the line after the last ``####``."""
    idx = text.rfind("####")
    if idx < 0:
        return None
    ans = text[idx + 4:].strip().split("\n", 1)[0].strip()
    return ans or None


def final_part(response: str) -> str:
    """The part that holds the final answer: after the last ``</think>`` when the model thought."""
    idx = response.rfind("</think>")
    return response[idx + len("</think>"):] if idx >= 0 else response


def gold_format(task: str) -> str:
    return GOLD_FORMATS.get(task, "auto")


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


def _parse_pred(response: str, timeout: int | None) -> tuple[list, str | None]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = final_part(response)
    found = last_boxed(text)
    if found is None:
        found = after_marker(text)
    if found is not None:
        configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
        return parse("\\boxed{" + clean_answer(found) + "}", configs, parsing_timeout=timeout), found
    tail = text[-TAIL_CHARS:].replace("\\$", "")  # an escaped currency sign hides the number from math-verify
    parsed = parse(tail, [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=timeout)
    extracted = parsed[-1] if parsed and isinstance(parsed[-1], str) else (str(parsed[0]) if parsed else None)
    return parsed, extracted


def grade_detail(task: str, response: str, gold: str) -> Graded:
    """Grade ``response`` against ``gold`` for ``task`` and say which answer was found."""
    from math_verify import verify

    t = _timeouts()
    pred, extracted = _parse_pred(response, t["parse"])
    if not pred:
        return Graded(False, extracted, None)
    gold_parsed = _parse_gold(gold, gold_format(task), t["parse"])
    if not gold_parsed:
        raise ValueError(f"cannot parse the gold answer {gold!r} of task {task!r}")
    correct = bool(verify(gold_parsed, pred, timeout_seconds=t["verify"]))
    key = str(pred[0]) if not isinstance(pred[0], str) else pred[0].strip()
    return Graded(correct, extracted, key)


def grade(task: str, response: str, gold: str) -> bool:
    """True when the final answer of ``response`` equals ``gold`` (math-verify equivalence)."""
    return grade_detail(task, response, gold).correct


def grade_item(task: str, response: str, gold: str) -> tuple[bool, str | None, str | None]:
    """Pool entry point (plain tuple: cheap to send between processes)."""
    g = grade_detail(task, response, gold)
    return g.correct, g.extracted, g.key
