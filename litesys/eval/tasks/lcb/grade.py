"""Grade LiveCodeBench programs: code extraction, sandboxed runs judged in the grader, a pool that never hangs.

Each program runs in its own sandbox process (litesys/eval/sandbox.py) through harness.py, which gets
the test inputs only and reports what the program produced; judge.py compares that with the expected
outputs here, in the grader. The pool drives ``workers`` programs at once from threads; every run has a
hard wall limit, and a worker thread still busy well past it is written off: its slot's processes are
killed, its sample is marked, and a fresh worker (with a fresh slot) takes over.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from litesys.eval.sandbox import Sandbox
from litesys.eval.tasks.lcb import judge as lcb_judge
from litesys.eval.tasks.lcb.judge import Expected, Judge, Verdict

# the verdict names, re-exported for callers of this module
PASSED, WRONG, TIMEOUT, RUNTIME, COMPILE, NO_CODE, BAD_TEST_DATA = (
    lcb_judge.PASSED, lcb_judge.WRONG, lcb_judge.TIMEOUT, lcb_judge.RUNTIME, lcb_judge.COMPILE, lcb_judge.NO_CODE,
    lcb_judge.BAD_TEST_DATA)
VERDICTS = lcb_judge.VERDICTS
IO_MODES = ("lcb_runner", "script")
HARNESS = (Path(__file__).parent / "harness.py").read_bytes()
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
    key: str  # unique per (sample, io)
    code: str
    inputs_path: str  # JSON {"inputs", "fn_name"} readable inside the sandbox: inputs only
    n_tests: int
    expected: Expected | None = None  # stays in the grader
    io: str = "lcb_runner"
    record_as: tuple[str, ...] = ("lcb_runner",)  # the modes this run's verdict is recorded under


def wall_limit(timeout: float, n_tests: int) -> float:
    """lcb_runner's whole-program limit, (timeout + 1) * tests + 5 s, plus interpreter start-up."""
    return (timeout + 1) * n_tests + 5 + STARTUP_S


class ProgramRunner:
    """Runs one program in a sandbox slot on its test inputs and judges what it reports."""

    def __init__(self, sandbox: Sandbox, timeout: float = 6.0, output_cap: int = 64 << 20) -> None:
        self.sandbox = sandbox
        self.timeout = timeout
        self.output_cap = output_cap

    def deadline(self, program: Program) -> float:
        # script mode starts an interpreter per test
        return wall_limit(self.timeout, program.n_tests) + (0.5 * program.n_tests if program.io == "script" else 0)

    def __call__(self, slot: int, program: Program) -> Verdict:
        job = {"code": program.code, "inputs_path": program.inputs_path, "timeout": self.timeout,
               "output_cap": self.output_cap, "io": program.io}
        wall = self.deadline(program)
        # a report holds one test's output (capped in characters by the harness) or one JSON result
        judge = Judge(program.expected, payload_cap=self.output_cap + (1 << 20))
        script = program.io == "script" and not program.expected.fn_name
        res = self.sandbox.run(slot, {"harness.py": HARNESS, "job.json": json.dumps(job).encode()}, "harness.py",
                               ["job.json"], wall_s=wall, sink=judge.feed, extra_tasks=int(script))
        return judge.verdict(res, wall, self.timeout)


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
