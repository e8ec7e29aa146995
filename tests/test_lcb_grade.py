"""grade_lcb.py end to end on small problems of both kinds: verdicts, resume, bad input, the pool's watchdog."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from test_lcb_data import encode_private, problem

from litesys.eval.tasks.lcb import grade_main
from litesys.eval.tasks.lcb.grade import RUNTIME, Program, ProgramPool, Verdict


def fenced(code: str) -> str:
    return f"<think>\nfine\n</think>\nHere it is:\n```python\n{code}\n```\n"


ADD = problem("add", public=[{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}],
              private=encode_private([{"input": "10 20\n", "output": "30\n", "testtype": "stdin"},
                                      {"input": "-5 5\n", "output": "0\n", "testtype": "stdin"}]))
STARTER = "class Solution:\n    def addTo(self, nums: List[int], k: int) -> List[int]:\n        "
ADD_TO = problem("addTo", starter=STARTER, func="addTo", difficulty="medium",
                 public=[{"input": "[1, 2]\n3", "output": "[4, 5]", "testtype": "functional"}],
                 private=encode_private([{"input": "[]\n1", "output": "[]", "testtype": "functional"},
                                         {"input": "[-1]\n1", "output": "[0]", "testtype": "functional"}]))

# (problem, code or None for an answer without code, expected verdict, tests passed)
CASES = [
    (ADD, "a, b = map(int, input().split())\nprint(a + b)", "passed", 3),
    (ADD, "import sys\ndef main():\n    a, b = map(int, sys.stdin.readline().split())\n    print(a + b)\n"
          "if __name__ == '__main__':\n    main()", "passed", 3),
    (ADD, "a, b = map(int, input().split())\nprint(a + b)\nexit()", "passed", 3),
    (ADD, "print(3)", "wrong answer", 1),
    (ADD, "print(1 / 0)", "runtime error", 0),
    (ADD, "print(", "compile error", 0),
    (ADD, "while True:\n    pass", "time limit", 0),
    (ADD, None, "no code", 0),
    (ADD_TO, "class Solution:\n    def addTo(self, nums, k):\n        return [x + k for x in nums]", "passed", 3),
    (ADD_TO, "class Solution:\n    def addTo(self, nums, k):\n        return tuple(x + k for x in nums)", "passed", 3),
    (ADD_TO, "def addTo(nums, k):\n    return [x + k for x in nums]", "passed", 3),
    (ADD_TO, "class Solution:\n    def addTo(self, nums, k):\n        return [x + k for x in nums if x >= 0]",
     "wrong answer", 2),
    (ADD_TO, "class Solution:\n    def other(self, nums, k):\n        return nums", "compile error", 0),
]


def write_generations(path: Path, cases: list, trial0: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for i, (prob, code, *_rest) in enumerate(cases):
            text = fenced(code) if code is not None else "I cannot solve this."
            fields = {k: prob[k] for k in grade_main.LINE_FIELDS}
            f.write(json.dumps({**fields, "trial": trial0 + i, "seed": 7, "finish_reason": "stop",
                                "output_text": text}) + "\n")


def rows(out: Path) -> tuple[dict, list[dict]]:
    """The verdict file's header and rows."""
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    return lines[0], lines[1:]


def grade(gen_dir: Path, out: Path | None, *extra: str) -> tuple[dict, list[dict]]:
    argv = ["--output_dir", str(gen_dir), *(["--output_file", str(out)] if out else []), *extra]
    summary = grade_main.main(argv)
    return summary, rows(out or gen_dir / "verdicts.jsonl")[1]


def test_verdicts_both_formats_and_resume(tmp_path, capsys):
    gen = tmp_path / "gen"
    write_generations(gen / "run1" / "samples.0.jsonl", CASES[:7])
    write_generations(gen / "run2" / "samples.0.jsonl", CASES[7:], trial0=7)  # two runs grade together
    out = gen / "verdicts.jsonl"  # the default: inside the generation folder, and never taken for samples
    start = time.monotonic()
    flags = ("--workers", "2", "--timeout", "1", "--io", "lcb_runner")
    summary, recs = grade(gen, None, *flags)
    assert time.monotonic() - start < 60
    header = rows(out)[0]
    assert header["format"] == "litesys-lcb-verdicts" and header["config"]["timeout"] == 1.0
    assert header["config"]["memory_mb"] == 4096 and oct(out.stat().st_mode & 0o777) == "0o600"
    got = {(r["source"], r["line"]): (r["verdict"], r["tests_passed"]) for r in recs}
    want = {(f"run{1 if i < 7 else 2}/samples.0.jsonl", i + 1 if i < 7 else i - 6): (v, n)
            for i, (_, _, v, n) in enumerate(CASES)}
    assert got == want
    assert all(r["tests_total"] == 3 and r["io"] == "lcb_runner" for r in recs if r["verdict"] != "no code")
    assert {r["question_id"] for r in recs if r["passed"]} == {"add", "addTo"}
    # pass@1 per problem = share of passing samples: add 3/8, addTo 3/5.
    assert summary["all"]["pass@1"] == pytest.approx((3 / 8 + 3 / 5) / 2)
    assert summary["by_difficulty"]["easy"]["pass@1"] == pytest.approx(3 / 8)
    assert summary["by_difficulty"]["medium"]["pass@1"] == pytest.approx(3 / 5)
    assert "pass@4" in summary["all"] and summary["headline_io"] == "lcb_runner"
    printed = capsys.readouterr().out
    assert "easy" in printed and "medium" in printed and "37.50%" in printed
    assert json.loads((gen / "verdicts.summary.json").read_text()) == summary

    # Rerun: the verdict file in the folder is skipped, nothing new to grade, the same summary.
    summary2, recs2 = grade(gen, None, *flags)
    results = lambda x: {k: v for k, v in x.items() if k != "run_info"}  # noqa: E731 - run_info: times differ
    assert recs2 == recs and results(summary2) == results(summary) and summary2["run_info"]["versions"]
    # A new sample (and a torn verdict line from a killed run): only the new one is graded.
    with open(out, "a") as f:
        f.write('{"key": "torn')
    write_generations(gen / "run2" / "samples.0.jsonl", [CASES[0]], trial0=20)
    _, recs3 = grade(gen, None, *flags)
    assert recs3[:len(recs)] == recs and len(recs3) == len(recs) + 1
    assert recs3[-1]["verdict"] == "passed" and recs3[-1]["trial"] == 20
    # Other limits regrade everything (the old verdicts move aside) instead of reusing verdicts of other limits.
    capsys.readouterr()
    _, recs4 = grade(gen, None, *flags[:3], "2", *flags[4:])
    assert "graded with other settings (timeout 1.0 -> 2.0)" in capsys.readouterr().err
    assert rows(out)[0]["config"]["timeout"] == 2.0 and len(recs4) == len(recs3)
    assert rows(gen / "verdicts.jsonl.old")[1] == recs3
    # --io script adds the other mode's rows to the same file, the lcb_runner rows are kept.
    summary5, recs5 = grade(gen, None, *flags[:3], "2", "--io", "both")
    assert recs5[:len(recs4)] == recs4 and {r["io"] for r in recs5[len(recs4):]} == {"script"}
    assert set(summary5["io"]) == {"lcb_runner", "script"} and summary5["io_differences"] == []


def _exit_code_and_error(capsys, argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        grade_main.main(argv)
    err = capsys.readouterr().err.strip()
    return e.value.code, err


def test_bad_input_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "v.jsonl"
    code, err = _exit_code_and_error(capsys, ["--output_dir", str(tmp_path / "nope"), "--output_file", str(out)])
    assert code == 2 and "is not a folder" in err and "\n" not in err
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "a.jsonl").write_text(json.dumps({k: ADD[k] for k in grade_main.LINE_FIELDS}) + "\n")
    code, err = _exit_code_and_error(capsys, ["--output_dir", str(gen), "--output_file", str(out)])
    assert code == 2 and "a.jsonl:1 has no output_text" in err and "\n" not in err
    (gen / "a.jsonl").unlink()
    code, err = _exit_code_and_error(capsys, ["--output_dir", str(gen), "--output_file", str(out)])
    assert code == 2 and "no *.jsonl generations under" in err
    write_generations(gen / "b.jsonl", CASES[:1])
    for flags, msg in ((["--timeout", "0"], "--timeout must be > 0"), (["--io", "tty"], "argument --io"),
                       (["--k", "0"], "--k must be comma-separated integers >= 1"),
                       (["--memory_mb", "10"], "--memory_mb must be >= 256")):
        code, err = _exit_code_and_error(capsys, ["--output_dir", str(gen), "--output_file", str(out), *flags])
        assert code == 2 and msg in err and "\n" not in err, (flags, err)
    assert not out.exists() and not (tmp_path / "v.summary.json").exists()
    if os.geteuid() == 0:  # the uid range is only used as root
        code, err = _exit_code_and_error(capsys, ["--output_dir", str(gen), "--output_file", str(out), "--workers",
                                                  "3", "--sandbox_uid_base", "65532"])
        assert code == 2 and "sandbox uid 65534 is outside" in err
        assert not out.exists()


def test_pool_writes_off_a_stuck_worker():
    """A runner that never returns must not hang the pool: its sample is marked, a new worker takes over."""
    release = threading.Event()
    killed = []

    def runner(slot: int, p: Program) -> Verdict:
        if p.key == "stuck":
            release.wait(60)  # wedged (until the test ends)
        return Verdict("passed", p.n_tests, p.n_tests)

    programs = [Program(k, "", "", 1) for k in ("a", "stuck", "b", "c", "d")]
    pool = ProgramPool(runner, workers=2, deadline=lambda p: 0.2, kill_slot=killed.append, stuck_grace_s=0.3)
    done = {}
    start = time.monotonic()
    pool.run(programs, lambda p, v: done.__setitem__(p.key, v))
    release.set()
    assert time.monotonic() - start < 5
    assert set(done) == {"a", "stuck", "b", "c", "d"}
    assert done["stuck"].verdict == RUNTIME and "stuck" in done["stuck"].detail
    assert all(done[k].passed for k in "abcd")
    assert len(killed) == 1 and pool.stuck == 1


@pytest.mark.slow
def test_200_programs_two_workers_match_one(tmp_path):
    kinds = [(ADD, "a, b = map(int, input().split())\nprint(a + b)"), (ADD, "print(3)"), (ADD, "print(1 / 0)"),
             (ADD_TO, "class Solution:\n    def addTo(self, nums, k):\n        return [x + k for x in nums]"),
             (ADD_TO, "class Solution:\n    def addTo(self, nums, k):\n        return nums")]
    cases = [kinds[i % len(kinds)] for i in range(200)]
    write_generations(tmp_path / "gen" / "samples.0.jsonl", cases)
    _, one = grade(tmp_path / "gen", tmp_path / "one.jsonl", "--workers", "1", "--io", "lcb_runner")
    start = time.monotonic()
    _, two = grade(tmp_path / "gen", tmp_path / "two.jsonl", "--workers", "2", "--io", "lcb_runner")
    assert time.monotonic() - start < 120
    strip = lambda recs: {r["key"]: (r["verdict"], r["tests_passed"]) for r in recs}  # noqa: E731
    assert len(two) == 200 and strip(two) == strip(one)
    assert sum(r["passed"] for r in two) == 80
