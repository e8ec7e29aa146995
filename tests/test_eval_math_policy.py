"""The final-answer policy of docs/eval_math.md, case by case, on the real benchmark answers.

Every case names a problem of the shared data (/work/shared/data) and the gold answer the case was written
for; the test reads the gold from the data file and checks it is still that one, so a case cannot drift
from its benchmark. Each category has >= 10 hand-written model-style responses that must grade correct and,
for each, a near-miss twin that must stay wrong (with the reason, where the policy gives one).
"""
from __future__ import annotations

import json
import random
import re
import time
from functools import cache
from pathlib import Path

import pytest

from litesys.eval.tasks.math.grade import grade_detail

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
M5 = "math500:test/"
T = "<think>\nLet me work through this carefully.\n"  # the opening of a thinking block


@cache
def _golds(task: str) -> dict[str, str]:
    path = DATA / f"{task}.jsonl"
    if not path.is_file():
        pytest.skip(f"real data not found at {path} (the shared data folder is absent)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["id"]: r["answer"] for r in rows}


def gold_of(ref: str, expected: str) -> tuple[str, str]:
    """(task, gold) of ``task:id``, checked against the gold the case was written for."""
    task, pid = ref.split(":", 1)
    gold = _golds(task)[pid]
    assert gold == expected, f"{ref}: the data's gold is {gold!r}, the case was written for {expected!r}"
    return task, gold


# (problem, gold, response, finish_reason, near-miss twin, twin's finish_reason)
CUT = [  # length-limited or unclosed <think>: only a committed answer counts
    ("aime24:2024-I-1", "204",
     T + "s = 2.5, and the coffee break is t = 24 minutes, so 180 + 24 = 204.\n</think>\n\nThe walk takes "
         "$\\boxed{204}$ minutes.\n\n**Check:** at $s + \\tfrac12 = 3$ km/h the walk takes 3 hours, plus", "length",
     T + "s = 2.5, so t = 24 and the total is 180 + 24 = 204 minutes. Wait, let me double-check the speed: "
         "9 / 2.5 = 3.6 hours, that is 216 minutes, minus", "length"),
    ("aime24:2024-I-2", "25",
     T + "From x log_x y = 10 and 4y log_y x = 10 we get 4xy = 100.\n\nTherefore, the final answer is: "
         "$\\boxed{25}$. I hope it is correct.", "length",
     T + "From the two equations 4xy = 100, so xy = 25? Let me verify with log_x(y^x) = 10: if", "length"),
    ("aime24:2024-I-3", "809",
     T + "Losing positions are n = 0 or 2 (mod 5): 404 + 405 = 809.\n\n**Final Answer**\n\\boxed{809}\n</think>"
         "\n\nBob wins exactly when", "length",
     T + "Losing positions are 0 and 2 mod 5, giving 404 + 405 = 809. Hmm, but does n = 2024 itself count? "
         "If n", "length"),
    ("gsm8k:gsm8k-0", "18",
     "Janet sells 16 - 3 - 4 = 9 eggs a day.\nShe makes 9 * 2 = $18 every day.\n#### 18\n\nQuestion: Janet",
     "length",
     "Janet sells 16 - 3 - 4 = 9 eggs, so 9 * 2 = 18 dollars. But wait, does she also sell the muffins? "
     "She bakes", "length"),
    ("amc23:amc23-0", "27",
     T + "Alicia rides 18 mph, Beth 12 mph: 18t + 12t = 45, t = 1.5, distance 27.\n</think>\n\nThe final "
         "answer is 27.\n\nTo see why, note that the two cyclists together close the gap at", "length",
     T + "They close the gap at 30 mph, so t = 1.5 hours and the answer is 27. But I should check whether the "
         "question asks for Beth's distance instead", "length"),
    ("aime25:2025-I-1", "70",
     T + "17_b divides 97_b exactly for b = 21 and b = 49, and 21 + 49 = 70.\n</think>\n\n\\boxed{70}\n\n"
         "\\boxed{70}\n\n\\boxed{70}\n\n\\boxed{", "repetition",
     T + "b + 7 divides 56, so b = 21 or 49; the sum is \\boxed{70}\n\nHmm, wait. Is b = 9 also valid? "
         "17_9 = 16 and 97_9 = 88", "length"),
    (M5 + "precalculus/1199.json", "\\pi",
     T + "The function repeats after pi.\n</think>\n\nThe smallest period is $\\boxed{\\pi}$. Indeed "
         "$\\sin^2 x = \\frac{1 - \\cos 2x}{2}$ has", "length",
     T + "The period should be \\pi. Let me check f(x + \\pi) = f(x) by expanding each term: the first",
     "length"),
    ("aime24:2024-I-4", "116",
     T + "The conditional probability is 1/115, so m + n = 116.\n\nSo the final answer is \\boxed{116}.",
     "length",
     T + "The probability is 1/115, giving m + n = 116.\n\nBut I should double-check the count of 115: "
         "1 + 24 + 90 = 115, and the", "length"),
    ("amc23:amc23-1", "36",
     T + "The ratio works out to 36.\n</think>\nAnswer: 36\n\nExplanation: the", "length",
     T + "The area comes to 36 square units.\n</think>\n\nLet me lay out the solution. The area is 36", "length"),
    ("gsm8k:gsm8k-2", "70000",
     T + "Value 80000 * 2.5 = 200000, cost 130000.\n</think>\n\nHe made a profit of $\\boxed{70000}$ dollars, "
         "since 200000 - 130000 = 70000. Let me also", "length",
     T + "Value 80000 * 2.5 = 200000, cost 80000 + 50000 = 130000, profit 70000.\n\nSo \\boxed{", "length"),
    ("aime24:2024-I-5", "104",
     T + "Power of a point gives CE = 104.\n</think>\n\n$CE = \\boxed{104}$", "stop",
     T + "Power of a point gives CE = 104, and 107 - 3 = 104 as a check.", "stop"),  # <think> never closed
]

HEDGED = [  # (problem, gold, decisive answer, hedged twin)
    ("aime24:2024-I-1", "204", "</think>\n\nThe answer is $\\boxed{204}$.",
     "</think>\n\nThe answer is either $204$ or $205$, depending on rounding."),
    (M5 + "intermediate_algebra/134.json", "-50", "</think>\n\nSo the minimum is $\\boxed{-50}$.",
     "</think>\n\nSo the minimum is $\\boxed{-50}$ or $\\boxed{50}$."),
    ("gsm8k:gsm8k-3", "540", "He runs 3 * 3 * 60 = 540 meters.\n#### 540",
     "He runs 3 * 3 * 60 = 540 meters, or 560 with the warm-up.\n#### 540 or 560"),
    ("amc23:amc23-2", "45", "</think>\n\nThe final answer is 45.",
     "</think>\n\nThe final answer is 45 or possibly 54."),
    ("aime25:2025-I-2", "588", "</think>\n\nThe area of the heptagon is $\\boxed{588}$.",
     "</think>\n\nThe area of the heptagon is $\\boxed{588 \\text{ or } 589}$."),
    (M5 + "algebra/2584.json", "\\frac{14}{3}",
     "</think>\n\n$x = \\boxed{\\frac{14}{3}}$, or equivalently $\\boxed{4\\frac{2}{3}}$.",  # one value twice
     "</think>\n\n$x = \\boxed{\\frac{14}{3}}$ or $\\boxed{\\frac{13}{3}}$."),
    (M5 + "algebra/2036.json", "3\\sqrt{13}", "</think>\n\nThe distance is $\\boxed{3\\sqrt{13}}$ (or "
     "$\\boxed{\\sqrt{117}}$).", "</think>\n\nThe distance is $\\boxed{3\\sqrt{13}}$ (or $\\boxed{2\\sqrt{13}}$)."),
    ("gsm8k:gsm8k-4", "20", "Either way you count it, she needs 20 cups.\n#### 20",
     "So the answer is either 20 or 24 cups."),
    ("aime24:2024-I-6", "294", "</think>\n\nSo the number of paths is $\\boxed{294}$.",
     "</think>\n\nSo the number of paths is $\\boxed{294}$, or maybe $\\boxed{296}$ if corners count."),
    ("aime24:2024-I-5", "104", "</think>\n\nTherefore $CE = \\boxed{104}$.",
     "</think>\n\nTherefore $CE = \\boxed{104}$ or $CE = \\boxed{106}$."),
    ("amc23:amc23-5", "7", "</think>\n\n**Final Answer:** 7", "</think>\n\n**Final Answer:** 7 or 8"),
]

UNICODE = [  # (problem, gold, answer in Unicode math, near-miss)
    (M5 + "precalculus/1056.json", "288 \\pi", "288π", "289π"),
    (M5 + "precalculus/1105.json", "-\\frac{\\pi}{6}", "−π/6", "π/6"),
    (M5 + "geometry/686.json", "18+2\\pi", "18 + 2π", "18 + 3π"),
    (M5 + "algebra/2036.json", "3\\sqrt{13}", "3√13", "2√13"),
    (M5 + "algebra/2253.json", "\\frac{3\\sqrt{3}}{4}", "(3·√3)/4", "(3·√3)/2"),
    (M5 + "intermediate_algebra/662.json", "1 \\pm \\sqrt{19}", "1 ± √19", "1 ± √17"),
    (M5 + "precalculus/697.json", "-\\sqrt{3}", "−√3", "√3"),
    (M5 + "intermediate_algebra/134.json", "-50", "−50", "−5"),
    (M5 + "algebra/2046.json", "x^3+3x-6", "x³ + 3x − 6", "x³ + 3x + 6"),
    (M5 + "algebra/1547.json", "6r^2-4r-24", "6r² − 4r − 24", "6r² − 4r + 24"),
    (M5 + "algebra/2680.json", "5r^5", "5r⁵", "5r⁴"),
    (M5 + "intermediate_algebra/1111.json", "\\frac{20000}{\\pi}", "20000/π", "2000/π"),
    ("gsm8k:gsm8k-2", "70000", "7 × 10⁴", "7 × 10³"),
    (M5 + "algebra/101.json", "x \\in [-2,7]", "−2 ≤ x ≤ 7", "−2 < x ≤ 7"),
]

SPACING = [  # thin/narrow/no-break spaces and LaTeX spacing commands inside numbers
    ("gsm8k:gsm8k-2", "70000", "\\boxed{70\u2009000}", "\\boxed{70\u2009100}"),
    ("gsm8k:gsm8k-17", "57500", "\\boxed{57\u202f500}", "\\boxed{57\u202f600}"),
    ("gsm8k:gsm8k-62", "25000", "\\boxed{25\\,000}", "\\boxed{25\\,500}"),
    ("gsm8k:gsm8k-61", "1430", "\\boxed{1\\!430}", "\\boxed{1\\!340}"),
    (M5 + "counting_and_probability/508.json", "10,\\!080", "\\boxed{10\\,080}", "\\boxed{10\\,008}"),
    (M5 + "intermediate_algebra/607.json", "13535", "\\boxed{13\\;535}", "\\boxed{13\\;553}"),
    (M5 + "counting_and_probability/159.json", "28800", "\\boxed{28\\ 800}", "\\boxed{28\\ 880}"),
    ("amc23:amc23-3", "3159", "\\boxed{3\u00a0159}", "\\boxed{3\u00a0195}"),
    ("gsm8k:gsm8k-119", "95200", "So the total is $95\u2009200.\n#### 95\u2009200",
     "So the total is $95\u2009020.\n#### 95\u2009020"),
    ("gsm8k:gsm8k-129", "10000", "The final answer is $10\\,000$.", "The final answer is $1\\,000$."),
    ("gsm8k:gsm8k-173", "18000", "\\boxed{18\\thinspace 000}", "\\boxed{18\\thinspace 000.5}"),
]

THOUSANDS = [
    ("gsm8k:gsm8k-2", "70000", "\\boxed{70,000}", "\\boxed{70,001}"),
    ("gsm8k:gsm8k-17", "57500", "</think>\n\nThe final answer is \\$57,500.",
     "</think>\n\nThe final answer is \\$57,050."),
    ("gsm8k:gsm8k-62", "25000", "The sum is 25,000.\n#### 25,000", "The sum is 2,500.\n#### 2,500"),
    (M5 + "counting_and_probability/508.json", "10,\\!080", "\\boxed{10,080}", "\\boxed{10,800}"),
    (M5 + "intermediate_algebra/607.json", "13535", "\\boxed{13,535}", "\\boxed{(13,535)}"),  # a pair is no number
    (M5 + "counting_and_probability/159.json", "28800", "\\boxed{28{,}800}", "\\boxed{28{,}008}"),
    ("gsm8k:gsm8k-119", "95200", "\\boxed{\\$95,200}", "\\boxed{\\$95,300}"),
    ("amc23:amc23-3", "3159", "\\boxed{3,159}", "\\boxed{3,195}"),
    ("gsm8k:gsm8k-63", "1596", "\\boxed{1,596}", "\\boxed{1,596.5}"),
    ("gsm8k:gsm8k-70", "7425", "\\boxed{7,425}", "\\boxed{7,245}"),
    (M5 + "number_theory/417.json", "11,\\! 111,\\! 111,\\! 100", "\\boxed{11,111,111,100}",
     "\\boxed{11,111,111,000}"),
]

PERCENT = [
    ("gsm8k:gsm8k-14", "60", "\\boxed{60\\%}", "\\boxed{61\\%}"),
    ("gsm8k:gsm8k-140", "20", "\\boxed{20 \\%}", "\\boxed{80 \\%}"),
    ("gsm8k:gsm8k-458", "35", "\\boxed{35\\ \\%}", "\\boxed{53\\ \\%}"),
    ("gsm8k:gsm8k-728", "40", "</think>\n\nThe final answer is 40 %.", "</think>\n\nThe final answer is 4 %."),
    ("gsm8k:gsm8k-890", "25", "So 25% are flowering plants.\n#### 25%", "So 75% are flowering plants.\n#### 75%"),
    ("gsm8k:gsm8k-999", "25", "\\boxed{25\\text{%}}", "\\boxed{20\\text{%}}"),
    ("gsm8k:gsm8k-1179", "50", "\\boxed{50\\,\\%}", "\\boxed{5\\,\\%}"),
    ("gsm8k:gsm8k-393", "20", "\\boxed{20 percent}", "\\boxed{25 percent}"),
    ("gsm8k:gsm8k-348", "10", "\\boxed{10\u2009%}", "\\boxed{110\u2009%}"),
    (M5 + "prealgebra/1865.json", "12", "\\boxed{12\\%}", "\\boxed{0.12}"),  # a share is not the percentage
    (M5 + "prealgebra/1233.json", "10", "The final answer is $10\\%$.", "The final answer is $1\\%$."),
]

DEGREES = [
    (M5 + "precalculus/927.json", "90^\\circ", "\\boxed{90°}", "\\boxed{91°}"),
    (M5 + "geometry/434.json", "28", "\\boxed{28^{\\circ}}", "\\boxed{29^{\\circ}}"),
    (M5 + "geometry/967.json", "72", "\\boxed{72 °}", "\\boxed{27 °}"),
    (M5 + "prealgebra/1646.json", "80", "\\boxed{80\\degree}", "\\boxed{100\\degree}"),
    (M5 + "geometry/183.json", "145^\\circ", "\\boxed{145 degrees}", "\\boxed{135 degrees}"),
    (M5 + "precalculus/44.json", "120^\\circ", "</think>\n\nThe final answer is 120°.",
     "</think>\n\nThe final answer is 60°."),
    (M5 + "prealgebra/1807.json", "120", "\\boxed{120^\\circ}", "\\boxed{102^\\circ}"),
    (M5 + "precalculus/117.json", "30^\\circ", "\\boxed{30\\,^\\circ}", "\\boxed{\\frac{\\pi}{6}}"),  # radians
    (M5 + "geometry/347.json", "76^\\circ", "\\boxed{76\\text{ degrees}}", "\\boxed{67\\text{ degrees}}"),
    (M5 + "geometry/226.json", "180^\\circ", "\\boxed{180^{\\circ}}", "\\boxed{360^{\\circ}}"),
    (M5 + "prealgebra/874.json", "116", "\\boxed{116°}", "\\boxed{64°}"),
]

REPEATING = [  # exact repeating decimals; the twin is the truncated decimal (or a wrong repetend)
    (M5 + "counting_and_probability/430.json", "\\frac{1}{3}", "\\boxed{0.\\overline{3}}", "\\boxed{0.333}"),
    (M5 + "algebra/2584.json", "\\frac{14}{3}", "\\boxed{4.\\overline{6}}", "\\boxed{4.67}"),
    (M5 + "intermediate_algebra/515.json", "\\frac43", "</think>\n\nThe final answer is 1.(3).",
     "</think>\n\nThe final answer is 1.33."),
    (M5 + "counting_and_probability/1114.json", "\\frac{11}{36}", "\\boxed{0.30\\overline{5}}",
     "\\boxed{0.3\\overline{05}}"),
    (M5 + "counting_and_probability/230.json", "\\frac{2}{21}", "\\boxed{0.\\overline{095238}}",
     "\\boxed{0.095238}"),
    (M5 + "algebra/2517.json", "-\\frac{35}{9}", "\\boxed{-3.\\overline{8}}", "\\boxed{-3.888888}"),
    (M5 + "prealgebra/1356.json", "\\frac{4}{9}", "\\boxed{0.\\dot{4}}", "\\boxed{0.4444}"),
    (M5 + "prealgebra/1272.json", "\\frac{13}{15}", "\\boxed{0.8\\dot{6}}", "\\boxed{0.867}"),
    (M5 + "intermediate_algebra/1123.json", "\\frac{10}{11}", "\\boxed{0.\\dot{9}\\dot{0}}", "\\boxed{0.909}"),
    (M5 + "prealgebra/1995.json", "\\frac{8}{21}", "\\boxed{0.\\dot{3}8095\\dot{2}}", "\\boxed{0.380952}"),
    (M5 + "algebra/509.json", "\\frac{13}{6}", "\\boxed{2.1\\overline{6}}", "\\boxed{2.\\overline{16}}"),
    (M5 + "intermediate_algebra/1197.json", "\\frac{3}{56}", "\\boxed{0.053\\overline{571428}}",
     "\\boxed{0.0535714}"),
]

FRACTIONS = [  # plain-text a/b after a final-answer phrase
    (M5 + "algebra/2584.json", "\\frac{14}{3}", "The final answer is 14/3.", "The final answer is 14/5."),
    (M5 + "intermediate_algebra/1197.json", "\\frac{3}{56}", "Final answer: 3/56", "Final answer: 3/65"),
    (M5 + "counting_and_probability/1114.json", "\\frac{11}{36}", "**Final Answer:** 11/36",
     "**Final Answer:** 11/63"),
    (M5 + "intermediate_algebra/515.json", "\\frac43", "The answer is 4/3.", "The answer is 3/4."),
    (M5 + "counting_and_probability/430.json", "\\frac{1}{3}", "So the final answer is 1/3 .",
     "So the final answer is 1/3/2 ."),
    (M5 + "counting_and_probability/230.json", "\\frac{2}{21}", "The final answer is: 2/21",
     "The final answer is: 2/12"),
    (M5 + "algebra/2517.json", "-\\frac{35}{9}", "The final answer is −35/9.", "The final answer is 35/9."),
    (M5 + "prealgebra/1356.json", "\\frac{4}{9}", "The answer is 4 / 9.", "The answer is 4 / 7."),
    (M5 + "prealgebra/1272.json", "\\frac{13}{15}", "My final answer is 13/15, in lowest terms.",
     "My final answer is 13/16, in lowest terms."),
    (M5 + "algebra/2257.json", "\\frac9{19}", "Answer: 9/19", "Answer: 9/91"),
    (M5 + "intermediate_algebra/1232.json", "\\frac{5}{13}", "The final answer is 5/13 of the total.",
     "The final answer is 5/31 of the total."),
]

MULTI = [  # the gold lists several values; the response boxes them one by one
    (M5 + "intermediate_algebra/1388.json", "1,-2", "The roots are $\\boxed{1}$ and $\\boxed{-2}$.",
     "The roots are $\\boxed{1}$ and $\\boxed{2}$."),
    (M5 + "intermediate_algebra/1388.json", "1,-2", "$x = \\boxed{-2}, \\; x = \\boxed{1}$",
     "$x = \\boxed{-2}, \\; x = \\boxed{1}, \\; x = \\boxed{3}$"),
    (M5 + "intermediate_algebra/1388.json", "1,-2", "$\\boxed{x=1} \\text{ and } \\boxed{x=-2}$",
     "$\\boxed{x=1}$"),
    (M5 + "intermediate_algebra/1388.json", "1,-2", "The final answer is $1$ or $-2$.",
     "The final answer is $-1$ or $2$."),
    (M5 + "intermediate_algebra/428.json", "3, 5, 7", "$\\boxed{3}, \\boxed{5}, \\boxed{7}$",
     "$\\boxed{3}, \\boxed{5}, \\boxed{9}$"),
    (M5 + "intermediate_algebra/428.json", "3, 5, 7", "$\\boxed{7}$, $\\boxed{5}$, and $\\boxed{3}$",
     "$\\boxed{7}$ and $\\boxed{5}$"),
    (M5 + "intermediate_algebra/428.json", "3, 5, 7", "\\boxed{3},\\ \\boxed{5},\\ \\boxed{7}",
     "\\boxed{3},\\ \\boxed{5},\\ \\boxed{7},\\ \\boxed{9}"),
    (M5 + "intermediate_algebra/1102.json", "-2,1", "\\boxed{-2} \\quad \\boxed{1}", "\\boxed{-2} \\quad \\boxed{-1}"),
    (M5 + "intermediate_algebra/1102.json", "-2,1", "\\boxed{1 \\text{ and } -2}", "\\boxed{1 \\text{ and } 2}"),
    (M5 + "intermediate_algebra/1102.json", "-2,1", "\\boxed{-2 \\text{ or } 1}", "\\boxed{2 \\text{ or } 1}"),
    (M5 + "intermediate_algebra/2015.json", "\\{1\\pm\\sqrt{5},-2\\}",
     "$\\boxed{1+\\sqrt{5}}, \\boxed{1-\\sqrt{5}}, \\boxed{-2}$", "$\\boxed{1+\\sqrt{5}}, \\boxed{-2}$"),
    (M5 + "intermediate_algebra/662.json", "1 \\pm \\sqrt{19}", "$\\boxed{1+\\sqrt{19}}$ and "
     "$\\boxed{1-\\sqrt{19}}$", "$\\boxed{1+\\sqrt{19}}$ and $\\boxed{1-\\sqrt{17}}$"),
]

CHOICE = [  # multiple choice: the letter, with or without the option's text
    (M5 + "precalculus/819.json", "\\text{(C)}", "\\boxed{C}", "\\boxed{D}"),
    (M5 + "precalculus/819.json", "\\text{(C)}", "\\boxed{\\text{(C)}}", "\\boxed{\\text{(B)}}"),
    (M5 + "precalculus/819.json", "\\text{(C)}", "\\boxed{\\text{(C) Plane}}", "\\boxed{\\text{(D) Sphere}}"),
    (M5 + "precalculus/819.json", "\\text{(C)}", "The answer is (C) Plane.", "The answer is (A) Line."),
    (M5 + "precalculus/819.json", "\\text{(C)}", "Answer: C", "\\boxed{\\text{Plane}}"),  # text alone: no letter
    (M5 + "precalculus/452.json", "\\text{(E)}", "\\boxed{E}", "\\boxed{D}"),
    (M5 + "precalculus/452.json", "\\text{(E)}", "\\boxed{(E)\\ \\text{Hyperbola}}",
     "\\boxed{(D)\\ \\text{Ellipse}}"),
    (M5 + "precalculus/452.json", "\\text{(E)}", "Final answer: (E) Hyperbola", "Final answer: (C) Parabola"),
    (M5 + "precalculus/452.json", "\\text{(E)}", "\\boxed{\\textbf{(E)}}", "\\boxed{\\textbf{(A)}}"),
    (M5 + "intermediate_algebra/754.json", "\\text{(B)}", "\\boxed{\\textbf{(B)}\\ 3(1 + r/10)^x = 7}",
     "\\boxed{\\textbf{(E)}\\ 3(1 + 1/r)^x = 7}"),
    (M5 + "intermediate_algebra/754.json", "\\text{(B)}", "\\boxed{B}", "\\boxed{B} or \\boxed{D}"),
    (M5 + "intermediate_algebra/754.json", "\\text{(B)}", "The final answer is $\\textbf{(B)}$.",
     "The final answer is $\\textbf{(C)}$."),
]


def _thought(answer: str) -> str:
    """A response with a closed thinking block before the answer (unless the case writes its own)."""
    return answer if "</think>" in answer or answer.startswith("<think>") else \
        "<think>\nCompute step by step and check the result.\n</think>\n\n" + answer


FORMATS = {"unicode": UNICODE, "spacing": SPACING, "thousands": THOUSANDS, "percent": PERCENT,
           "degrees": DEGREES, "repeating": REPEATING, "fractions": FRACTIONS, "multi": MULTI, "choice": CHOICE}


def _format_cases(good: bool) -> list:
    out = []
    for name, cases in FORMATS.items():
        for ref, gold, right, near in cases:
            ans = right if good else near
            if name in ("unicode",):
                ans = f"So the answer is $\\boxed{{{ans}}}$."
            out.append(pytest.param(ref, gold, _thought(ans), id=f"{name}-{ref.rsplit('/', 1)[-1]}-{len(out)}"))
    return out


def test_every_category_has_ten_cases():
    for name, cases in {"cut": CUT, "hedged": HEDGED, **FORMATS}.items():
        assert len(cases) >= 10, name


@pytest.mark.parametrize("ref,gold,response", _format_cases(good=True))
def test_written_forms_of_the_gold_grade_correct(ref, gold, response):
    task, gold = gold_of(ref, gold)
    g = grade_detail(task, response, gold, "stop")
    assert g.correct and g.reason is None, g


@pytest.mark.parametrize("ref,gold,response", _format_cases(good=False))
def test_near_misses_stay_wrong(ref, gold, response):
    task, gold = gold_of(ref, gold)
    g = grade_detail(task, response, gold, "stop")
    assert not g.correct, g


@pytest.mark.parametrize("ref,gold,response,finish,twin,twin_finish", CUT, ids=[c[0] for c in CUT])
def test_cut_responses_need_a_committed_answer(ref, gold, response, finish, twin, twin_finish):
    task, gold = gold_of(ref, gold)
    g = grade_detail(task, response, gold, finish)
    assert g.correct and g.source in ("box", "marker", "statement"), g
    w = grade_detail(task, twin, gold, twin_finish)
    assert not w.correct and w.reason == "no_final_answer" and w.extracted is None and w.source == "none", w
    assert gold in twin  # the gold number is there; it was never committed to


def test_plain_math_verify_credits_uncommitted_reasoning():
    """What the policy changes: plain math-verify credits most of the cut twins above."""
    credited = [ref for ref, gold, _, _, twin, fr in CUT
                if grade_detail(*gold_of(ref, gold)[:1], twin, gold_of(ref, gold)[1], fr, "math-verify").correct]
    assert len(credited) >= len(CUT) // 2, credited


@pytest.mark.parametrize("ref,gold,decisive,hedged", HEDGED, ids=[c[0] for c in HEDGED])
def test_hedged_final_answers_are_wrong(ref, gold, decisive, hedged):
    task, gold = gold_of(ref, gold)
    g = grade_detail(task, _thought(decisive), gold, "stop")
    assert g.correct and g.reason is None, g
    w = grade_detail(task, _thought(hedged), gold, "stop")
    assert not w.correct and w.reason == "hedged", w


def test_sources_are_recorded():
    task, gold = gold_of("gsm8k:gsm8k-0", "18")
    assert grade_detail(task, "so \\boxed{18}", gold, "stop").source == "box"
    assert grade_detail(task, "9 * 2 = 18\n#### 18", gold, "stop").source == "marker"
    assert grade_detail(task, "The final answer is 18.", gold, "stop").source == "statement"
    assert grade_detail(task, "She makes 9 * 2 = $18.", gold, "stop").source == "tail"
    g = grade_detail(task, "<think>9 * 2 = 18 dollars, but", gold, "length")
    assert (g.source, g.reason, g.correct) == ("none", "no_final_answer", False)


def _rows(task: str) -> list[dict]:
    _golds(task)  # skips when the data is absent
    return [json.loads(line) for line in (DATA / f"{task}.jsonl").read_text().splitlines() if line.strip()]


def test_gold_solutions_grade_right_and_shuffled_answers_wrong():
    """Every MATH500, GSM8K (and AIME24) gold solution against its own answer (all must be right) and against another
    problem's differently written answer (a shuffle: ~0% right), graded in the pool as runs grade."""
    from litesys.eval.pool import GradePool
    from litesys.eval.tasks.math.grade import GRADE_ITEM, PRELOAD

    rnd = random.Random(0)
    jobs, groups = [], {}
    for task in ("math500", "gsm8k"):
        rows = _rows(task)
        groups[(task, "own")] = range(len(jobs), len(jobs) + len(rows))
        jobs += [(task, r["solution"], r["answer"], "stop") for r in rows]
        others = []
        for r in rows:
            j = rnd.randrange(len(rows))
            while rows[j]["answer"].strip() == r["answer"].strip():
                j = rnd.randrange(len(rows))
            others.append((task, r["solution"], rows[j]["answer"], "stop"))
        groups[(task, "shuffled")] = range(len(jobs), len(jobs) + len(others))
        jobs += others
    aime = _rows("aime24")  # solutions by AoPS authors, signatures and all: the answer is their last box
    groups[("aime24", "own")] = range(len(jobs), len(jobs) + len(aime))
    jobs += [("aime24", r["solution"], r["answer"], "stop") for r in aime]
    t0 = time.monotonic()
    with GradePool(GRADE_ITEM, workers=2, timeout=30, preload=PRELOAD) as pool:
        out = pool.map(jobs)
    ok = [o.status == "ok" and o.value[0] for o in out]
    rate = {g: sum(ok[i] for i in idx) / len(idx) for g, idx in groups.items()}
    print(f"graded {len(jobs)} in {time.monotonic() - t0:.1f}s: {rate}")
    assert rate[("math500", "own")] == rate[("gsm8k", "own")] == rate[("aime24", "own")] == 1.0, rate
    assert rate[("math500", "shuffled")] <= 0.005 and rate[("gsm8k", "shuffled")] <= 0.005, rate


# ---------------------------------------------------------------- both graders side by side

SCRIPTED = {  # problem -> (response, finish reason): what a model might write, graded by both graders
    "gsm8k-0": ("<think>\nShe sells 16 - 3 - 4 = 9 eggs, 9 * 2 = 18 dollars. But wait, the muffins", "length"),
    "gsm8k-1": ("<think>\n2 + 1 = 3 bolts.\n</think>\n\nThe answer is either 3 or 4 bolts.", "stop"),
    "gsm8k-2": ("<think>\n200000 - 130000\n</think>\n\nHis profit is $\\boxed{70\u2009000}$ dollars.", "stop"),
    "gsm8k-3": ("<think>\n3 * 3 * 60\n</think>\n\nHe runs $\\boxed{540}$ meters a week.", "stop"),
}


class ScriptedLLM:
    """An engine stand-in that answers each prompt with the scripted response of its problem."""

    def __init__(self, by_question: dict[str, tuple[str, str]]):
        self.by_question = by_question

    def generate(self, prompts, params, progress=False, on_finish=None, **_engine_options):
        from litesys.outputs import CompletionOutput, RequestOutput

        outs = []
        for i, prompt in enumerate(prompts):
            text, finish = next(v for q, v in self.by_question.items() if q in prompt[-1]["content"])
            outs.append(RequestOutput([1], [CompletionOutput([7] * 5, text, finish)]))
            if on_finish:
                on_finish(i, outs[-1])
        return outs


def _expected(rows: list[dict], grader: str) -> dict[str, bool]:
    return {r["id"]: grade_detail("gsm8k", *SCRIPTED[r["id"]][:1], r["answer"], SCRIPTED[r["id"]][1], grader).correct
            for r in rows}


def _scripted_eval(tmp_path: Path) -> tuple[list[dict], list[str], object]:
    """(rows, eval_math.py flags, runner): the scripted GSM8K problems as a data file, a tiny checkpoint (the
    flags' checks need one), and the real runner with the engine replaced by ``ScriptedLLM``."""
    from checkpoints import make_checkpoint

    from litesys.eval import runner as runner_mod

    rows = [r for r in _rows("gsm8k") if r["id"] in SCRIPTED]
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "answer")}) + "\n" for r in rows))
    by_question = {r["question"]: SCRIPTED[r["id"]] for r in rows}

    def scripted_run(job, out, devices, config):
        job.make_llm = lambda device: ScriptedLLM(by_question)
        return runner_mod.run(job, out, devices, config)

    ckpt = make_checkpoint(tmp_path / "ckpt", "qwen3")
    argv = ["--model", str(ckpt), "--task", "gsm8k", "--data-file", str(data), "--device", "cpu", "--max_len", "512",
            "--gen_len", "16", "--grade_workers", "1", "--output_dir", str(tmp_path / "run")]
    return rows, argv, scripted_run


def test_compare_graders_run_reports_both_scores_and_the_disagreements(tmp_path, capsys):
    """eval_math.py --compare-graders end to end (real flags, checks, runner, grading pool, summary) with the
    engine replaced by scripted responses: both scores, and the samples they disagree on, with reasons."""
    from litesys.eval.tasks.math.main import main

    rows, argv, scripted_run = _scripted_eval(tmp_path)
    out = tmp_path / "run"
    s = main([*argv, "--compare-graders"], runner=scripted_run)
    lite, plain = _expected(rows, "litesys"), _expected(rows, "math-verify")
    assert lite == {"gsm8k-0": False, "gsm8k-1": False, "gsm8k-2": True, "gsm8k-3": True}
    assert plain["gsm8k-0"] and not plain["gsm8k-2"]  # plain math-verify: credits the cut, misses the thin space
    assert s["grader"] == "litesys" and s["pass@1"] == 0.5
    assert s["graders"]["litesys"]["pass@1"] == 0.5
    assert s["graders"]["math-verify"]["pass@1"] == sum(plain.values()) / 4
    assert s["graders"]["litesys"]["no_final_answer"] == 1 and s["graders"]["litesys"]["hedged"] == 1
    assert s["grading"]["no_final_answer"] == 1 and s["grading"]["hedged"] == 1
    differ = {pid for pid in lite if lite[pid] != plain[pid]}
    assert s["graders"]["disagreements"] == len(differ) >= 2
    lines = [json.loads(x) for x in (out / s["graders"]["disagreement_file"]).read_text().splitlines()]
    assert {d["problem_id"] for d in lines} == differ
    why = {d["problem_id"]: d["why"] for d in lines}
    assert why["gsm8k-0"].startswith("litesys: no final answer - the response was cut (length)")
    assert "math-verify took" in why["gsm8k-0"]
    assert "different answers: math-verify took" in why["gsm8k-2"] or "same answer" in why["gsm8k-2"]
    for d in lines:
        assert set(d["grades"]) == {"litesys", "math-verify"} and d["output_tail"]
    recs = {r["problem_id"]: r for r in map(json.loads, (out / "samples.0.jsonl").read_text().splitlines())}
    assert recs["gsm8k-0"]["reason"] == "no_final_answer" and recs["gsm8k-0"]["answer_source"] == "none"
    assert recs["gsm8k-1"]["reason"] == "hedged"
    assert recs["gsm8k-2"]["answer_source"] == "box" and recs["gsm8k-2"]["extracted"] == "70\u2009000"
    assert json.loads((out / "run_config.json").read_text())["grader"] == "litesys"
    # the report shows each grader's scores (from the samples), and the summary's table both graders' pass@k
    from litesys.eval import report

    capsys.readouterr()
    assert report.main([str(out), "--no-plot"]) == 0
    block = capsys.readouterr().out.split("scores by grader (--compare-graders):\n", 1)[1].split("\n\n")[0]
    rows = {cols[1]: cols for cols in (re.split(r"\s{2,}", line.strip()) for line in block.splitlines()[2:])}
    assert rows["litesys"][2:4] == ["0.5000", "0.5000"]  # pass@1, pass@k (1 trial)
    assert rows["math-verify"][2] == f"{sum(plain.values()) / 4:.4f}"
    assert rows["math-verify"][-1] == f"{len(differ)} of 4 samples"
    summary_rows = report.format_table(s).splitlines()
    assert any(r.startswith("grader litesys") and r.endswith("pass@1 0.5000") for r in summary_rows)
    assert any(r.startswith("graders disagree") and r.endswith(f"{len(differ)} samples") for r in summary_rows)


def test_math_verify_grader_alone_and_a_changed_grader_is_refused(tmp_path, capsys):
    """--grader math-verify sets the headline fields; rerunning the folder with another grader is refused."""
    from litesys.eval.tasks.math.main import main

    rows, argv, scripted_run = _scripted_eval(tmp_path)
    s = main([*argv, "--grader", "math-verify"], runner=scripted_run)
    assert s["grader"] == "math-verify" and "graders" not in s
    assert s["pass@1"] == sum(_expected(rows, "math-verify").values()) / 4
    before = (tmp_path / "run" / "samples.0.jsonl").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv, runner=scripted_run)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "grader: 'math-verify' there, 'litesys' now" in err
    assert (tmp_path / "run" / "samples.0.jsonl").read_bytes() == before
