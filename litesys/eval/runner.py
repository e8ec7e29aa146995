"""Task-agnostic, resumable, sharded generation runner.

A task hands over a ``Job``: its work items (one per (problem id, trial), with prompt, sampling params and
the fields each record carries), how to build the engine on a device, and optionally a record processor
(e.g. grading) that runs in a writer thread. The runner

* appends every finished sample to its shard's JSONL at once (flush + fsync), so a crash loses nothing;
* on rerun skips the (problem id, trial) pairs already on disk (any shard, any earlier ``--nproc``), reading
  only each line's key, never holding the records (LiveCodeBench lines carry megabytes of test cases);
* hands back a ``RunResult`` (keys + a stream of the samples, optionally projected onto a few fields);
* refuses to mix results when the run-config file in the output folder differs from this run's;
* with ``nproc > 1`` runs one process per device, each with its own shard, pulling samples from one shared
  queue as its engine frees slots (``work_queue.py``), so that the devices finish together.

A data-parallel worker gets the job itself (pickled: its engine and processor factories are plain data, e.g.
``configs.EngineSpec``), never the command line.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from litesys.eval import run_info, work_queue
from litesys.eval.fileio import LOCK_FILE, RunError, atomic_write, complete_lines, hold_lock, repair_tail
from litesys.eval.run_info import ShardMeter

RUN_CONFIG = "run_config.json"
SHARD_GLOB = "samples.*.jsonl"
__all__ = ["RunError", "LOCK_FILE"]  # re-exported: the runner's callers catch RunError from here


@dataclass
class WorkItem:
    problem_id: str
    trial: int
    prompt: Any  # token ids, a string, or a chat conversation
    sampling: Any  # litesys SamplingParams (seeded per item)
    fields: dict = field(default_factory=dict)  # task fields copied into the sample record

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.trial)


class RecordProcessor(Protocol):
    def __call__(self, records: list[dict]) -> list[dict]: ...

    def close(self) -> None: ...


@dataclass
class Job:
    items: list[WorkItem]  # every requested (problem id, trial), in problem order
    make_llm: Callable[[str], Any]  # device -> engine with generate(prompts, params, progress, on_finish, on_progress)
    make_processor: Callable[[], RecordProcessor] | None = None  # built where the shard runs
    desc: str = "samples"
    output_field: str = "output"  # the record key of the generated text (LiveCodeBench's graders read output_text)
    tensor_parallel_size: int = 1  # ranks per replica under torchrun (dist_runner)
    intensity: tuple[float, str] | None = None  # (I, source) of the recorded eFLOPs; None: the device's GPU


@dataclass
class RunResult:
    """What a finished run hands back: the requested keys and where their samples are, not the samples themselves
    (streamed on demand with ``records``, so callers that only count hold nothing)."""

    output_dir: Path
    wanted: set[tuple[str, int]]  # every requested (problem id, trial)
    done: set[tuple[str, int]]  # those on disk

    @property
    def num_samples(self) -> int:
        return len(self.done)

    def records(self, fields: Sequence[str] | None = None) -> Iterator[dict]:
        """The requested samples on disk, streamed; ``fields`` projects each one (see ``iter_samples``)."""
        return iter_samples(self.output_dir, fields, self.wanted)


def finished(output_dir: Path, items: list[WorkItem]) -> RunResult:
    """The RunResult of ``items`` from what is on disk in ``output_dir``."""
    wanted = {it.key for it in items}
    return RunResult(Path(output_dir), wanted, done_keys(output_dir) & wanted)


def sample_seed(run_seed: int, problem_id: str, trial: int) -> int:
    """Seed of one (problem, trial): the same whatever the batch, the shard or an interruption."""
    digest = hashlib.sha256(f"{run_seed}\x00{problem_id}\x00{trial}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def shard_path(output_dir: Path, rank: int) -> Path:
    return Path(output_dir) / f"samples.{rank}.jsonl"


# ---------------------------------------------------------------- run config


def check_run_config(output_dir: Path, config: dict) -> None:
    """Refuse (RunError) when ``output_dir`` holds a run made with other settings."""
    path = Path(output_dir) / RUN_CONFIG
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    diff = [k for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k)]
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} there, {config.get(k)!r} now" for k in diff[:4])
        raise RunError(f"{output_dir} holds a run with other settings ({shown}); refusing to mix results - "
                       "use another --output_dir or rerun with the same flags")


def write_run_config(output_dir: Path, config: dict) -> None:
    path = Path(output_dir) / RUN_CONFIG
    if not path.is_file():
        atomic_write(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------- samples on disk

# The runner writes ``problem_id`` and ``trial`` first, so the done set can be read from each line's head without
# parsing the rest (a LiveCodeBench line carries megabytes of test cases). Other layouts fall back to json.loads.
_KEY_HEAD = re.compile(rb'\{"problem_id": ("(?:[^"\\]|\\.)*"), "trial": (-?\d+)[,}]')


def _parse(path: Path, n: int, line: bytes) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise RunError(f"{path}:{n} is not valid JSON ({e.msg}); move that file away to redo its samples") from e


def line_key(path: Path, n: int, line: bytes) -> tuple[str, int]:
    m = _KEY_HEAD.match(line)
    if m:
        return json.loads(m.group(1)), int(m.group(2))
    rec = _parse(path, n, line)
    return rec["problem_id"], rec["trial"]


def shard_keys(path: Path) -> set[tuple[str, int]]:
    """The (problem id, trial) pairs finished in one shard file (none when it does not exist)."""
    return {line_key(path, n, line) for n, line in complete_lines(path)} if Path(path).is_file() else set()


def done_keys(output_dir: Path) -> set[tuple[str, int]]:
    """The (problem id, trial) pairs finished in any shard; holds only the keys, never the records."""
    keys: set[tuple[str, int]] = set()
    for path in sorted(Path(output_dir).glob(SHARD_GLOB)):
        keys |= shard_keys(path)
    return keys


def iter_samples(output_dir: Path, fields: Sequence[str] | None = None,
                 keys: Collection[tuple[str, int]] | None = None) -> Iterator[dict]:
    """Finished samples of all shards, one per (problem id, trial) (the first on disk), streamed.

    ``fields``: keep only these keys of each record (plus ``problem_id``/``trial``), dropped as soon as a line is
    parsed, so a caller that needs a few small fields never holds the large ones. ``keys``: only these pairs.
    """
    keep = None if fields is None else {"problem_id", "trial", *fields}
    seen: set[tuple[str, int]] = set()
    for path in sorted(Path(output_dir).glob(SHARD_GLOB)):
        for n, line in complete_lines(path):
            key = line_key(path, n, line)
            if key in seen or (keys is not None and key not in keys):
                continue  # skipped without parsing the whole line
            seen.add(key)
            rec = _parse(path, n, line)
            yield rec if keep is None else {k: v for k, v in rec.items() if k in keep}


def read_samples(output_dir: Path, fields: Sequence[str] | None = None) -> list[dict]:
    """All finished samples of all shards as a list (see ``iter_samples``; prefer it for large runs)."""
    return list(iter_samples(output_dir, fields))


class SampleWriter:
    """Processes (e.g. grades) and appends records in a background thread; fsync after every write."""

    def __init__(self, path: Path, processor: RecordProcessor | None):
        repair_tail(path)
        self._file = open(path, "a", encoding="utf-8")
        self._processor = processor
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="sample-writer", daemon=True)
        self._thread.start()

    def put(self, record: dict) -> None:
        if self._error is not None:
            raise RunError(f"writing samples failed: {self._error}") from self._error
        self._queue.put(record)

    def _loop(self) -> None:
        done = False
        while not done:
            batch = [self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if batch[-1] is None:
                batch.pop()
                done = True
            if not batch or self._error is not None:
                continue
            try:
                if self._processor is not None:
                    batch = self._processor(batch)
                for rec in batch:
                    self._file.write(json.dumps(rec, ensure_ascii=False) + "\n")
                self._file.flush()
                os.fsync(self._file.fileno())
            except BaseException as e:  # noqa: BLE001 - reported to the generating thread
                self._error = e

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._file.close()
        if self._processor is not None:
            self._processor.close()
        if self._error is not None:
            raise RunError(f"writing samples failed: {self._error}") from self._error


# ---------------------------------------------------------------- one shard


def _prompt_record(prompt: Any) -> Any:
    return prompt if isinstance(prompt, (str, list)) else list(prompt)


def run_shard(job: Job, items: list[WorkItem] | work_queue.Share, output_dir: Path, rank: int, device: str,
              position: int = 0) -> int:
    """Generate ``items`` on ``device`` into shard ``rank``; returns the number of samples written. ``items`` may
    be a data-parallel worker's ``work_queue.Share``: then it makes what it pulls from the shared queue."""
    share = items if isinstance(items, work_queue.Share) else None
    items = share.items if share is not None else items
    if not items:
        return 0
    from litesys.engine.progress import ProgressBar

    processor = job.make_processor() if job.make_processor else None  # before the engine: fail fast
    t0 = time.time()
    try:
        llm = job.make_llm(device)
    except BaseException:
        if processor is not None:
            processor.close()
        raise
    meter = ShardMeter(output_dir, rank, llm, device, t0, job.intensity)  # cost model + timing (docs/cost.md)
    writer = SampleWriter(shard_path(output_dir, rank), processor)
    left: dict[str, int] = {}
    for it in items:
        left[it.problem_id] = left.get(it.problem_id, 0) + 1
    n_problems, state = len(left), {"problems": 0, "reported": set()}
    # one tick per finished sample; tok/s, running batch and a token-based ETA come from the engine's checks
    bar = ProgressBar(share.expected if share else len(items), f"[{rank}] {job.desc}" if position else job.desc,
                      "sample", position=position)

    def on_finish(index: int, output) -> None:
        if index in state["reported"]:
            return
        state["reported"].add(index)
        it = items[index]
        sample = output.samples[0]
        writer.put({"problem_id": it.problem_id, "trial": it.trial, "seed": it.sampling.seed,
                    "prompt": _prompt_record(it.prompt), job.output_field: sample.text,
                    "num_tokens": len(sample.token_ids), "finish_reason": sample.finish_reason,
                    **meter.sample_fields(output, sample), **it.fields})
        if share is not None:  # a problem's trials are spread over the workers: count samples only
            share.puller.done(index)
            bar.done(1)
            return
        left[it.problem_id] -= 1
        state["problems"] += left[it.problem_id] == 0
        bar.done(1, extra=f"problems={state['problems']}/{n_problems}")

    try:
        if share is not None:
            work_queue.generate_share(llm, share, on_finish, on_progress=bar.update)
        else:
            outputs = llm.generate([it.prompt for it in items], [it.sampling for it in items], progress=False,
                                   on_finish=on_finish, on_progress=bar.update)
            for i, out in enumerate(outputs):  # an engine that reports nothing early still loses nothing
                on_finish(i, out)
    finally:
        bar.close()
        writer.close()
        meter.close()
    return len(state["reported"])


# ---------------------------------------------------------------- the whole run


def _die_with_parent() -> None:
    # A killed launcher must not leave workers appending to shards that a rerun will also write.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _dp_worker(job: Job, output_dir: str, rank: int, nproc: int, device: str) -> None:
    _die_with_parent()
    try:
        if device == "cpu":
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))  # no oversubscription
        index = {it.key: i for i, it in enumerate(job.items)}  # job.items: the queue, the same on every worker

        def on_disk(r: int) -> set[int]:  # what a dead worker wrote (its unwritten claims are handed out again)
            return {index[k] for k in shard_keys(shard_path(Path(output_dir), r)) if k in index}

        queue = work_queue.FileQueue(Path(output_dir), len(job.items), rank, on_disk)
        cap = work_queue.fair_share(len(job.items), nproc)
        share = work_queue.Share(job.items, work_queue.Puller(queue, cap), cap)
        run_shard(job, share, Path(output_dir), rank, device, position=rank)
        queue.close()  # after the shard is on disk: from now on this worker counts as gone
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


def run(job: Job, output_dir: Path, devices: list[str], run_config: dict) -> RunResult:
    """Generate every missing sample of the job; the result streams the samples of the requested items.

    ``devices`` has one entry per data-parallel worker.
    """
    output_dir = Path(output_dir)
    check_run_config(output_dir, run_config)
    created, had_lock = not output_dir.exists(), (output_dir / LOCK_FILE).exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = hold_lock(output_dir)
    fresh, ok = not (output_dir / RUN_CONFIG).is_file(), False
    try:
        write_run_config(output_dir, run_config)
        done = done_keys(output_dir)
        todo = [it for it in job.items if it.key not in done]
        if todo:
            print(f"{len(job.items) - len(todo)} of {len(job.items)} samples already in {output_dir}; "
                  f"generating {len(todo)} on {len(devices)} worker(s)", file=sys.stderr)
        if len(devices) == 1:
            run_shard(job, todo, output_dir, 0, devices[0])
        elif todo:
            _run_parallel(job, output_dir, devices, todo)
        ok = True
    finally:
        lock.close()
        if not ok and fresh:
            _forget_empty_run(output_dir, created, had_lock)
    return finished(output_dir, job.items)


def _forget_empty_run(output_dir: Path, created: bool, had_lock: bool) -> None:
    """A new run that failed before its first sample (engine build, out of memory, Ctrl-C) leaves nothing behind,
    so that the corrected command is not refused as "a run with other settings"."""
    shards = sorted(output_dir.glob(SHARD_GLOB))
    if any(next(complete_lines(f), None) for f in shards):
        return  # samples to keep: the run config must stay with them
    meta = [*output_dir.glob(run_info.TIMING_GLOB), output_dir / run_info.COST_MODEL]  # the run's bookkeeping
    for f in [*shards, *meta, output_dir / RUN_CONFIG, *([] if had_lock else [output_dir / LOCK_FILE])]:
        f.unlink(missing_ok=True)
    if created:
        try:
            output_dir.rmdir()
        except OSError:  # something else was written there: leave it
            pass


def _run_parallel(job: Job, output_dir: Path, devices: list[str], todo: list[WorkItem]) -> None:
    """One worker per device, all pulling from one queue of ``todo`` (work_queue.py)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    order = [todo[i] for i in work_queue.queue_order([it.key for it in todo])]
    work_queue.reset_queue(output_dir)  # this session's claims only: what is missing is on no worker yet
    procs = []
    devices = devices[:len(order)]  # fewer samples than devices: no worker that could get nothing
    for rank, device in enumerate(devices):
        p = ctx.Process(target=_dp_worker, name=f"litesys-dp{rank}",
                        args=(replace(job, items=order), str(output_dir), rank, len(devices), device))
        p.start()
        procs.append((rank, p))
    failed = []
    try:
        for rank, p in procs:
            p.join()
            if p.exitcode != 0:
                failed.append(f"worker {rank} (exit code {p.exitcode})")
    finally:
        for _, p in procs:
            if p.is_alive():
                p.kill()
                p.join()
        work_queue.remove_queue(output_dir)
    if failed:
        raise RunError(f"{', '.join(failed)} failed (see above); finished samples are saved - rerun the same "
                       "command to resume")
