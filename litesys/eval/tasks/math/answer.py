"""Which final answer a response committed to (docs/eval_math.md, "Final-answer policy").

A *commitment* is a ``\\boxed{}``/``\\fbox{}`` (source ``box``), a GSM8K ``####`` line (``marker``) or a
"final answer is ..." / "the answer is ..." / "Answer: ..." phrase (``statement``). The answer region is the
text after the last ``</think>``, else the whole response.

* A finished response takes its last box (a chain of boxes joined by list words counts as one answer), else its
  last marker, else its last statement, else math-verify's search of the region's tail (``tail``).
* A *cut* response (finish reason ``length``/``repetition``, or a ``<think>`` that never closed) takes only a
  commitment: with a closed ``</think>`` any commitment after it, else one that ends the reasoning; without one,
  only a commitment that ends the response (at most ``AFTER_COMMIT_CHARS`` of plain words after it, none of them
  reopening the question).
  Otherwise the answer is missing: reason ``no_final_answer``.
* A final answer that offers different candidates ("either 3 or 5", ``\\boxed{3} or \\boxed{5}``) is
  ``hedged`` when the gold is one value; when the gold lists several values the candidates are its parts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

CUT_REASONS = ("length", "repetition")  # the engine stopped the sample; the model did not finish
AFTER_COMMIT_CHARS = 200
VALUE_CHARS = 200  # the longest value an answer phrase can introduce
MAX_CANDIDATES = 8  # more alternatives than this are a hedge without comparing their values
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*")
_STATEMENT_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|(?<![\w])answer)(?:\s+to\s+the\s+(?:problem|question))?\**"
    r"\s*(?:is|:|=|would\s+be|will\s+be)\s*:?\s*\**\s*(?:that\s+)?|final\s+answer\**\s*:?\s*\**\s*\n+\s*", re.I)
# Words after a commitment that show the reasoning went on (the answer was a step, not the end).
_REOPEN_RE = re.compile(r"\b(?:wait|but|however|hmm|actually|check|verify|recheck|re-examine|let\s+me|let's|"
                        r"alternatively|no,|mistake|suppose|assume|if)\b|[\d=+^\\$]", re.I)
_OR_SPLIT = re.compile(r"\s*(?:\\(?:text|mbox|textrm|mathrm)\{\s*or\s*\}|\\lor\b|(?<![\w\\])or(?![\w]))\s*")
_AND_SPLIT = re.compile(r"\s*(?:\\(?:text|mbox|textrm|mathrm)\{\s*and\s*\}|(?<![\w\\])and(?![\w])|(?<!\\);)\s*")
_TRAILING_WORDS = re.compile(r",?(?:\s+[A-Za-z]+\b[.,]?)+\s*$")
_EITHER = re.compile(r"^\s*(?:\\text\{\s*either\s*\}|either)\s*", re.I)
# Text between two boxes of one answer: list punctuation, "and", spacing, "x =" labels.
_LIST_GAP = re.compile(r"(?:[\s,;.&$]|\\[,;:! ]|\\quad|\\qquad|\\\\|\\text\{\s*(?:and|,)\s*\}|\band\b|"
                       r"\\?[a-zA-Z](?:_\{?\d+\}?)?\s*=)*", re.I)
_OR_GAP = re.compile(r"[\s,;.$(]*(?:\\text\{\s*)?(?:either|or|maybe|possibly|perhaps)\b"
                     r"(?!.*\b(?:wait|actually|no|sorry|correct\w*)\b).{0,40}", re.I | re.S)


@dataclass
class Found:
    """The final answer of a response: ``text`` is what is handed to math-verify (None: no answer)."""

    text: str | None
    source: str  # box | marker | statement | tail | none
    reason: str | None = None  # no_final_answer | hedged | None
    parts: list[str] = field(default_factory=list)  # the candidates when several were offered
    cut: bool = False


@dataclass
class _Commit:
    start: int
    end: int
    text: str
    source: str
    parts: list[str]
    joiner: str  # "" (one value), "and" (a list), "or" (alternatives)


def boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every closed ``\\boxed{...}``/``\\fbox{...}`` (nested braces) or ``\\boxed 5``."""
    out = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{" and text[j - 1] != "\\":
                    depth += 1
                elif text[j] == "}" and text[j - 1] != "\\":
                    depth -= 1
                    if depth == 0:
                        out.append((m.start(), j + 1, text[i + 1:j].strip()))
                        break
                j += 1
            continue  # an unclosed box (cut by the length limit) is no answer
        tok = re.match(r"[^\s$]+", text[i:])
        if tok:
            out.append((m.start(), i + tok.end(), tok.group(0).rstrip(".,")))
    return out


def _split(text: str) -> tuple[list[str], str]:
    body = _EITHER.sub("", text)
    for joiner, rx in (("or", _OR_SPLIT), ("and", _AND_SPLIT)):
        parts = [p.strip(" ,.$") for p in rx.split(body)]
        if len(parts) > 1 and all(parts):
            return parts, joiner
    return [text], ""


def _box_commits(text: str) -> list[_Commit]:
    """Boxes, with a run of boxes separated only by list or "or" words merged into one commitment."""
    commits: list[_Commit] = []
    for start, end, content in boxes(text):
        parts, joiner = _split(content)
        prev = commits[-1] if commits else None
        kind = None
        if prev is not None and start - prev.end <= 60:
            gap = text[prev.end:start]
            kind = "and" if _LIST_GAP.fullmatch(gap) else "or" if _OR_GAP.fullmatch(gap) else None
        if prev is not None and kind and prev.joiner in ("", kind) and joiner in ("", kind):
            commits[-1] = _Commit(prev.start, end, content, "box", prev.parts + parts, kind)
        else:
            commits.append(_Commit(start, end, content, "box", parts, joiner))
    return commits


def _marker_commits(text: str) -> list[_Commit]:
    out = []
    for m in re.finditer(r"####[ \t]*([^\n]*)", text):
        ans = m.group(1).strip()
        if ans:
            parts, joiner = _split(ans)
            out.append(_Commit(m.start(), m.end(), ans, "marker", parts, joiner))
    return out


def _statement_value(text: str, i: int) -> tuple[str, int] | None:
    """The value right after an answer phrase: a ``$...$``/``\\(...\\)`` span, else the rest of the sentence."""
    rest = text[i:i + 2 * VALUE_CHARS]  # a value is short: never scan the rest of a long response
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(open_):
            j = rest.find(close, len(open_))
            if len(open_) < j <= VALUE_CHARS:
                val, end = rest[len(open_):j], j + len(close)
                tail = re.match(r"[^\n]*?(?=[.!?](?:\s|$)|\n|$)", rest[end:])
                after = tail.group(0) if tail else ""
                if re.match(r"\s*(?:\\text\{\s*)?(?:or|and)\b", after):  # "$3$ or $5$": keep the whole list
                    val, end = val + " " + after.replace("$", " "), end + len(after)
                return val.strip(), i + end
            return None
    m = re.match(r"[^\n]*?(?=[.!?](?:\s|$)|\n|$)", rest)
    val = m.group(0).strip().strip("*").strip() if m else ""
    if not val or len(val) > VALUE_CHARS or not re.search(r"[\dA-Za-z\\]", val):
        return None  # a whole paragraph after "the answer is" is prose, not a value
    return val, i + m.end()


def _statement_commits(text: str) -> list[_Commit]:
    out = []
    for m in _STATEMENT_RE.finditer(text):
        found = _statement_value(text, m.end())
        if found is None or "\\boxed" in found[0]:
            continue  # a boxed value is already a box commitment
        val = found[0].replace("$", " ").strip()
        bare = _TRAILING_WORDS.sub("", val)  # "13/15, in lowest terms" -> "13/15"; a text answer stays
        val = bare if re.search(r"[\d\\]", bare) else val
        parts, joiner = _split(val)
        out.append(_Commit(m.start(), found[1], val, "statement", parts, joiner))
    return out


def _reopens(after: str) -> bool:
    """Does the text after a commitment go on reasoning (so the commitment was a step, not the end)?"""
    after = re.sub(r"\\(?:boxed|fbox)\s*\{[^}]*$", "", after)  # a box the cut left unclosed
    after = re.sub(r"\\?\$|\\\]|\\\)|[*_#>\s]+|</?think>|\\end\{\w+\}", " ", after).strip()
    after = re.sub(r"(?i)\bI hope it is correct\b\.?", "", after).strip()
    return len(after) > AFTER_COMMIT_CHARS or bool(_REOPEN_RE.search(after))


def _pick(region: str, cut: bool, closed: bool) -> _Commit | None:
    kinds = (_box_commits(region), _marker_commits(region), _statement_commits(region))
    if cut and not closed:  # only a commitment that ends the response
        last = max((c for k in kinds for c in k), key=lambda c: c.end, default=None)
        if last is None or _reopens(region[last.end:]):
            return None
        # a statement or marker the cut may have stopped mid-value ("the answer is 4|2") is no commitment
        return last if last.source == "box" or last.end < len(region) else None
    for k in kinds:
        if k:
            return k[-1]
    return None


def is_cut(response: str, finish_reason: str | None) -> bool:
    """True when the model did not finish: stopped by the length limit or the repetition check, or the last
    ``<think>`` has no ``</think>`` after it."""
    opened, closed = response.rfind("<think>"), response.rfind("</think>")
    return finish_reason in CUT_REASONS or opened > closed


def final_answer(response: str, finish_reason: str | None = None, gold_parts: int = 1) -> Found:
    """The response's committed final answer under the policy above (``tail``: the caller searches the tail)."""
    cut = is_cut(response, finish_reason)
    close = response.rfind("</think>")
    closed = close >= 0 and close > response.rfind("<think>")
    region = response[close + len("</think>"):] if closed else response
    commit = _pick(region, cut, closed)
    if commit is None and cut and closed:  # cut while writing the answer: the reasoning's own last word counts
        commit = _pick(response[:close], cut, False)
    if commit is None:
        return Found(None, "tail", None, [], cut) if not cut else Found(None, "none", "no_final_answer", [], cut)
    distinct = list(dict.fromkeys(_canon(p) for p in commit.parts))
    if len(distinct) > 1:
        if gold_parts > 1:
            return Found(", ".join(commit.parts), commit.source, None, commit.parts, cut)
        return Found(None, commit.source, "hedged", commit.parts, cut)
    return Found(commit.parts[0] if commit.joiner else commit.text, commit.source, None, commit.parts, cut)


def _canon(part: str) -> str:
    part = re.sub(r"\\(?:left|right|displaystyle|[,!;: ])|[\s$]", "", part)
    part = re.sub(r"^\\?[a-zA-Z](?:_\{?\d+\}?)?=", "", part)  # "x = 3" and "3" are one candidate
    return part.rstrip(".")
