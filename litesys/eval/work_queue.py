"""Data-parallel work handed out as workers free up, so that every GPU finishes at about the same time.

A static split gives each worker whole problems up front, so with long-tailed lengths (a hard AIME problem runs
to 32K tokens, an easy one stops at 3K) the slowest worker sets the wall time. Here every worker holds the same
list of items (the samples not yet on disk, in ``queue_order``) and claims indices into it one at a time, when its
engine has a free slot. Samples do not depend on which worker makes them (each is seeded by its problem and
trial), and finished ones are on disk at once, so a crash loses only what was in flight: the rerun's queue is
what is missing.

* ``FileQueue`` (``--nproc``, one host): claims are lines appended under an flock to ``<output_dir>/.queue/claims``.
  Each worker holds an flock on ``.queue/alive.<rank>`` while it runs; the kernel drops it when the worker dies,
  so once the fresh items are gone the survivors take over what a dead worker claimed and never wrote (once per
  item: an item that kills a second worker is left for the rerun).
* ``StoreQueue`` (``torchrun`` replicas): an atomic counter in the ``torch.distributed`` store. Only tp-rank 0 of a
  replica claims; it publishes every pull's outcome so that the replica's other ranks, whose engines take the
  same steps, pull the same items (``Follower``).
* ``Puller``: one worker's side of a queue, the lazy stream ``LLM.generate`` pulls from. It never holds more than
  its fair share, ``ceil(items / workers)``, in flight: with 256 slots per GPU the first worker up would
  otherwise claim a small run alone.
* ``generate_share``: a worker's ``LLM.generate`` calls over its ``Share`` (the runner's ``run_shard`` and the TP
  followers make the very same calls).
"""
from __future__ import annotations

import fcntl
import itertools
import math
import shutil
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

QUEUE_DIR = ".queue"
MAX_CLAIMS = 2  # a dead worker's item is handed out once more, never a third time (it may be what killed it)
EXHAUSTED, PAUSE = -1, -2  # a pull's outcome when it is not an item: nothing left / this worker holds its share


class Claims(Protocol):
    num_items: int

    def claim(self) -> int | None:
        """The index of the next item for this worker, or None when none is left for it."""


def queue_order(keys: Sequence[tuple[str, int]]) -> list[int]:
    """Positions of ``keys`` (problem id, trial) in hand-out order: trial-major, so that consecutive claims spread
    a problem's trials over the workers (a hard problem's trials are all long) instead of giving one worker all."""
    first = {pid: i for i, pid in enumerate(dict.fromkeys(pid for pid, _ in keys))}
    return sorted(range(len(keys)), key=lambda i: (keys[i][1], first[keys[i][0]]))


def fair_share(num_items: int, num_workers: int) -> int:
    return max(1, math.ceil(num_items / max(1, num_workers)))


# ---------------------------------------------------------------- one host: a file of claims


def reset_queue(output_dir: Path) -> None:
    """An empty queue for this session's workers (the launcher calls it while it holds the folder's lock)."""
    folder = Path(output_dir) / QUEUE_DIR
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "claims").touch()


def remove_queue(output_dir: Path) -> None:
    shutil.rmtree(Path(output_dir) / QUEUE_DIR, ignore_errors=True)


class FileQueue:
    """Claims of one worker (``rank``) on the queue in ``output_dir``; ``on_disk(rank)`` is the set of item
    indices whose samples are in that rank's shard (read only for a dead rank, whose shard no longer changes)."""

    def __init__(self, output_dir: Path, num_items: int, rank: int, on_disk: Callable[[int], Collection[int]]):
        self.folder, self.num_items, self.rank, self.on_disk = Path(output_dir) / QUEUE_DIR, num_items, rank, on_disk
        # held until close() or death; blocking: a survivor probing it holds it for a moment
        self._alive = open(self.folder / f"alive.{rank}", "a+")
        fcntl.flock(self._alive, fcntl.LOCK_EX)
        self._log = open(self.folder / "claims", "a+b", buffering=0)
        self._read = 0  # bytes of the log already parsed
        self.owners: dict[int, list[int]] = {}  # item -> ranks that claimed it, in claim order
        self.next_fresh = 0
        self._dead: dict[int, set[int]] = {}  # dead rank -> its items on disk

    def claim(self) -> int | None:
        fcntl.flock(self._log, fcntl.LOCK_EX)
        try:
            self._catch_up()
            i = self.next_fresh if self.next_fresh < self.num_items else self._orphan()
            if i is not None:
                self._log.write(f"{i} {self.rank}\n".encode())
                self._catch_up()
            return i
        finally:
            fcntl.flock(self._log, fcntl.LOCK_UN)

    def _catch_up(self) -> None:
        self._log.seek(self._read)
        data = self._log.read()
        self._read += len(data)
        for line in data.splitlines():
            i, r = map(int, line.split())
            self.owners.setdefault(i, []).append(r)
            self.next_fresh = max(self.next_fresh, i + 1)

    def _orphan(self) -> int | None:
        for i, owners in self.owners.items():
            r = owners[-1]
            if len(owners) < MAX_CLAIMS and r != self.rank and self._is_dead(r) and i not in self._dead[r]:
                return i
        return None

    def _is_dead(self, rank: int) -> bool:
        if rank in self._dead:
            return True
        with open(self.folder / f"alive.{rank}", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # alive (closing the file drops our probe)
        self._dead[rank] = set(self.on_disk(rank))
        return True

    def close(self) -> None:
        """Call after this worker's samples are on disk: from then on it counts as gone."""
        self._log.close()
        self._alive.close()


# ---------------------------------------------------------------- torchrun: the torch.distributed store


class StoreQueue:
    """Claims from an atomic counter under ``prefix`` in a ``torch.distributed`` store (shared by the replicas)."""

    def __init__(self, store, prefix: str, num_items: int):
        self.store, self.prefix, self.num_items = store, prefix, num_items

    def claim(self) -> int | None:
        i = self.store.add(f"{self.prefix}/next", 1) - 1
        return i if i < self.num_items else None

    def publisher(self, replica: int) -> Callable[[int, int], None]:
        """``publish(pull, outcome)`` for the replica's lead (tp-rank 0), read back by its ``Follower``s."""
        return lambda pull, outcome: self.store.set(f"{self.prefix}/r{replica}/{pull}", str(outcome))


# ---------------------------------------------------------------- a worker's side


class _Streams:
    exhausted = False

    def stream(self) -> Iterator[int]:
        raise NotImplementedError

    def calls(self) -> Iterator[Iterator[int]]:
        """One lazy stream of item indices per ``generate`` call, until nothing is left for this worker."""
        while not self.exhausted:
            stream = self.stream()
            first = next(stream, None)
            if first is None:  # nothing left (a fresh stream never pauses at once: nothing is in flight)
                return
            yield itertools.chain([first], stream)


class Puller(_Streams):
    """Item indices for ``LLM.generate``, claimed one at a time as the engine pulls (a free slot), never more than
    ``cap`` in flight; ``done(i)`` when item ``i`` finished. A stream stops when this worker holds its share
    (``exhausted`` false: call ``stream`` again once the engine is through) or when nothing is left."""

    def __init__(self, claims: Claims, cap: int, publish: Callable[[int, int], None] | None = None):
        self.claims, self.cap, self.publish = claims, max(1, cap), publish
        self.in_flight: set[int] = set()
        self.exhausted = False
        self.pulls = 0

    def stream(self) -> Iterator[int]:
        while True:
            i = PAUSE if len(self.in_flight) >= self.cap else self.claims.claim()
            i = EXHAUSTED if i is None else i
            if self.publish is not None:
                self.publish(self.pulls, i)
            self.pulls += 1
            if i < 0:
                self.exhausted = i == EXHAUSTED
                return
            self.in_flight.add(i)
            yield i

    def done(self, i: int) -> None:
        self.in_flight.discard(i)


class Follower(_Streams):
    """The pulls of a replica's lead, for its other tensor-parallel ranks (they run the same engine steps, so
    each pull is read just after the lead published it)."""

    def __init__(self, store, prefix: str, replica: int):
        self.store, self.key = store, f"{prefix}/r{replica}"
        self.exhausted = False
        self.pulls = 0

    def stream(self) -> Iterator[int]:
        while True:
            i = int(self.store.get(f"{self.key}/{self.pulls}"))
            self.pulls += 1
            if i < 0:
                self.exhausted = i == EXHAUSTED
                return
            yield i

    def done(self, i: int) -> None:
        pass


# ---------------------------------------------------------------- what the runner hands a worker


@dataclass
class Share:
    """A data-parallel worker's work: ``items`` (work items with ``prompt`` and ``sampling``; the same list, in the
    same order, on every worker), the puller that claims indices into it, and about how many it will make."""

    items: list
    puller: Puller | Follower
    expected: int


def generate_share(llm, share: Share, on_finish: Callable[[int, Any], None] | None = None,
                   on_progress: Callable | None = None) -> None:
    """Generate what ``share.puller`` hands out, one lazy ``llm.generate`` call per stream: the engine pulls the next
    item whenever it has a free slot. ``on_finish(item index, output)``; ``on_progress`` as for ``generate``."""
    for stream in share.puller.calls():
        pulled: list[int] = []  # request k of this call is item pulled[k]

        def pairs(stream: Iterator[int] = stream, pulled: list[int] = pulled) -> Iterator[tuple[Any, Any]]:
            for i in stream:
                pulled.append(i)
                yield share.items[i].prompt, share.items[i].sampling

        report = None if on_finish is None else (lambda k, out, pulled=pulled: on_finish(pulled[k], out))
        outputs = llm.generate(pairs(), progress=False, on_finish=report, on_progress=on_progress)
        if report is not None:
            for k, out in enumerate(outputs):  # an engine that reports nothing early still loses nothing
                report(k, out)


def replica_share(items: list, store, prefix: str, replica: int, num_replicas: int, tp_rank: int,
                  tp: int) -> Share:
    """A ``torchrun`` replica's share of ``items`` (every rank holds the same list): its tp-rank 0 claims from the
    store under ``prefix`` (unique to the run) and, with ``tp > 1``, publishes its pulls for the other ranks."""
    order = [items[i] for i in queue_order([it.key for it in items])]
    cap = fair_share(len(order), num_replicas)
    if tp_rank > 0:
        return Share(order, Follower(store, prefix, replica), cap)
    queue = StoreQueue(store, prefix, len(order))
    return Share(order, Puller(queue, cap, publish=queue.publisher(replica) if tp > 1 else None), cap)
