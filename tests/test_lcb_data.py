"""LiveCodeBench data side: release tags, local loading, date window, prompts, test-case decoding, pass@k."""
from __future__ import annotations

import base64
import json
import os
import pickle
import pickletools
import zlib

import pytest

from litesys.eval.tasks.lcb.data import (
    build_prompt,
    decode_test_cases,
    func_name,
    load_problems,
    problem_tests,
    release_files,
)
from litesys.eval.tasks.lcb.grade import extract_code
from litesys.eval.tasks.lcb.harness import clean_if_name, make_function
from litesys.eval.tasks.lcb.judge import stdio_match
from litesys.eval.tasks.lcb.summary import summarize


def encode_private(cases: list[dict]) -> str:
    """LiveCodeBench's private-test encoding: JSON -> pickle -> zlib -> base64."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def problem(qid: str, starter: str = "", func: str | None = None, public=None, private=None, date="2024-09-01T00:00:00",
            difficulty="easy") -> dict:
    return {"question_id": qid, "question_title": qid, "question_content": f"Solve {qid}.", "platform": "atcoder",
            "contest_id": "c1", "contest_date": date, "difficulty": difficulty, "starter_code": starter,
            "public_test_cases": json.dumps(public or []), "private_test_cases": private if private is not None
            else "[]", "metadata": json.dumps({"func_name": func} if func else {})}


def test_release_tags():
    assert release_files("v5") == ["test5.jsonl"]  # only the problems added in release_v5
    assert release_files("v1") == ["test.jsonl"]
    assert release_files("release_v5") == ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl"]
    assert release_files("v2_v4") == ["test2.jsonl", "test3.jsonl", "test4.jsonl"]
    assert release_files("release_latest")[-1] == "test6.jsonl"
    with pytest.raises(ValueError, match="unknown LiveCodeBench release 'release_v9'"):
        release_files("release_v9")


def test_local_jsonl_parquet_and_date_window(tmp_path):
    rows = [problem("a", date="2024-07-31T00:00:00"), problem("b", date="2024-08-01T00:00:00"),
            problem("c", date="2024-09-30T12:00:00"), problem("d", date="2025-01-01T00:00:00")]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [p["question_id"] for p in load_problems(str(path))] == ["a", "b", "c", "d"]
    window = load_problems(str(path), start_date="2024-08-01", end_date="2024-12-31")
    assert [p["question_id"] for p in window] == ["b", "c"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    assert [p["question_id"] for p in load_problems(str(tmp_path / "p.parquet"), end_date="2024-08-01")] == ["a", "b"]
    with pytest.raises(ValueError, match="not a date"):
        load_problems(str(path), start_date="August")
    with pytest.raises(ValueError, match="no problems"):
        load_problems(str(path), start_date="2030-01-01")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question_id": "x"}) + "\n")
    with pytest.raises(ValueError, match="lacks question_content"):
        load_problems(str(bad))
    with pytest.raises(ValueError, match="unknown LiveCodeBench release"):
        load_problems("v9")


def test_prompts_as_livecodebench():
    stdin = build_prompt(problem("s"))
    assert stdin.startswith("### Question:\nSolve s.\n\n### Format: Read the inputs from stdin solve the problem")
    assert "```python\n# YOUR CODE HERE\n```\n\n### Answer: (use the provided format with backticks)\n\n" in stdin
    starter = "class Solution:\n    def add(self, a: int, b: int) -> int:\n        "
    func = build_prompt(problem("f", starter=starter, func="add"))
    assert f"### Format: You will use the following starter code to write the solution to the problem and " \
           f"enclose your code within delimiters.\n```python\n{starter}\n```\n\n" in func
    assert "stdin" not in func


def test_test_case_decoding_and_fn_name():
    cases = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
    assert decode_test_cases(json.dumps(cases)) == cases
    assert decode_test_cases(encode_private(cases)) == cases
    func_cases = [{"input": "1\n2", "output": "3", "testtype": "functional"}]
    p = problem("f", starter="class Solution: ...", func="add", public=func_cases,
                private=encode_private(func_cases * 2))
    t = problem_tests(p)
    assert (t.inputs, t.outputs, t.fn_name) == (["1\n2"] * 3, ["3"] * 3, "add")
    # a functional problem whose inputs are not one JSON value per line could only fail at grading
    with pytest.raises(ValueError, match="test 0: the input line 0 of a functional problem is not JSON"):
        problem_tests(problem("f", func="add", public=cases))
    assert problem_tests(problem("s", public=cases)).inputs == ["1 2\n"]  # stdin: any text
    assert func_name(problem("s")) is None
    with pytest.raises(ValueError, match="neither JSON nor base64"):
        decode_test_cases("not json, not base64 either!")


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsCode(str(marker)))
    assert "system" in "".join(str(arg) for _, arg, _ in pickletools.genops(payload))  # it does reference code
    raw = base64.b64encode(zlib.compress(payload)).decode()
    with pytest.raises(ValueError, match="refusing to load posix.system"):
        decode_test_cases(raw)
    assert not marker.exists()
    # A class instance (no code run, but not plain data) is refused too.
    raw = base64.b64encode(zlib.compress(pickle.dumps(pytest.approx(1.0)))).decode()
    with pytest.raises(ValueError, match="refusing to load"):
        decode_test_cases(raw)


def test_extract_code_takes_last_block_after_thinking():
    text = "<think>\n```python\nprint('draft')\n```\n</think>\nAnswer:\n```python\nx = 1\n```\ntext\n```python\n" \
           "print(2)\n```\n"
    assert extract_code(text) == "print(2)"
    assert extract_code("<think>\n```python\nprint(1)\n```\n</think>\nno code") == ""
    assert extract_code("```python\nprint(1)\n```") == "print(1)"  # unfinished thinking: lcb takes the whole text
    assert extract_code("no fences") == ""


def test_stdio_comparison_semantics():
    assert stdio_match("3 \n 4\n\n", "3\n4") == (True, "")
    assert stdio_match("0.50 1e2\n", "0.5 100")[0]  # exact decimals
    assert not stdio_match("0.3333333\n", "0.3333334")[0]  # but no tolerance
    assert not stdio_match("3\n4\n", "3")[0]
    assert not stdio_match("Yes", "yes")[0]
    assert not stdio_match("sNaN", "sNaN x")[0]


def test_stdin_wrapping_as_lcb_runner():
    code = "import sys\nx = 1\nif __name__ == '__main__':\n    print(x)\n"
    wrapped = make_function(clean_if_name(code))
    assert "import sys\ndef wrapped_function():\n    x = 1\n    print(x)" in wrapped
    assert wrapped.startswith("from string import *\n")
    assert make_function("def (:") == "def (:"


def test_pass_at_k_hand_computed():
    recs = []
    for qid, diff, n, c in (("A", "easy", 4, 2), ("B", "easy", 4, 0), ("C", "hard", 4, 4), ("D", "hard", 1, 1)):
        recs += [{"question_id": qid, "difficulty": diff, "passed": i < c, "verdict": "passed" if i < c else
                  "wrong answer"} for i in range(n)]
    s = summarize(recs)
    # pass@1 = mean of c/n; pass@2 for A = 1 - C(2,2)/C(4,2) = 5/6; D (1 sample) only counts for k=1.
    assert s["all"]["pass@1"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert s["all"]["pass@2"] == pytest.approx((5 / 6 + 0 + 1) / 3)
    assert s["all"]["pass@4"] == pytest.approx((1 + 0 + 1) / 3)
    assert s["by_difficulty"]["easy"]["pass@2"] == pytest.approx(5 / 12)
    assert s["by_difficulty"]["hard"]["pass@1"] == pytest.approx(1.0)
    assert s["verdicts"] == {"passed": 7, "wrong answer": 6}
    # pass@3 for A: only 2 wrong samples, so any 3 contain a right one -> 1.
    assert summarize(recs, ks=[3])["all"] == {"problems": 4, "samples": 13, "pass@3": pytest.approx(2 / 3)}
