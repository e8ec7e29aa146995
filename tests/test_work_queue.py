"""The data-parallel work queue (litesys/eval/work_queue.py): every item handed out once, a dead worker's unwritten
claims handed out again, a fair-share cap, TP followers that mirror their lead, and long-tailed work on N
workers that finishes within 10% of total work / N (a static split of whole problems does not)."""
from __future__ import annotations

import heapq
import multiprocessing as mp
import random
import time
from pathlib import Path

import pytest

from litesys.eval import work_queue as wq

CTX = mp.get_context("spawn")  # as the runner starts its workers


def _shard(folder: str, rank: int) -> Path:
    return Path(folder) / f"made.{rank}"


def _made(folder: str, rank: int) -> set[int]:
    path = _shard(folder, rank)
    return set(map(int, path.read_text().split())) if path.exists() else set()


def _claim_all(folder: str, n: int, rank: int, start=None) -> None:
    """A worker whose samples take no time: each claim is "on disk" at once. ``start``: a barrier, so that on busy
    cores no worker drains the queue before the others have even started."""
    q = wq.FileQueue(Path(folder), n, rank, on_disk=lambda r: _made(folder, r))
    if start is not None:
        start.wait(60)
    with open(_shard(folder, rank), "a") as shard:
        while (i := q.claim()) is not None:
            shard.write(f"{i}\n")
            shard.flush()
    q.close()


def test_every_item_is_claimed_exactly_once_by_concurrent_workers(tmp_path):
    n, workers = 3000, 4
    wq.reset_queue(tmp_path)
    start = CTX.Barrier(workers)
    procs = [CTX.Process(target=_claim_all, args=(str(tmp_path), n, r, start)) for r in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = [list(map(int, _shard(str(tmp_path), r).read_text().split())) for r in range(workers)]
    everything = [i for g in got for i in g]
    assert sorted(everything) == list(range(n))  # none lost, none twice
    assert all(g == sorted(g) for g in got)  # each worker's claims in queue order
    assert sum(1 for g in got if g) >= 2  # really concurrent (not one worker taking all)


def _claim_then_die(folder: str, n: int, claims: int, written: str, ready: str, die: str) -> None:
    import os

    q = wq.FileQueue(Path(folder), n, 1, on_disk=lambda r: set())
    got = [q.claim() for _ in range(claims)]
    Path(written).write_text(" ".join(map(str, got[:2])))  # the first two reached the shard
    Path(ready).touch()
    while not Path(die).exists():
        time.sleep(0.01)
    os._exit(1)  # no close(): the kernel drops the worker's locks


def test_a_dead_workers_unwritten_claims_are_handed_out_once(tmp_path):
    n = 8
    wq.reset_queue(tmp_path)
    written, ready, die = tmp_path / "shard1", tmp_path / "ready", tmp_path / "die"
    p = CTX.Process(target=_claim_then_die, args=(str(tmp_path), n, 5, str(written), str(ready), str(die)))
    p.start()
    on_disk = {1: lambda: set(map(int, written.read_text().split()))}
    survivor = wq.FileQueue(tmp_path, n, 0, on_disk=lambda r: on_disk[r]())
    other = wq.FileQueue(tmp_path, n, 2, on_disk=lambda r: on_disk[r]())
    deadline = time.time() + 60
    while not ready.exists():
        assert time.time() < deadline and p.is_alive()
        time.sleep(0.01)
    assert [survivor.claim() for _ in range(3)] == [5, 6, 7]  # fresh items first
    assert survivor.claim() is None  # worker 1 is alive: its claims 0-4 are in flight, not free
    die.touch()
    p.join(60)
    assert p.exitcode == 1
    assert [survivor.claim(), other.claim(), survivor.claim()] == [2, 3, 4]  # 0, 1 are on disk: never redone
    assert survivor.claim() is None and other.claim() is None  # each re-handed once, and only once
    survivor.close()
    other.close()


def test_a_worker_never_holds_more_than_its_fair_share():
    from torch.distributed import HashStore

    q = wq.StoreQueue(HashStore(), "run", num_items=10)
    a, b = wq.Puller(q, wq.fair_share(10, 2)), wq.Puller(q, wq.fair_share(10, 2))
    calls = a.calls()
    first = list(next(calls))  # an engine with 256 free slots pulls as long as the stream gives
    assert first == [0, 1, 2, 3, 4] and not a.exhausted  # paused at its share of 5
    assert list(next(b.calls())) == [5, 6, 7, 8, 9]
    for i in first[:3]:
        a.done(i)
    assert next(calls, None) is None and a.exhausted  # 2 still in flight, nothing left to claim


def test_tp_followers_pull_what_their_lead_pulled():
    from torch.distributed import HashStore

    store = HashStore()
    q = wq.StoreQueue(store, "run", num_items=7)
    lead = wq.Puller(q, cap=3, publish=q.publisher(replica=1))
    other = wq.Puller(q, cap=3, publish=q.publisher(replica=0))
    lead_calls = []
    for stream in lead.calls():  # the lead's engine: pull all it may, finish them, come back for more
        lead_calls.append(list(stream))
        for i in lead_calls[-1]:
            lead.done(i)
        if len(lead_calls) == 1:
            assert next(other.stream()) == 3  # another replica claims in between
    assert lead_calls == [[0, 1, 2], [4, 5, 6]] and lead.exhausted
    follower = wq.Follower(store, "run", replica=1)
    assert [list(s) for s in follower.calls()] == lead_calls and follower.exhausted  # same items, same calls


def test_queue_order_spreads_each_problems_trials():
    keys = [(p, t) for p in ("a", "b", "c") for t in range(2)]  # the runner's items: problem by problem
    assert [keys[i] for i in wq.queue_order(keys)] == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("c", 1)]


# ---------------------------------------------------------------- long-tailed work on N workers

WORKERS, SLOTS = 4, 2
PROBLEMS, TRIALS = 64, 8
EASY_S, HARD_S, HARD_SHARE = 0.010, 0.100, 0.25  # a hard AIME problem runs to 32K tokens, an easy one stops at 3K


def _costs() -> tuple[list[tuple[str, int]], dict[tuple[str, int], float]]:
    rng = random.Random(0)
    hard = set(rng.sample(range(PROBLEMS), int(PROBLEMS * HARD_SHARE)))
    keys = [(f"p{p}", t) for p in range(PROBLEMS) for t in range(TRIALS)]
    cost = {k: (HARD_S if int(k[0][1:]) in hard else EASY_S) * rng.uniform(0.8, 1.2) for k in keys}
    return keys, cost


class SlotEngine:
    """``LLM.generate`` over a lazy stream as far as the queue can see: a slot pulls the next item when free, and
    an item holds its slot for its cost (its sequence's decode steps)."""

    def __init__(self, slots: int):
        self.slots = slots

    def generate(self, stream, cost, on_finish) -> None:
        running: list[tuple[float, int]] = []
        more = True
        while True:
            while more and len(running) < self.slots:
                i = next(stream, None)
                if i is None:
                    more = False
                else:
                    heapq.heappush(running, (time.monotonic() + cost(i), i))
            if not running:
                return
            end, i = heapq.heappop(running)
            time.sleep(max(0.0, end - time.monotonic()))
            on_finish(i)


def _sim_worker(folder: str, rank: int) -> None:
    keys, cost = _costs()
    order = [keys[i] for i in wq.queue_order(keys)]
    q = wq.FileQueue(Path(folder), len(order), rank, on_disk=lambda r: _made(folder, r))
    puller = wq.Puller(q, wq.fair_share(len(order), WORKERS))
    Path(folder, f"ready.{rank}").touch()
    while len(list(Path(folder).glob("ready.*"))) < WORKERS:  # start together: spawning is not the test
        time.sleep(0.002)
    start = time.time()
    with open(_shard(folder, rank), "a") as shard:
        def finish(i: int) -> None:
            shard.write(f"{i}\n")
            shard.flush()
            puller.done(i)

        for stream in puller.calls():
            SlotEngine(SLOTS).generate(stream, lambda i: cost[order[i]], finish)
    Path(folder, f"times.{rank}").write_text(f"{start} {time.time()}")
    q.close()


def test_long_tailed_work_on_n_workers_finishes_together(tmp_path):
    keys, cost = _costs()
    total = sum(cost.values())
    ideal = total / (WORKERS * SLOTS)  # total work / N, each worker running SLOTS sequences at a time
    assert max(cost.values()) < 0.06 * ideal  # items small enough that a 10% bound is achievable at all
    # a static split of whole problems (round-robin, what --nproc did) leaves one worker far behind
    static = [sum(c for k, c in cost.items() if int(k[0][1:]) % WORKERS == w) / SLOTS for w in range(WORKERS)]
    assert max(static) > 1.15 * ideal  # (1.19x with these costs)

    wq.reset_queue(tmp_path)
    procs = [CTX.Process(target=_sim_worker, args=(str(tmp_path), r)) for r in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    times = [list(map(float, (tmp_path / f"times.{r}").read_text().split())) for r in range(WORKERS)]
    start = min(t[0] for t in times)
    ends = [t[1] - start for t in times]
    made = [i for r in range(WORKERS) for i in map(int, _shard(str(tmp_path), r).read_text().split())]
    assert sorted(made) == list(range(len(keys)))  # each sample made once
    print(f"ideal {ideal:.3f}s, static {max(static):.3f}s, finished at {[round(e, 3) for e in ends]}")
    assert max(ends) <= 1.10 * ideal and min(ends) >= 0.90 * ideal


# ---------------------------------------------------------------- through the runner (--nproc), with a stand-in engine


class LazyLLM:
    """``LLM.generate`` over a lazy iterator of (prompt, params) pairs with ``slots`` slots; a sample takes ``cost``
    seconds, its text is prompt + seed; the engine on ``crash_device`` raises after ``crash_after`` finishes."""

    def __init__(self, device: str, barrier: str, workers: int, cost: float, crash_device: str | None,
                 crash_after: int):
        self.device, self.cost, self.slots, self.barrier, self.workers = device, cost, 2, barrier, workers
        self.crash = crash_after if device == crash_device else None

    def generate(self, prompts, sampling_params=None, progress=False, on_finish=None, on_progress=None):
        from litesys.outputs import CompletionOutput, RequestOutput

        if isinstance(prompts, list):  # the single-worker runner passes lists
            prompts = iter(zip(prompts, sampling_params))
        Path(self.barrier, self.device).touch()  # every worker ready: start pulling together
        deadline = time.time() + 60
        while len(list(Path(self.barrier).iterdir())) < self.workers and time.time() < deadline:
            time.sleep(0.005)
        outs, running, more, finished = [], [], True, 0
        while True:
            while more and len(running) < self.slots:
                pair = next(prompts, None)
                if pair is None:
                    more = False
                else:
                    running.append((time.monotonic() + self.cost, len(outs)))
                    outs.append(RequestOutput([1], [CompletionOutput([7], f"{pair[0]}|{pair[1].seed}", "stop")]))
            if not running:
                return outs
            running.sort()
            end, k = running.pop(0)
            time.sleep(max(0.0, end - time.monotonic()))
            if finished == self.crash:
                raise RuntimeError(f"{self.device} lost")
            finished += 1
            on_finish(k, outs[k])


def _job(tmp_path: Path, name: str, workers: int = 2, crash_device: str | None = None):
    import functools

    from litesys.eval.runner import Job, WorkItem, sample_seed
    from litesys.sampling_params import SamplingParams

    barrier = tmp_path / f"barrier-{name}"
    barrier.mkdir()
    items = [WorkItem(p, t, f"Q{p}", SamplingParams(seed=sample_seed(0, p, t))) for p in "abcd" for t in range(4)]
    make = functools.partial(LazyLLM, barrier=str(barrier), workers=workers, cost=0.05, crash_device=crash_device,
                             crash_after=1)
    return Job(items, make)


def _outputs(folder: Path) -> dict:
    from litesys.eval.runner import read_samples

    recs = read_samples(folder)
    out = {(r["problem_id"], r["trial"]): r["output"] for r in recs}
    assert len(out) == len(recs) == 16  # every sample once
    return out


def test_nproc_workers_pull_from_one_queue_and_a_dead_ones_samples_are_made_by_the_others(tmp_path):
    from litesys.eval.runner import RunError, run, shard_path

    ref = tmp_path / "ref"
    run(_job(tmp_path, "ref", workers=1), ref, ["sim:0"], {})
    crash = tmp_path / "crash"
    with pytest.raises(RunError, match=r"worker 1 \(exit code 1\) failed"):
        run(_job(tmp_path, "crash", crash_device="sim:1"), crash, ["sim:0", "sim:1"], {})
    assert len(shard_path(crash, 1).read_text().splitlines()) == 1  # what worker 1 finished before it died
    # worker 0 made the rest, worker 1's lost claims included; seeded per (problem, trial), so the same samples
    assert _outputs(crash) == _outputs(ref) and not (crash / wq.QUEUE_DIR).exists()
    run(_job(tmp_path, "again"), crash, ["sim:0", "sim:1"], {})  # the rerun finds nothing to do
    assert _outputs(crash) == _outputs(ref)
