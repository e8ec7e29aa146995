"""Judging that programs cannot game: the answer key never reaches them, results are compared as plain data in
the grader, a program must finish to pass; both I/O semantics; a corrupt row among good ones.

Every program here is hand-written for these tests. The hunters look for an expected output that no program can
compute (a random token); a control problem, whose token sits in a file any user can read, shows the hunt itself
works.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from test_lcb_data import encode_private, problem
from test_lcb_grade import ADD, ADD_TO, grade, rows, write_generations

from litesys.eval.tasks.lcb import grade_main

REPO = Path(__file__).resolve().parents[1]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the full sandbox drops to unprivileged uids: run as root")
SUM = "a, b = map(int, input().split())\nprint(a + b)"

# Looks for a token matching PATTERN in one place (PLACE), prints it if found.
HUNT = r'''
import gc, os, re, stat, sys
PAT = re.compile(r"PREFIX-[0-9a-f]{32}")
def scan(data):
    if isinstance(data, bytes):
        data = data.decode("latin-1")
    m = PAT.search(data if isinstance(data, str) else repr(data))
    if m:
        print(m.group(0))
        raise SystemExit
def read(path, limit=1 << 22):
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a pipe would block
            return
        with open(path, "rb") as f:
            scan(f.read(limit))
    except (OSError, ValueError):
        pass
def walk(top, depth=6, seconds=4.0):
    # breadth first, for at most ``seconds``: shallow places (where a grader would leave a key) first, and a large
    # /tmp on a busy machine cannot push the hunt past the grader's time limit
    import time
    end, level = time.monotonic() + seconds, [top]
    for _ in range(depth):
        nxt = []
        for root in level:
            try:
                entries = list(os.scandir(root))
            except OSError:
                continue
            for e in entries:
                if time.monotonic() > end:
                    return
                if e.is_dir(follow_symlinks=False):
                    nxt.append(e.path)
                else:
                    read(e.path)
        level = nxt
def proc_chain():
    pid = os.getpid()
    while pid > 1:
        try:
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return
        yield pid
if PLACE == "frames":
    f = sys._getframe()
    while f is not None:
        for d in (f.f_locals, f.f_globals):
            for v in list(d.values()):
                scan(v)
        f = f.f_back
elif PLACE == "gc":
    for o in gc.get_objects():
        if isinstance(o, (dict, list, tuple)):
            try:
                scan(o)
            except RecursionError:
                pass
elif PLACE == "cwd":
    walk(".")
elif PLACE == "tmp":
    for top in ("/tmp", "/var/tmp", "/dev/shm"):
        walk(top)
elif PLACE == "grader folder":
    for pid in proc_chain():
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().decode().split("\0")
        except OSError:
            continue
        for d in (f"/proc/{pid}/cwd", f"/proc/{pid}/root/tmp"):
            walk(d, 3)
        for a in args:  # its folders, its files and the files next to them
            if not a.startswith("/"):
                continue
            if os.path.isdir(a):
                walk(a)
            elif os.path.isfile(a) and not os.access(a, os.X_OK):
                read(a)
                walk(os.path.dirname(a), 1)
elif PLACE == "proc":
    for pid in proc_chain():
        for name in ("environ", "cmdline", "maps", "status"):
            read(f"/proc/{pid}/{name}")
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                read(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
        try:
            maps = open(f"/proc/{pid}/maps").read().splitlines()
            with open(f"/proc/{pid}/mem", "rb") as mem:
                for line in maps:  # its heap, stack and anonymous memory
                    f = line.split()
                    lo, hi = (int(x, 16) for x in f[0].split("-"))
                    if "r" in f[1] and (len(f) < 6 or f[5] in ("[heap]", "[stack]")) and hi - lo <= 1 << 26:
                        try:
                            mem.seek(lo)
                            scan(mem.read(hi - lo))
                        except (OSError, ValueError, OverflowError):
                            pass
        except OSError:
            pass
elif PLACE == "environment":
    scan(dict(os.environ))
print("nothing")
'''


def hunter(place: str, prefix: str = "SECRET") -> str:
    return HUNT.replace("PREFIX", prefix).replace("PLACE", repr(place))


PLACES = ("frames", "gc", "cwd", "tmp", "grader folder", "proc", "environment")


@ROOT_ONLY
def test_programs_cannot_find_the_answer_key(tmp_path):
    token, control = f"SECRET-{secrets.token_hex(16)}", f"CONTROL-{secrets.token_hex(16)}"
    # The expected output is the token (public tests: plain JSON in every generation line); the input says nothing.
    key = problem("key", public=[{"input": "go\n", "output": token + "\n", "testtype": "stdin"}],
                  private=encode_private([{"input": "go again\n", "output": token + "\n", "testtype": "stdin"}]))
    ctl = problem("control", public=[{"input": "go\n", "output": control + "\n", "testtype": "stdin"}])
    # The grader works in a folder every user can read; the generations sit in a private folder inside it (as
    # eval_lcb.py makes them), the verdict file (whose details quote expected outputs) right in it.
    grader_dir = Path(tempfile.mkdtemp(prefix="lcb-grader-"))
    hint = Path(tempfile.mkdtemp(prefix="lcb-control-"))
    try:
        os.chmod(grader_dir, 0o755)
        os.chmod(hint, 0o755)
        (hint / "hint.txt").write_text(control)  # what the control hunter should find
        os.chmod(hint / "hint.txt", 0o644)
        gen = grader_dir / "gen"
        gen.mkdir(mode=0o700)
        cases = [(key, hunter(p)) for p in PLACES] + [(ctl, hunter("tmp", "CONTROL"))]
        # always-true ==, in a functional problem: the result is compared as the int it is
        eq = "class E(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
        cases.append((ADD_TO, eq + "class Solution:\n    def addTo(self, nums, k):\n        return E(0)"))
        cases.append((ADD_TO, eq + "class L(list):\n    def __eq__(self, o):\n        return True\n"
                              "class Solution:\n    def addTo(self, nums, k):\n        return L([E(0)])"))
        # print the answer, then leave at once (its output is lost under lcb_runner, block-buffered as a script)
        cases.append((ADD, SUM + "\nimport os\nos._exit(0)"))
        # ... and, before leaving, forge reports on every descriptor that might be the verdict channel
        forge = ('{"t": "load", "status": "ok"}\n' + "".join(
            f'{{"t": "test", "i": {i}, "status": "ok", "kind": "text", "n": 2}}\n3\n' for i in range(3))
            + '{"t": "end", "threads": 0}\n{"verdict": "passed", "tests_passed": 3, "tests_total": 3}\n')
        cases.append((ADD, SUM + f"\nimport os\nfor fd in range(3, 20):\n    try:\n        os.write(fd, {forge!r}"
                                 ".encode())\n    except OSError:\n        pass\nos._exit(0)"))
        # the answer, then a non-daemon thread that outlives the time limit
        cases.append((ADD, SUM + "\nimport threading, time\nthreading.Thread(target=time.sleep, args=(30,)).start()"))
        write_generations(gen / "samples.0.jsonl", cases)
        env = dict(os.environ, LITESYS_NO_PROGRESS="1", LITESYS_TEST_SECRET=token)  # the grader's env has it
        proc = subprocess.run([sys.executable, str(REPO / "grade_lcb.py"), "--output_dir", str(gen),
                               "--output_file", str(grader_dir / "verdicts.jsonl"), "--workers", "2", "--timeout",
                               "6", "--memory_mb", "1024"],  # 6 s: a hunt finishes on busy CI cores
                              cwd=grader_dir, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        recs = {(r["line"], r["io"]): r for r in rows(grader_dir / "verdicts.jsonl")[1]}
        names = [f"hunt: {p}" for p in PLACES] + ["control", "== always true", "list == always true",
                                                   "print, os._exit(0)", "forged reports, os._exit(0)",
                                                   "non-daemon thread"]
        for io in ("lcb_runner", "script"):
            got = {name: recs[i, io] for i, name in enumerate(names, 1)}
            assert got["control"]["verdict"] == "passed", got["control"]  # the hunt works where there is a key
            for name in names[:len(PLACES)]:
                assert got[name]["verdict"] == "wrong answer" and "nothing" in got[name]["detail"], (io, got[name])
            for name in ("== always true", "list == always true"):
                assert got[name]["verdict"] == "wrong answer" and "got" in got[name]["detail"], (io, got[name])
            for name in ("print, os._exit(0)", "forged reports, os._exit(0)"):
                assert not got[name]["passed"], (io, got[name])
            assert got["non-daemon thread"]["verdict"] == "time limit", (io, got["non-daemon thread"])
        assert oct((grader_dir / "verdicts.jsonl").stat().st_mode & 0o777) == "0o600"

        # A generation folder other users can read is refused before anything is written: programs could read it.
        os.chmod(gen, 0o755)
        proc = subprocess.run([sys.executable, str(REPO / "grade_lcb.py"), "--output_dir", "gen", "--output_file",
                               "v2.jsonl"], cwd=grader_dir, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "the sandbox users can read" in proc.stderr
        assert "chmod o-rwx gen" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not (grader_dir / "v2.jsonl").exists()
    finally:
        shutil.rmtree(grader_dir, ignore_errors=True)
        shutil.rmtree(hint, ignore_errors=True)


# ---- both I/O semantics -----------------------------------------------------------------------------------------
# (code, lcb_runner verdict, script verdict): what lcb_runner does with each (its stdin is a StringIO without
# .buffer; open is the one its prelude star-imported, reading the process's real, empty stdin; statements run
# inside a function, so `global` names a module variable that was never set) and what a terminal does.
IO_CASES = [
    (SUM, "passed", "passed"),
    ("import sys\na, b = map(int, sys.stdin.buffer.read().split())\nprint(a + b)", "runtime error", "passed"),
    ("a, b = map(int, open(0).read().split())\nprint(a + b)", "runtime error", "passed"),
    ("count = 0\ndef bump():\n    global count\n    count += 1\nbump()\na, b = map(int, input().split())\n"
     "print(a + b + count - 1)", "runtime error", "passed"),
    ("import sys\ndef main():\n    a, b = map(int, sys.stdin.readline().split())\n    print(a + b)\n    sys.exit(0)\n"
     "if __name__ == '__main__':\n    main()", "passed", "passed"),
    ("import sys\nprint(sum(map(int, input().split())))\nsys.exit(3)", "passed", "runtime error"),
    ("print(sum(map(int, input().split())))\nprint(undefined_name)", "runtime error", "runtime error"),
]


def test_io_modes_graded_and_reported_together(tmp_path, capsys):
    gen = tmp_path / "gen"
    func = "class Solution:\n    def addTo(self, nums, k):\n        return [x + k for x in nums]"
    write_generations(gen / "samples.0.jsonl", [(ADD, code) for code, _, _ in IO_CASES] + [(ADD_TO, func)])
    summary, recs = grade(gen, None, "--workers", "2", "--timeout", "2")  # --io both is the default
    got = {(r["line"], r["io"]): r["verdict"] for r in recs}
    for i, (code, lcb, script) in enumerate(IO_CASES, 1):
        assert (got[i, "lcb_runner"], got[i, "script"]) == (lcb, script), code
    n = len(IO_CASES) + 1
    assert got[n, "lcb_runner"] == got[n, "script"] == "passed"  # functional problems: the same in both
    # Headline = lcb_runner; both modes' pass@1 reported; the problem where they differ is listed with its samples.
    assert summary["headline_io"] == "lcb_runner" and summary["all"] == summary["io"]["lcb_runner"]["all"]
    lcb_pass = sum(v == "passed" for _, v, _ in IO_CASES) / len(IO_CASES)
    script_pass = sum(v == "passed" for _, _, v in IO_CASES) / len(IO_CASES)
    assert summary["io"]["lcb_runner"]["all"]["pass@1"] == pytest.approx((lcb_pass + 1) / 2)
    assert summary["io"]["script"]["all"]["pass@1"] == pytest.approx((script_pass + 1) / 2)
    (diff,) = summary["io_differences"]
    assert diff["question_id"] == "add" and len(diff["samples"]) == 4
    assert diff["lcb_runner"] == {"passed": 3, "samples": 7} and diff["script"] == {"passed": 5, "samples": 7}
    out = capsys.readouterr().out
    assert "--io lcb_runner (headline):" in out and "--io script:" in out
    assert "I/O modes differ on 1 problem(s):" in out and "add: passed lcb_runner 3/7, script 5/7" in out


def test_an_endless_printer_is_stopped_by_the_output_cap(tmp_path):
    # With the clock far away, only the output cap (64 M characters) can end these runs: a wrong answer long before
    # the time limit, in both I/O modes (test_lcb_sandbox.py's hostile list races it against a 1 s clock).
    gen = tmp_path / "gen"
    lines, chunk = "while True:\n    print('y' * 9999)", "import sys\nwhile True:\n    sys.stdout.write('z' * 65536)"
    write_generations(gen / "samples.0.jsonl", [(ADD, lines), (ADD, chunk)])
    _, recs = grade(gen, None, "--workers", "2", "--timeout", "60")
    assert len(recs) == 4
    for r in recs:
        assert r["verdict"] == "wrong answer" and "printed more than" in r["detail"], r
        assert r["elapsed_s"] < 30, r


# ---- a corrupt row among good ones --------------------------------------------------------------------------------
def test_corrupt_row_gets_its_own_verdict(tmp_path, capsys):
    gen = tmp_path / "gen"
    good = [(ADD, SUM if i % 2 else "print(3)") for i in range(20)]
    write_generations(gen / "samples.0.jsonl", good[:10])
    corrupt = dict(ADD, question_id="broken", private_test_cases="!!! not base64 !!!")
    write_generations(gen / "samples.0.jsonl", [(corrupt, SUM)], trial0=10)
    write_generations(gen / "samples.0.jsonl", good[10:], trial0=11)
    out = gen / "verdicts.jsonl"
    argv = ["--output_dir", str(gen), "--workers", "2", "--timeout", "2", "--io", "lcb_runner"]
    with pytest.raises(SystemExit) as e:  # --strict: exit 2, one line, nothing written
        grade_main.main([*argv, "--strict"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "--strict:" in err[-1] and "problem broken" in err[-1] and not out.exists()
    summary = grade_main.main(argv)  # returns: exit status 0
    printed = capsys.readouterr()
    err = printed.err
    assert "samples.0.jsonl:11: problem broken: bad test data: private_test_cases: test cases are neither JSON" \
           in err
    recs = rows(out)[1]
    assert len(recs) == 21
    bad = [r for r in recs if r["verdict"] == "bad_test_data"]
    assert [(r["line"], r["question_id"], r["passed"]) for r in bad] == [(11, "broken", False)]
    assert sorted(r["verdict"] for r in recs if r not in bad) == ["passed"] * 10 + ["wrong answer"] * 10
    # reported apart, never scored: 1 problem with 20 samples, pass@1 = 1/2
    assert summary["all"] == {"problems": 1, "samples": 20, **{k: v for k, v in summary["all"].items()
                                                              if k.startswith("pass@")}}
    assert summary["all"]["pass@1"] == pytest.approx(0.5)
    assert summary["bad_test_data"]["problems"] == 1 and summary["bad_test_data"]["samples"] == 1
    assert "bad test data (not scored): 1 problem(s), 1 sample(s): broken" in printed.out
    # a malformed line (a field missing) is such a row too; the rerun grades only it
    with open(gen / "samples.0.jsonl", "a") as f:
        f.write(json.dumps({"question_id": "add", "output_text": "```python\nprint(3)\n```"}) + "\n")
    summary = grade_main.main(argv)
    assert summary["bad_test_data"]["samples"] == 2 and len(rows(out)[1]) == 22
    assert "lacks difficulty" in rows(out)[1][-1]["detail"]
