"""Grade LiveCodeBench programs: code extraction, sandboxed runs, verdicts, a pool that never hangs, pass@k.

Each program runs in its own sandbox process (litesys/eval/sandbox.py) through lcb_harness.py, which keeps
lcb_runner's test semantics. The pool drives ``workers`` programs at once from threads; every run has a
hard wall limit, and a worker thread still busy well past it is written off: its slot's processes are
killed, its sample is marked, and a fresh worker (with a fresh slot) takes over.
"""
from __future__ import annotations

import json
import queue
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from litesys.eval.sandbox import Sandbox

PASSED, WRONG, TIMEOUT, RUNTIME, COMPILE, NO_CODE = (
    "passed", "wrong answer", "time limit", "runtime error", "compile error", "no code")
VERDICTS = (PASSED, WRONG, TIMEOUT, RUNTIME, COMPILE, NO_CODE)
HARNESS = (Path(__file__).parent / "lcb_harness.py").read_bytes()
STARTUP_S = 5.0  # interpreter start-up and imports, on top of lcb_runner's whole-program limit
STUCK_GRACE_S = 30.0  # a worker this far past its run's wall limit is written off


def extract_code(text: str) -> str:
    """The last fenced block of the answer (after ``</think>`` when the model thought), as lcb_runner takes it:
    the lines between the last two lines that contain a fence."""
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    lines = text.split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        return ""
    return "\n".join(lines[fences[-2] + 1:fences[-1]])


@dataclass
class Program:
    key: str  # unique per sample
    code: str
    tests_path: str  # JSON {"inputs", "outputs", "fn_name"} readable inside the sandbox
    n_tests: int


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


def wall_limit(timeout: float, n_tests: int) -> float:
    """lcb_runner's whole-program limit, (timeout + 1) * tests + 5 s, plus interpreter start-up."""
    return (timeout + 1) * n_tests + 5 + STARTUP_S


class ProgramRunner:
    """Runs one program in a sandbox slot and turns what came back into a verdict."""

    def __init__(self, sandbox: Sandbox, timeout: float = 6.0, output_cap: int = 64 << 20) -> None:
        self.sandbox = sandbox
        self.timeout = timeout
        self.output_cap = output_cap

    def deadline(self, program: Program) -> float:
        return wall_limit(self.timeout, program.n_tests)

    def __call__(self, slot: int, program: Program) -> Verdict:
        job = {"code": program.code, "tests_path": program.tests_path, "timeout": self.timeout,
               "output_cap": self.output_cap}
        wall = self.deadline(program)
        res = self.sandbox.run(slot, {"harness.py": HARNESS, "job.json": json.dumps(job).encode()}, "harness.py",
                               ["job.json"], wall_s=wall)
        n = program.n_tests
        if res.timed_out:
            return Verdict(TIMEOUT, 0, n, f"whole-program limit of {wall:.0f}s exceeded", round(res.elapsed_s, 3))
        got = _parse_verdict(res.stdout, n)
        if got is not None:
            return got
        sig = res.signal
        if sig == signal.SIGXCPU:
            why, verdict = "CPU time limit exceeded", TIMEOUT
        elif res.truncated:
            why, verdict = "the program flooded the verdict channel", RUNTIME
        elif sig is not None:
            why, verdict = f"killed by {signal.Signals(sig).name}", RUNTIME
        elif res.returncode is None:
            why, verdict = "the program could not be reaped", RUNTIME
        else:
            why, verdict = f"exited with code {res.returncode} before its tests finished", RUNTIME
        return Verdict(verdict, 0, n, why, round(res.elapsed_s, 3))


def _parse_verdict(stdout: bytes, n_tests: int) -> Verdict | None:
    line = stdout.split(b"\n", 1)[0]
    try:
        d = json.loads(line)
        v = Verdict(str(d["verdict"]), int(d["tests_passed"]), int(d["tests_total"]), str(d.get("detail", "")),
                    float(d.get("elapsed_s", 0.0)))
    except (ValueError, KeyError, TypeError):
        return None
    if v.verdict not in VERDICTS or v.tests_total != n_tests or not 0 <= v.tests_passed <= n_tests:
        return None
    return v


class _Worker:
    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.current: tuple[Program, float] | None = None
        self.retired = False
        self.thread: threading.Thread | None = None


class ProgramPool:
    """Grade programs on ``workers`` threads, each driving one sandboxed program at a time.

    ``run(programs, on_done)`` calls ``on_done(program, verdict)`` from the calling thread exactly once per
    program and returns when all are done, whatever the programs (or a wedged worker) do.
    """

    def __init__(self, runner: Callable[[int, Program], Verdict], workers: int,
                 deadline: Callable[[Program], float], kill_slot: Callable[[int], None],
                 stuck_grace_s: float = STUCK_GRACE_S) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.runner, self.n_workers, self.deadline, self.kill_slot = runner, workers, deadline, kill_slot
        self.stuck_grace_s = stuck_grace_s
        self.stuck = 0  # workers written off so far
        self._tasks: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._next_slot = 0

    def _spawn(self) -> None:
        w = _Worker(self._next_slot)
        self._next_slot += 1
        w.thread = threading.Thread(target=self._loop, args=(w,), name=f"lcb-grader-{w.slot}", daemon=True)
        self._workers.append(w)
        w.thread.start()

    def _loop(self, w: _Worker) -> None:
        while True:
            program = self._tasks.get()
            if program is None:
                return
            with self._lock:
                w.current = (program, time.monotonic())
            try:
                verdict = self.runner(w.slot, program)
            except Exception as e:  # noqa: BLE001 - a grader fault marks this sample, not the run
                verdict = Verdict(RUNTIME, 0, program.n_tests, f"grader error: {type(e).__name__}: {e}")
            with self._lock:
                if w.retired:  # the watchdog already reported this program
                    return
                w.current = None
                self._results.put((program, verdict))

    def run(self, programs: Iterable[Program], on_done: Callable[[Program, Verdict], None]) -> None:
        it = iter(programs)
        outstanding, exhausted = 0, False
        for _ in range(self.n_workers):
            self._spawn()
        try:
            while True:
                while not exhausted and outstanding < 2 * self.n_workers:
                    try:
                        self._tasks.put(next(it))
                        outstanding += 1
                    except StopIteration:
                        exhausted = True
                if exhausted and outstanding == 0:
                    return
                try:
                    program, verdict = self._results.get(timeout=0.2)
                    outstanding -= 1
                    on_done(program, verdict)
                    continue
                except queue.Empty:
                    pass
                for program, waited in self._write_off_stuck():
                    outstanding -= 1
                    on_done(program, Verdict(RUNTIME, 0, program.n_tests,
                                             f"grader worker stuck for {waited:.0f}s; killed", round(waited, 3)))
        finally:
            with self._lock:
                live = [w for w in self._workers if not w.retired]
            for _ in live:
                self._tasks.put(None)

    def _write_off_stuck(self) -> list[tuple[Program, float]]:
        now, stuck = time.monotonic(), []
        with self._lock:
            for w in self._workers:
                if w.current is None or w.retired:
                    continue
                program, started = w.current
                if now - started > self.deadline(program) + self.stuck_grace_s:
                    w.retired = True
                    stuck.append((w, program, now - started))
        for w, _, _ in stuck:
            self.stuck += 1
            try:
                self.kill_slot(w.slot)
            except Exception:  # noqa: BLE001 - best effort; the replacement uses another slot anyway
                pass
            self._spawn()
        return [(program, waited) for _, program, waited in stuck]


# ---- metrics -------------------------------------------------------------------------------------------------
def summarize(records: list[dict], ks: list[int] | None = None) -> dict:
    """pass@1 and unbiased pass@k over problems (each problem weighs the same), overall and per difficulty.

    ``records`` need ``question_id``, ``difficulty`` and ``passed``. pass@k averages the problems with at
    least k samples; default ks: 1, 2, 4, ... up to the most samples any problem has.
    """
    from litesys.eval.metrics import ks_up_to, pass_at_k

    per: dict[str, list] = {}
    for r in records:
        e = per.setdefault(r["question_id"], [r.get("difficulty") or "unknown", 0, 0])
        e[1] += 1
        e[2] += bool(r["passed"])
    most = max((n for _, n, _ in per.values()), default=0)
    ks = sorted(set(ks or ks_up_to(most)))

    def block(items: list) -> dict:
        out: dict = {"problems": len(items), "samples": sum(n for _, n, _ in items)}
        for k in ks:
            eligible = [(n, c) for _, n, c in items if n >= k]
            if eligible:
                out[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in eligible) / len(eligible)
        return out

    groups = defaultdict(list)
    for e in per.values():
        groups[e[0]].append(e)
    order = [d for d in ("easy", "medium", "hard") if d in groups] + sorted(set(groups) - {"easy", "medium", "hard"})
    return {"all": block(list(per.values())), "by_difficulty": {d: block(groups[d]) for d in order},
            "verdicts": dict(Counter(r["verdict"] for r in records).most_common())}


def format_summary(summary: dict) -> str:
    cols = [k for k in summary["all"] if k.startswith("pass@")]
    head = f"{'':<10}{'problems':>9}{'samples':>9}" + "".join(f"{c:>10}" for c in cols)
    rows = [head]
    for name, b in [("all", summary["all"]), *summary["by_difficulty"].items()]:
        cells = "".join(f"{100 * b[c]:>9.2f}%" if c in b else f"{'-':>10}" for c in cols)
        rows.append(f"{name:<10}{b['problems']:>9}{b['samples']:>9}{cells}")
    rows.append("verdicts: " + ", ".join(f"{k} {v}" for k, v in summary["verdicts"].items()))
    return "\n".join(rows)
