"""Rewrites of an answer's text into LaTeX that math-verify reads as the value the writer meant.

Each rule is one regex pass that only fires on an unambiguous form: Unicode math symbols, thin spaces and
LaTeX spacing commands inside digit groups, thousands separators (only where the gold is a single value),
spaced percent and degree signs, repeating decimals (made exact fractions), plain ``a/b`` fractions and
multiple-choice letters. A truncated decimal is left as it is: ``0.333`` is not ``0.\\overline{3}``.
"""
from __future__ import annotations

import re
from fractions import Fraction

_SYMBOLS = {
    "\u2212": "-", "\ufe63": "-", "\uff0d": "-",  # minus signs (dashes: _DASH_MINUS)
    "\u00d7": " \\times ", "\u2715": " \\times ", "\u00b7": " \\cdot ", "\u22c5": " \\cdot ", "\u2219": " \\cdot ",
    "\u00f7": " \\div ", "\u2264": " \\le ", "\u2a7d": " \\le ", "\u2265": " \\ge ", "\u2a7e": " \\ge ",
    "\u2260": " \\ne ", "\u00b1": " \\pm ", "\u2213": " \\mp ", "\u221e": "\\infty ", "\u03c0": "\\pi ",
    "\u03b8": "\\theta ", "\u222a": " \\cup ", "\u2229": " \\cap ", "\u2208": " \\in ", "\u2192": " \\to ",
    "\u00bd": "\\frac{1}{2}", "\u2153": "\\frac{1}{3}", "\u2154": "\\frac{2}{3}", "\u00bc": "\\frac{1}{4}",
    "\u00be": "\\frac{3}{4}", "\ufeff": "",
}
_DASH_MINUS = re.compile(r"(?<![\w)}\]])[\u2012\u2013](?=\s*\d)")  # "–3" is minus 3; "3–5" stays a range
_SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺ⁿ", "0123456789-+n"))
_SUP_RE = re.compile(f"[{''.join(_SUPERSCRIPTS)}]+")
_ROOT_RE = re.compile(r"([√∛∜])\s*(\([^()]*\)|\{[^{}]*\}|\\?[A-Za-z]+|\d+(?:\.\d+)?)")
_ROOT_INDEX = {"√": "", "∛": "[3]", "∜": "[4]"}
_SPACES = "\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f"
# A space-like separator between digit groups: Unicode thin/narrow spaces, \, \! \; \: "\ " ~ and \thinspace.
_GROUP_SEP = rf"(?:[{_SPACES}]|\\[,!;: ]|~|\\thinspace\b\s*|\\hspace\{{[^{{}}]*\}})"
_SPACED_DIGITS = re.compile(rf"(?<=\d){_GROUP_SEP}+(?=\d{{3}}(?!\d))")
_COMMA_SPACING = re.compile(rf"(?<=\d),\s*{_GROUP_SEP}+\s*(?=\d)")  # MATH's 10,\!080
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:(?:,|\{,\})\d{3})+(?![\d,])")
_PERCENT = re.compile(r"(?<=\d)\s*(?:\\[ ,;!]\s*)*(?:\\%|%|\s*\bpercent\b|\\text\{\s*\\?%\s*\})")
_DEGREE = re.compile(r"(?<=[\d}])\s*(?:\\[ ,;!]\s*)*(?:°|\\degree\b|\^\s*\{?\\circ\}?|\s+degrees?\b|"
                     r"\\text\{\s*degrees?\s*\})")
_REPEAT = re.compile(r"(?<![\d.])(-?)(\d*)\.(\d*)(?:\\overline\s*\{(\d+)\}|\\overline\s*(\d)|\\bar\s*\{(\d+)\}|"
                     r"\((\d+)\)|((?:\d*\\dot\s*\{?\d\}?)+))")
_DOT_DIGIT = re.compile(r"\\dot\s*\{?(\d)\}?")
_PLAIN_FRAC = re.compile(r"(?<![\w./\\^{}])(-?\d+)\s*/\s*(\d+)(?![\w./])")
_CHOICE_GOLD = re.compile(r"\s*(?:\\text(?:bf)?\{\s*)?\(?([A-J])\)?\s*\}?\s*")
_CHOICE_PRED = re.compile(r"\s*(?:\*\*|\\textbf\{|\\text\{|\\mathrm\{|(?i:option|choice)\s+)*\s*\(?([A-J])\)?"
                          r"(?=$|[\s}.:,*)\\])")
# "-2 \le x \le 7" (a chained inequality that is the whole answer) -> the interval "[-2, 7]"
_CHAIN = re.compile(r"\s*([^<>\\=,]+?|-?\\infty)\s*(\\leq|\\le|<)\s*[a-z]\s*(\\leq|\\le|<)\s*([^<>=,]+?)\s*")


def unicode_math(text: str) -> str:
    """Unicode math symbols as LaTeX: π, √, ×, ·, the U+2212 minus, ≤, superscripts, ..."""
    text = _ROOT_RE.sub(lambda m: f"\\sqrt{_ROOT_INDEX[m.group(1)]}{{{_strip_group(m.group(2))}}}", text)
    text = _SUP_RE.sub(lambda m: "^{" + "".join(_SUPERSCRIPTS[c] for c in m.group(0)) + "}", text)
    text = _DASH_MINUS.sub("-", text)
    for sym, tex in _SYMBOLS.items():
        text = text.replace(sym, tex)
    return text


def _strip_group(arg: str) -> str:
    return arg[1:-1] if arg[:1] in "({" else arg


def digit_spacing(text: str) -> str:
    """Thin spaces and LaTeX spacing commands that group digits: ``1\\,000``, ``10,\\!080``, ``1 000`` -> digits."""
    text = _COMMA_SPACING.sub(",", text)
    return _SPACED_DIGITS.sub("", text)


def thousands(text: str) -> str:
    """``12,345,678`` -> ``12345678`` (callers apply it only when the gold is a single value)."""
    return _THOUSANDS.sub(lambda m: m.group(0).replace("{,}", "").replace(",", ""), text)


def percent_degree(text: str) -> str:
    """Spaced/escaped percent signs as ``\\%``; degree signs, ``\\degree`` and "degrees" as ``^\\circ``."""
    return _DEGREE.sub(lambda _: "^\\circ", _PERCENT.sub(lambda _: "\\%", text))


def repeating_decimals(text: str) -> str:
    """``0.\\overline{3}``, ``0.1\\overline{6}``, ``0.(3)``, ``0.\\dot{1}\\dot{2}`` -> the exact fraction."""

    def exact(m: re.Match) -> str:
        sign, whole, fixed = m.group(1), m.group(2) or "0", m.group(3)
        rep = m.group(4) or m.group(5) or m.group(6) or m.group(7)
        if rep is None:  # dot notation: the dotted digits bound the repetend, undotted ones inside belong to it
            dotted = m.group(8)
            first = dotted.find("\\dot")
            fixed += dotted[:first]
            rep = _DOT_DIGIT.sub(r"\1", dotted[first:])
        value = Fraction(int(whole)) + Fraction(int(fixed or "0"), 10 ** len(fixed)) + \
            Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
        value = -value if sign else value
        return str(value.numerator) if value.denominator == 1 else \
            f"{'-' if value < 0 else ''}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"

    return _REPEAT.sub(exact, text)


def plain_fractions(text: str) -> str:
    """``3/4`` written as text -> ``\\frac{3}{4}`` (a date-like ``1/2/3`` or ``x/2`` is left alone)."""
    return _PLAIN_FRAC.sub(lambda m: f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}", text)


def choice_letter(gold: str) -> str | None:
    """The option letter when the gold is a multiple-choice answer (``\\text{(C)}``, ``(C)``, ``C``), else None."""
    m = _CHOICE_GOLD.fullmatch(gold)
    return m.group(1) if m else None


def pred_choice(pred: str) -> str | None:
    """The option letter a prediction starts with, with or without its option text: ``(C) Plane``, ``C``."""
    pred = pred.strip().lstrip("$").strip()
    m = _CHOICE_PRED.match(pred)
    return m.group(1).upper() if m else None


def normalize(text: str, scalar_gold: bool = True) -> str:
    """All the rewrites in order; thousands separators only come out when the gold is one value."""
    text = unicode_math(text)
    text = digit_spacing(text)
    if scalar_gold and not text.lstrip("$ ").startswith(("(", "[", "\\left", "\\{")):
        text = thousands(text)
    text = percent_degree(text)
    text = repeating_decimals(text)
    text = plain_fractions(text)
    m = _CHAIN.fullmatch(text)
    if m:
        text = f"{'(' if m.group(2) == '<' else '['}{m.group(1)}, {m.group(4)}{')' if m.group(3) == '<' else ']'}"
    return re.sub(r"[ \t]{2,}", " ", text).strip()
