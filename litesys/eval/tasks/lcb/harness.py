"""Runs inside the sandbox: run one LiveCodeBench program on its test inputs and report what it produced.

Standalone (stdlib only, Python 3.9+) because the sandbox interpreter may not be the grader's. Usage inside the
sandbox: ``harness.py JOB.json``; the job holds the code, the I/O mode and the path of a file with the test
*inputs* (and ``fn_name``). The expected outputs never enter this process: the grader (judge.py) compares.

Channel: the harness's private copy of the original stdout; fds 0-2 become /dev/null before any program code
runs, so nothing the program prints reaches it. Messages are one JSON header line, followed by ``n`` raw bytes
when the header has ``n``:
  {"t": "load", "status": "ok" | "compile error" | "time limit", "detail"}
  {"t": "test", "i": i, "status": "ok" | "time limit" | "runtime error" | "output limit", "detail",
   "kind": "text" (UTF-8 output) | "json" (a functional result) | "nonplain" (a result that is not JSON data), "n"}
  {"t": "end", "threads": non-daemon threads still running a time limit after the last test}
After a failing test the harness ends (the first failing test ends the run, as in lcb_runner).

``io = "lcb_runner"`` keeps lcb_runner's semantics (so scores compare with published ones):
  * the same import prelude (``from math import *`` ... ``sys.setrecursionlimit(50000)``);
  * stdin problems: a trailing ``if __name__ == '__main__':`` is unwrapped, top-level imports stay at module
    level and every other statement becomes the body of ``wrapped_function``, called once per test with
    ``sys.stdin`` a StringIO of the input and ``sys.stdout`` captured; ``SystemExit`` ends the test normally;
  * functional problems: module executed once, ``Solution()`` instantiated when the code defines it,
    ``fn_name`` called with one JSON-decoded argument per input line; a tuple result counts as a list;
  * one per-test time limit; the same builtins are disabled.
``io = "script"`` runs a stdin program as a real script, once per test: ``python solution.py`` with the input
on a real stdin pipe and stdout a real pipe, no prelude, nothing rewritten; a nonzero exit status is a runtime
error. Functional problems run as under lcb_runner in both modes.
In both modes a program has not finished while a non-daemon thread it started still runs.
"""
from __future__ import annotations

import ast
import builtins
import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

# Names star-imported then imported, in lcb_runner's order (later star-imports shadow earlier ones).
_PRELUDE_MODULES = ["string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
                    "statistics", "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing"]
IMPORT_PRELUDE = "".join(f"from {m} import *\n" for m in _PRELUDE_MODULES) + "".join(
    f"import {m}\n" for m in _PRELUDE_MODULES if m not in ("builtins", "typing")) + "sys.setrecursionlimit(50000)\n"

OK, TIMEOUT, RUNTIME, COMPILE, OUTPUT_LIMIT = "ok", "time limit", "runtime error", "compile error", "output limit"

# Bound before any program code runs: a program that rebinds os.write or json.dumps cannot break the reports.
_write, _dumps, _monotonic, _getpid, _exit = os.write, json.dumps, time.monotonic, os.getpid, os._exit


class TimeoutException(Exception):  # an Exception, as in lcb_runner: a bare `except Exception` can swallow it
    pass


class OutputLimitExceeded(BaseException):
    pass


class NotPlainData(Exception):
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


class Channel:
    def __init__(self, fd: int) -> None:
        self.fd, self.pid = fd, _getpid()

    def send(self, header: dict, payload: bytes | None = None) -> None:
        if _getpid() != self.pid:  # a forked copy of the program returned into the harness: only the original reports
            _exit(0)
        if payload is not None:
            header["n"] = len(payload)
        data = (_dumps(header) + "\n").encode() + (payload or b"")
        while data:
            data = data[_write(self.fd, data):]


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


def plain(value, top: bool = True):  # noqa: ANN001, ANN201
    """The program's result as JSON data, read through the built-in types' own methods (never the program's
    ``__eq__``/``__str__``): what lcb_runner's ``==`` against a JSON value could ever find equal."""
    if value is None or type(value) is bool:
        return value
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, list):
        return [plain(v, False) for v in list.__iter__(value)]
    if top and isinstance(value, tuple):  # lcb_runner turns a top-level tuple into a list, nothing deeper
        return [plain(v, False) for v in tuple.__iter__(value)]
    if isinstance(value, dict):
        keys = list(dict.keys(value))
        if not all(type(k) is str for k in keys):  # a JSON object has string keys: never equal
            raise NotPlainData("a dict with non-string keys")
        return {str.__str__(k): plain(dict.__getitem__(value, k), False) for k in keys}
    if hasattr(type(value), "__index__"):  # e.g. numpy integers: compared by their integer value
        return int.__int__(type(value).__index__(value))
    raise NotPlainData(type(value).__name__)


def _short(x: object, n: int = 200) -> str:
    s = x if isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[: n // 2] + "...(truncated)..." + s[-n // 2:]


def _disable_builtins() -> None:
    """lcb_runner's reliability_guard: not a sandbox (the real one is outside), kept so the same programs fail."""
    import shutil

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


def _wait_threads(seconds: float) -> int:
    """Join the non-daemon threads the program left (as interpreter exit would); how many still run after
    ``seconds``."""
    deadline = _monotonic() + seconds
    main = threading.main_thread()
    for t in threading.enumerate():
        if t is not main and not t.daemon:
            t.join(max(0.0, deadline - _monotonic()))
    return sum(1 for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive())


class _Run:
    def __init__(self, job: dict, tests: dict, channel: Channel) -> None:
        self.code = job["code"]
        self.timeout = float(job["timeout"])
        self.output_cap = int(job.get("output_cap", 64 << 20))
        self.inputs = tests["inputs"]
        self.fn_name = tests.get("fn_name")
        self.ch = channel

    def load(self, source: str):  # noqa: ANN202 - the module, or None after reporting why not
        mod = type(sys)("tmp_sol", "")
        try:
            _arm(self.timeout)
            try:
                exec(compile(source, "<solution>", "exec"), mod.__dict__)
            finally:
                _disarm()
        except TimeoutException:
            self.ch.send({"t": "load", "status": TIMEOUT, "detail": "while loading the module"})
            return None
        except BaseException as e:
            self.ch.send({"t": "load", "status": COMPILE, "detail": _short(repr(e), 500)})
            return None
        return mod

    def fail(self, i: int, status: str, detail: str) -> bool:
        self.ch.send({"t": "test", "i": i, "status": status, "detail": _short(detail, 500)})
        return False

    def call_based(self) -> bool:
        mod = self.load(IMPORT_PRELUDE + "\n\n" + self.code)
        if mod is None:
            return False
        try:
            target = mod.Solution() if "class Solution" in self.code else mod
            method = getattr(target, self.fn_name)
        except BaseException as e:
            self.ch.send({"t": "load", "status": COMPILE, "detail": _short(repr(e), 500)})
            return False
        self.ch.send({"t": "load", "status": OK})
        for i, inp in enumerate(self.inputs):
            args = [json.loads(line) for line in inp.split("\n")]
            try:
                _arm(self.timeout)
                try:
                    got = method(*args)
                    try:  # under the alarm too: the program's own types are read here
                        value, kind = plain(got), "json"
                    except NotPlainData as e:
                        value, kind = str(e), "nonplain"
                finally:
                    _disarm()
            except TimeoutException:
                return self.fail(i, TIMEOUT, f"input {_short(inp)}")
            except BaseException as e:  # SystemExit too: it ended the whole lcb_runner process, a failure
                return self.fail(i, RUNTIME, f"{e!r} on input {_short(inp)}")
            if kind == "nonplain":
                payload = value.encode("utf-8", "replace")
            else:
                limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
                if limit:
                    sys.set_int_max_str_digits(0)  # the grader reads huge integers without converting them
                try:
                    payload = _dumps(value, allow_nan=True).encode()
                finally:
                    if limit:
                        sys.set_int_max_str_digits(limit)
            self.ch.send({"t": "test", "i": i, "status": OK, "kind": kind}, payload)
        return True

    def standard_input(self) -> bool:
        real_stdin, real_stdout, real_open = sys.stdin, sys.stdout, builtins.open
        mod = self.load(make_function(clean_if_name(self.code)))
        if mod is None:
            return False
        method = getattr(mod, "wrapped_function", None)
        if method is None:
            self.ch.send({"t": "load", "status": COMPILE, "detail": "the code defines no program"})
            return False
        self.ch.send({"t": "load", "status": OK})
        for i, gt_in in enumerate(self.inputs):
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
                return self.fail(i, TIMEOUT, f"input {_short(gt_in)}")
            except OutputLimitExceeded:
                return self.fail(i, OUTPUT_LIMIT, f"printed more than {self.output_cap} characters")
            except BaseException as e:
                if captured.overflowed:  # the program caught the first overflow and carried on
                    return self.fail(i, OUTPUT_LIMIT, f"printed more than {self.output_cap} characters")
                return self.fail(i, RUNTIME, f"{e!r} on input {_short(gt_in)}")
            finally:
                sys.stdin, sys.stdout, builtins.open = real_stdin, real_stdout, real_open
                for name in ("read", "readline", "readlines"):
                    real_stdin.__dict__.pop(name, None)
            if captured.overflowed:
                return self.fail(i, OUTPUT_LIMIT, f"printed more than {self.output_cap} characters")
            out = captured.getvalue().encode("utf-8", "surrogatepass")
            self.ch.send({"t": "test", "i": i, "status": OK, "kind": "text"}, out)
        return True

    def script(self) -> bool:
        """Each test: a fresh ``python solution.py`` with real stdin/stdout pipes, as a judge runs it."""
        with open("solution.py", "w", encoding="utf-8") as f:
            f.write(self.code)
        self.ch.send({"t": "load", "status": OK})
        for i, gt_in in enumerate(self.inputs):
            status, detail, out = run_script(sys.executable, "solution.py", gt_in.encode("utf-8", "surrogatepass"),
                                             self.timeout, self.output_cap)
            if status != OK:
                return self.fail(i, status, f"{detail} on input {_short(gt_in)}")
            self.ch.send({"t": "test", "i": i, "status": OK, "kind": "text"}, out)
        return True


def run_script(python: str, path: str, stdin: bytes, timeout: float, cap: int) -> tuple[str, str, bytes]:
    """(status, detail, stdout) of ``python path`` fed ``stdin``; the child's whole group is killed at the end."""
    proc = subprocess.Popen([python, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    deadline = _monotonic() + timeout
    out, pending = bytearray(), memoryview(stdin)
    wfd, rfd = proc.stdin.fileno(), proc.stdout.fileno()
    os.set_blocking(wfd, False)
    status = detail = None
    if not pending:
        proc.stdin.close()
    try:
        while status is None:
            left = deadline - _monotonic()
            if left <= 0:
                status, detail = TIMEOUT, f"still running after {timeout:g}s"
                break
            writers = [wfd] if pending else []
            r, w, _ = select.select([rfd], writers, [], min(left, 0.05))
            if w:
                try:
                    pending = pending[os.write(wfd, pending[:1 << 16]):]
                except (BrokenPipeError, BlockingIOError) as e:
                    if isinstance(e, BrokenPipeError):  # it stopped reading: fine, as with a terminal
                        pending = pending[:0]
                if not pending:
                    proc.stdin.close()
            if r:
                chunk = os.read(rfd, 1 << 16)
                if not chunk:
                    break
                out += chunk
                if len(out) > cap:
                    status, detail = OUTPUT_LIMIT, f"printed more than {cap} bytes"
            elif proc.poll() is not None:  # exited while a child of its own may hold stdout open
                break
        if status is None:
            try:
                code = proc.wait(max(0.0, deadline - _monotonic()))
            except subprocess.TimeoutExpired:  # closed stdout but kept running (e.g. a non-daemon thread)
                status, detail = TIMEOUT, f"still running after {timeout:g}s"
            else:
                if code != 0:
                    why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
                    status, detail = RUNTIME, why
                else:
                    status, detail = OK, ""
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass
    return status, detail, bytes(out)


def main(job_path: str) -> None:
    with open(job_path) as f:
        job = json.load(f)
    os.unlink(job_path)
    with open(job["inputs_path"]) as f:
        tests = json.load(f)
    # The reports go to a private copy of stdout; fds 0-2 become /dev/null so nothing the program writes
    # (print, os.write(1, ...), child processes) can reach the grader's channel.
    channel = Channel(os.dup(1))
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if hasattr(sys, "set_int_max_str_digits"):
        sys.set_int_max_str_digits(50000)
    signal.signal(signal.SIGALRM, _on_alarm)
    run = _Run(job, tests, channel)
    script = job.get("io") == "script" and not run.fn_name
    if not script:  # the program shares this process
        _disable_builtins()
    try:
        finished = run.call_based() if run.fn_name else run.script() if script else run.standard_input()
    except BaseException as e:  # anything escaping the per-test handlers (e.g. a late alarm)
        finished = False
        channel.send({"t": "test", "i": -1, "status": RUNTIME, "detail": f"harness: {e!r}"})
    if finished:
        channel.send({"t": "end", "threads": _wait_threads(run.timeout)})
    _exit(0)  # threads still running are not waited for again


if __name__ == "__main__":
    main(sys.argv[1])
