"""A pool of worker processes with a hard per-item time limit.

``concurrent.futures`` cannot stop one running task, and sympy can hang where no signal reaches it, so each
worker gets one item at a time over its own pipe; a worker that overruns its item's deadline is killed and
replaced, and the item comes back as ``timeout`` (a crash comes back as ``crash``, an exception as
``error``). Workers start from a forkserver: they never inherit the parent's threads or CUDA state.
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any


@dataclass
class Outcome:
    status: str  # "ok" | "timeout" | "crash" | "error"
    value: Any = None  # the function's result when ok, else a short reason


def _resolve(fn: str):
    mod, _, name = fn.partition(":")
    return getattr(importlib.import_module(mod), name)


def _worker(fn: str, conn: Connection) -> None:
    # Ctrl-C reaches the whole process group: the parent decides when to stop, so that an interrupted run
    # still grades the samples it finished instead of recording them as crashed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    func = _resolve(fn)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone or closed the pool
            return
        if msg is None:
            return
        idx, args = msg
        try:
            conn.send((idx, "ok", func(*args)))
        except Exception as e:  # noqa: BLE001 - any grading failure marks only this item wrong
            conn.send((idx, "error", f"{type(e).__name__}: {e}"[:300]))


class _Slot:
    def __init__(self, ctx, fn: str):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(fn, child), daemon=True)
        self.proc.start()
        child.close()  # so that a dead worker reads as EOF here
        self.item: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


class GradePool:
    """Run ``fn`` ("module:function") on argument tuples in ``workers`` processes, ``timeout`` s per item;
    ``preload``: modules the forkserver imports once for all workers (e.g. the grader's)."""

    def __init__(self, fn: str, workers: int | None = None, timeout: float = 30.0, preload: tuple[str, ...] = ()):
        if timeout <= 0:
            raise ValueError(f"grading timeout must be > 0 seconds, got {timeout}")
        self.fn = fn
        self.workers = max(1, workers or min(4, os.cpu_count() or 1))
        self.timeout = timeout
        self.stats: Counter = Counter()
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(list(preload))  # imported once in the server, not per worker
        self._slots: list[_Slot] = []

    def warm(self) -> None:
        """Start the workers now (the first start waits for the forkserver to import the preloads)."""
        for i in range(self.workers):
            self._slot(i)

    def _slot(self, i: int) -> _Slot:
        while len(self._slots) <= i:
            self._slots.append(_Slot(self._ctx, self.fn))
        return self._slots[i]

    def map(self, items: list[tuple]) -> list[Outcome]:
        """Outcomes in the order of ``items``; never raises for a bad item."""
        results: list[Outcome | None] = [None] * len(items)
        pending = list(range(len(items)))[::-1]
        busy: dict[int, _Slot] = {}
        n_slots = min(self.workers, len(items))
        while pending or busy:
            for i in range(n_slots):
                if pending and i not in busy:
                    slot = self._slot(i)
                    slot.item = pending.pop()
                    slot.deadline = time.monotonic() + self.timeout
                    try:
                        slot.conn.send((slot.item, items[slot.item]))
                    except (BrokenPipeError, OSError):
                        self._replace(i, results, Outcome("crash", "worker died before the item"))
                        continue
                    busy[i] = slot
            if not busy:
                continue
            wait_s = max(0.0, min(s.deadline for s in busy.values()) - time.monotonic())
            ready = wait([s.conn for s in busy.values()], timeout=wait_s)
            for i, slot in list(busy.items()):
                if slot.conn in ready:
                    try:
                        idx, status, value = slot.conn.recv()
                    except (EOFError, OSError):
                        del busy[i]
                        self._replace(i, results, Outcome("crash", f"worker exit code {slot.proc.exitcode}"))
                        continue
                    results[idx] = Outcome(status, value)
                    self.stats[status] += 1
                    del busy[i]
                elif time.monotonic() >= slot.deadline:
                    del busy[i]
                    self._replace(i, results, Outcome("timeout", f"over {self.timeout:g}s"))
        return results  # type: ignore[return-value]

    def _replace(self, i: int, results: list, outcome: Outcome) -> None:
        slot = self._slots[i]
        results[slot.item] = outcome
        self.stats[outcome.status] += 1
        slot.kill()
        self._slots[i] = _Slot(self._ctx, self.fn)

    def close(self) -> None:
        for slot in self._slots:
            try:
                slot.conn.send(None)
            except OSError:
                pass
        for slot in self._slots:
            slot.proc.join(timeout=2)
            if slot.proc.is_alive():
                slot.proc.kill()
                slot.proc.join()
            slot.conn.close()
        self._slots = []

    def __enter__(self) -> GradePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
