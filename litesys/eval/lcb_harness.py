"""Runs inside the sandbox: execute one LiveCodeBench solution against its tests, as lcb_runner does.

Standalone (stdlib only, Python 3.9+) because it is executed by the sandbox interpreter, which may not be
the grader's. Usage inside the sandbox: ``harness.py JOB.json`` where the job names the tests file; prints
one JSON verdict on the original stdout, which the program itself cannot reach through ``print``.

Semantics kept from lcb_runner (so scores compare with published ones):
  * the same import prelude (``from math import *`` ... ``sys.setrecursionlimit(50000)``);
  * stdin problems: a trailing ``if __name__ == '__main__':`` is unwrapped, top-level imports stay at module
    level and every other statement becomes the body of ``wrapped_function``, called once per test with
    ``sys.stdin`` a StringIO of the input and ``sys.stdout`` captured; ``SystemExit`` ends the test normally;
    the output matches when the stripped lines are equal one by one, as strings or as exact decimals;
  * functional problems: module executed once, ``Solution()`` instantiated when the code defines it,
    ``fn_name`` called with one JSON-decoded argument per input line; tuples compare as lists;
  * one per-test time limit; the first failing test ends the run; the same builtins are disabled.
"""
from __future__ import annotations

import ast
import builtins
import io
import json
import os
import signal
import sys
import time
import types
from decimal import Decimal

# Names star-imported then imported, in lcb_runner's order (later star-imports shadow earlier ones).
_PRELUDE_MODULES = ["string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
                    "statistics", "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing"]
IMPORT_PRELUDE = "".join(f"from {m} import *\n" for m in _PRELUDE_MODULES) + "".join(
    f"import {m}\n" for m in _PRELUDE_MODULES if m not in ("builtins", "typing")) + "sys.setrecursionlimit(50000)\n"

PASSED, WRONG, TIMEOUT, RUNTIME, COMPILE = "passed", "wrong answer", "time limit", "runtime error", "compile error"


class TimeoutException(Exception):  # an Exception, as in lcb_runner: a bare `except Exception` can swallow it
    pass


class OutputLimitExceeded(BaseException):
    pass


class _CappedStringIO(io.StringIO):
    """Captured stdout: a StringIO (no ``.buffer``, as in lcb_runner) that refuses to grow past a cap."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self._left = cap
        self.overflowed = False

    def write(self, s):  # noqa: ANN001 - mirrors io.StringIO.write
        if not isinstance(s, str):
            return super().write(s)  # raises the usual TypeError
        self._left -= len(s)
        if self._left < 0:
            self.overflowed = True
            raise OutputLimitExceeded(f"output exceeded {self._left + len(s)} more characters")
        return super().write(s)


def clean_if_name(code: str) -> str:
    """Unwrap a trailing ``if __name__ == '__main__':`` block (its body runs at top level instead)."""
    try:
        tree = ast.parse(code)
        last = tree.body[-1]
        if isinstance(last, ast.If) and ast.unparse(last.test).strip() == "__name__ == '__main__'":
            code = ast.unparse(tree.body[:-1]) + "\n" + ast.unparse(last.body)
    except Exception:
        pass
    return code


def make_function(code: str) -> str:
    """Prelude + the code's top-level imports + every other statement inside ``def wrapped_function():``."""
    try:
        tree = ast.parse(code)
        imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
        rest = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
        func = ast.parse("def wrapped_function():\n    pass\n").body[0]
        func.body = rest or [ast.Pass()]
        return IMPORT_PRELUDE + "\n" + ast.unparse(imports) + "\n" + ast.unparse(func)
    except Exception:
        return code


def stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except Exception:
        return None


def stdio_match(got: str, expected: str) -> tuple[bool, str]:
    """lcb_runner's stdin comparison: same number of stripped lines; each equal as text or as decimals."""
    got_lines, exp_lines = stripped_lines(got), stripped_lines(expected)
    if len(got_lines) != len(exp_lines):
        return False, f"{len(got_lines)} output lines, expected {len(exp_lines)}"
    for i, (a, b) in enumerate(zip(got_lines, exp_lines)):
        if a == b:
            continue
        da, db = _decimals(a), _decimals(b)
        try:
            if da is not None and db is not None and da == db:
                continue
        except Exception:  # e.g. signalling NaN
            pass
        return False, f"line {i}: {_short(a)} != {_short(b)}"
    return True, ""


def _short(x: object, n: int = 200) -> str:
    s = x if isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[: n // 2] + "...(truncated)..." + s[-n // 2:]


def _disable_builtins() -> None:
    """lcb_runner's reliability_guard: not a sandbox (the real one is outside), kept so the same programs fail."""
    import shutil
    import subprocess

    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
                 "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
                 "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    shutil.rmtree = shutil.move = shutil.chown = None
    subprocess.Popen = None
    builtins.help = None
    for mod in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[mod] = None


def _on_alarm(signum, frame):  # noqa: ANN001
    raise TimeoutException("time limit")


def _arm(seconds: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _disarm() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


class _Run:
    def __init__(self, job: dict, tests: dict) -> None:
        self.code = job["code"]
        self.timeout = float(job["timeout"])
        self.output_cap = int(job.get("output_cap", 64 << 20))
        self.inputs, self.outputs = tests["inputs"], tests["outputs"]
        self.fn_name = tests.get("fn_name")
        self.passed = 0

    def verdict(self, verdict: str, detail: str = "") -> dict:
        return {"verdict": verdict, "tests_passed": self.passed, "tests_total": len(self.inputs),
                "detail": _short(detail, 500)}

    def _load(self, source: str):  # noqa: ANN202
        mod = types.ModuleType("tmp_sol", "")
        _arm(self.timeout)
        try:
            exec(compile(source, "<solution>", "exec"), mod.__dict__)
        finally:
            _disarm()
        return mod

    def call_based(self) -> dict:
        try:
            mod = self._load(IMPORT_PRELUDE + "\n\n" + self.code)
            target = mod.Solution() if "class Solution" in self.code else mod
            method = getattr(target, self.fn_name)
        except TimeoutException:
            return self.verdict(TIMEOUT, "while loading the module")
        except BaseException as e:
            return self.verdict(COMPILE, repr(e))
        try:
            args = [[json.loads(line) for line in inp.split("\n")] for inp in self.inputs]
            expected = [json.loads(out) for out in self.outputs]
        except Exception as e:
            return self.verdict(RUNTIME, f"test data is not JSON: {e!r}")
        for gt_in, gt_out in zip(args, expected):
            try:
                _arm(self.timeout)
                try:
                    got = method(*gt_in)
                finally:
                    _disarm()
                if isinstance(got, tuple):
                    got = list(got)
                ok = got == gt_out
            except TimeoutException:
                return self.verdict(TIMEOUT, f"input {_short(gt_in)}")
            except BaseException as e:  # SystemExit too: it ended the whole lcb_runner process, a failure
                return self.verdict(RUNTIME, f"{e!r} on input {_short(gt_in)}")
            if not ok:
                return self.verdict(WRONG, f"got {_short(got)}, expected {_short(gt_out)} on {_short(gt_in)}")
            self.passed += 1
        return self.verdict(PASSED)

    def standard_input(self) -> dict:
        real_stdin, real_stdout, real_open = sys.stdin, sys.stdout, builtins.open
        try:
            mod = self._load(make_function(clean_if_name(self.code)))
            method = mod.wrapped_function
        except TimeoutException:
            return self.verdict(TIMEOUT, "while loading the module")
        except BaseException as e:
            return self.verdict(COMPILE, repr(e))
        for gt_in, gt_out in zip(self.inputs, self.outputs):
            lines = iter(gt_in.split("\n"))
            # As lcb_runner's patches: names bound to the process stdin at import time see these readers ...
            real_stdin.read = lambda *a, _s=gt_in: _s
            real_stdin.readline = lambda *a, _it=lines: next(_it)
            real_stdin.readlines = lambda *a, _s=gt_in: _s.split("\n")
            # ... while sys.stdin, looked up at call time, is a plain StringIO, and open() returns the input.
            sys.stdin = io.StringIO(gt_in)
            builtins.open = lambda *a, _s=gt_in, **k: io.StringIO(_s)
            captured = _CappedStringIO(self.output_cap)
            sys.stdout = captured
            try:
                _arm(self.timeout)
                try:
                    method()
                except SystemExit:
                    pass
                finally:
                    _disarm()
            except TimeoutException:
                return self.verdict(TIMEOUT, f"input {_short(gt_in)}")
            except OutputLimitExceeded:
                return self.verdict(WRONG, f"printed more than {self.output_cap} characters")
            except BaseException as e:
                if captured.overflowed:  # the program caught the first overflow and carried on
                    return self.verdict(WRONG, f"printed more than {self.output_cap} characters")
                return self.verdict(RUNTIME, f"{e!r} on input {_short(gt_in)}")
            finally:
                sys.stdin, sys.stdout, builtins.open = real_stdin, real_stdout, real_open
                for name in ("read", "readline", "readlines"):
                    real_stdin.__dict__.pop(name, None)
            if captured.overflowed:
                return self.verdict(WRONG, f"printed more than {self.output_cap} characters")
            ok, why = stdio_match(captured.getvalue(), gt_out)
            if not ok:
                return self.verdict(WRONG, f"{why} on input {_short(gt_in)}")
            self.passed += 1
        return self.verdict(PASSED)


def main(job_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    os.unlink(job_path)
    with open(job["tests_path"]) as f:
        tests = json.load(f)
    # The verdict goes to a private copy of stdout; fds 0-2 become /dev/null so nothing the program writes
    # (print, os.write(1, ...), child processes) can reach the grader.
    result_fd = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(50000)
    signal.signal(signal.SIGALRM, _on_alarm)
    run = _Run(job, tests)
    me = os.getpid()
    start = time.monotonic()
    _disable_builtins()
    try:
        result = run.call_based() if run.fn_name else run.standard_input()
    except BaseException as e:  # anything escaping the per-test handlers (e.g. a late alarm)
        result = run.verdict(RUNTIME, f"harness: {e!r}")
    if os.getpid() != me:  # a forked copy of this process unwound to here: only the original reports
        os._exit(1)
    result["elapsed_s"] = round(time.monotonic() - start, 3)
    data = (json.dumps(result) + "\n").encode()
    while data:
        data = data[os.write(result_fd, data):]
    os._exit(0)  # do not wait for threads the program left running


if __name__ == "__main__":
    main(sys.argv[1])
