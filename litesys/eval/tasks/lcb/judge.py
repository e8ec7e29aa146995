"""The grader's side of one program run: read the harness's reports, compare them with the expected outputs.

This runs in the grader process only: the sandboxed process gets the code and the test inputs, never the
expected outputs. Every comparison is between plain values decoded here from the bytes the harness sent
(text lines, JSON), never the program's own objects or ``__eq__``. A report the harness would not send (out
of order, malformed, oversized) fails the sample. A test counts only when the program then also finishes:
all its reports, the harness's final report (no non-daemon thread left running), a clean exit in time.
"""
from __future__ import annotations

import json
import signal
from dataclasses import asdict, dataclass
from decimal import Decimal

from litesys.eval.sandbox import RunResult

PASSED, WRONG, TIMEOUT, RUNTIME, COMPILE, NO_CODE, BAD_TEST_DATA = (
    "passed", "wrong answer", "time limit", "runtime error", "compile error", "no code", "bad_test_data")
VERDICTS = (PASSED, WRONG, TIMEOUT, RUNTIME, COMPILE, NO_CODE, BAD_TEST_DATA)
HEADER_CAP = 64 << 10  # a harness header is a few hundred bytes


@dataclass
class Verdict:
    verdict: str
    tests_passed: int
    tests_total: int
    detail: str = ""
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    def to_json(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def _int(text: str):  # noqa: ANN202
    """JSON integers beyond Python's int-parsing limit stay as their (canonical) digits: equal iff the digits are,
    and never equal to a float (which cannot be that large), as ``int == float`` would say."""
    return int(text) if len(text) <= 4000 else ("$int", text)


def parse_json(text: str | bytes):  # noqa: ANN201
    return json.loads(text, parse_int=_int)


@dataclass
class Expected:
    """A problem's expected outputs, as the grader compares them: text (stdin problems) or decoded JSON values."""
    fn_name: str | None
    outputs: list

    @classmethod
    def from_tests(cls, outputs: list[str], fn_name: str | None) -> Expected:
        return cls(fn_name, [parse_json(o) for o in outputs] if fn_name else list(outputs))


# ---- lcb_runner's comparisons ---------------------------------------------------------------------------------
def stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except Exception:
        return None


def _short(x: object, n: int = 200) -> str:
    s = x if isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[: n // 2] + "...(truncated)..." + s[-n // 2:]


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


# ---- one run ------------------------------------------------------------------------------------------------------
class Judge:
    """Fed the channel's bytes as they arrive (``feed`` returns False once the outcome is known, so the run can
    be killed early); ``verdict`` then combines the reports with how the process ended."""

    def __init__(self, expected: Expected, payload_cap: int) -> None:
        self.expected, self.payload_cap = expected, payload_cap
        self.n = len(expected.outputs)
        self.buf = bytearray()
        self.header: dict | None = None  # waiting for this header's payload
        self.loaded = False
        self.passed = 0
        self.threads: int | None = None  # from the final report
        self.outcome: tuple[str, str] | None = None  # a failure, once known

    def _fail(self, verdict: str, detail: str) -> bool:
        self.outcome = (verdict, detail)
        return False

    def feed(self, chunk: bytes) -> bool:
        if self.outcome is not None:
            return False
        self.buf += chunk
        while True:
            if self.header is None:
                end = self.buf.find(b"\n")
                if end < 0:
                    if len(self.buf) > HEADER_CAP:
                        return self._fail(RUNTIME, "unreadable report on the verdict channel (the program wrote "
                                                   "to it?)")
                    return True
                try:
                    header = json.loads(bytes(self.buf[:end]))
                    n = int(header.get("n", 0)) if isinstance(header, dict) else -1
                except (ValueError, TypeError):
                    header, n = None, -1
                del self.buf[:end + 1]
                if header is None or n < 0:
                    return self._fail(RUNTIME, "unreadable report on the verdict channel (the program wrote to it?)")
                if n > self.payload_cap:
                    return self._fail(WRONG, f"result of {n} bytes, more than the {self.payload_cap} allowed")
                self.header = header
            n = int(self.header.get("n", 0))
            if len(self.buf) < n:
                return True
            payload = bytes(self.buf[:n])
            del self.buf[:n]
            header, self.header = self.header, None
            if not self._message(header, payload):
                return False

    def _message(self, h: dict, payload: bytes) -> bool:
        kind, status, detail = h.get("t"), h.get("status"), str(h.get("detail", ""))
        if self.threads is not None:
            return self._fail(RUNTIME, "a report after the harness's last one (the program wrote to the channel?)")
        if kind == "load" and not self.loaded:
            if status == "ok":
                self.loaded = True
                return True
            return self._fail(TIMEOUT if status == TIMEOUT else COMPILE, detail)
        i = h.get("i")
        in_turn = i == self.passed or (i == -1 and status != "ok")  # -1: the harness itself failed
        if kind == "test" and self.loaded and self.passed < self.n and in_turn:
            if status != "ok":
                verdict = {TIMEOUT: TIMEOUT, "output limit": WRONG}.get(status, RUNTIME)
                return self._fail(verdict, detail)
            return self._compare(h.get("kind"), payload)
        if kind == "end" and self.loaded and self.passed == self.n and isinstance(h.get("threads"), int):
            self.threads = h["threads"]
            return True
        return self._fail(RUNTIME, f"unexpected report {_short(json.dumps(h), 120)} on the verdict channel")

    def _compare(self, kind: str, payload: bytes) -> bool:
        i, want = self.passed, self.expected.outputs[self.passed]
        if self.expected.fn_name is None:
            if kind != "text":
                return self._fail(RUNTIME, f"report of kind {kind!r} for a stdin problem")
            ok, why = stdio_match(payload.decode("utf-8", "replace"), want)
            if not ok:
                return self._fail(WRONG, f"test {i}: {why}")
        elif kind == "nonplain":
            return self._fail(WRONG, f"test {i}: returned {_short(payload.decode('utf-8', 'replace'))}, not JSON data")
        elif kind == "json":
            try:
                got = parse_json(payload)
                ok = got == want  # both plain values decoded here
            except (ValueError, RecursionError) as e:
                return self._fail(RUNTIME, f"test {i}: unreadable result ({type(e).__name__})")
            if not ok:
                return self._fail(WRONG, f"test {i}: got {_short(got)}, expected {_short(want)}")
        else:
            return self._fail(RUNTIME, f"report of kind {kind!r} for a functional problem")
        self.passed += 1
        return True

    def verdict(self, res: RunResult, wall: float, timeout: float) -> Verdict:
        def v(verdict: str, detail: str) -> Verdict:
            return Verdict(verdict, self.passed, self.n, detail, round(res.elapsed_s, 3))

        if self.outcome is not None:
            return v(*self.outcome)
        if self.passed == self.n and self.threads is not None:
            if self.threads:
                return v(TIMEOUT, f"{self.threads} non-daemon thread(s) still running {timeout:g}s after the last "
                                  "test: the program never finished")
            if res.timed_out:
                return v(TIMEOUT, f"did not exit within the whole-program limit of {wall:.0f}s")
            if res.returncode != 0:
                return v(RUNTIME, f"ended with status {res.returncode} after its tests")
            return v(PASSED, "")
        if res.timed_out:
            return v(TIMEOUT, f"whole-program limit of {wall:.0f}s exceeded")
        sig = res.signal
        if sig == signal.SIGXCPU:
            return v(TIMEOUT, "CPU time limit exceeded")
        if sig is not None:
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = f"signal {sig}"
            return v(RUNTIME, f"killed by {name}")
        if res.returncode is None:
            return v(RUNTIME, "the program could not be reaped")
        what = "its last report" if self.passed == self.n else "its tests finished"
        return v(RUNTIME, f"exited with code {res.returncode} before {what} (os._exit?)")
