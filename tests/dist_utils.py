"""Multi-process test harness: run a function on N CPU ranks (gloo, torchrun's environment), gather results.

    results = run_ranks(my_fn, 2, ckpt_path)          # my_fn(rank, world, ckpt_path) on ranks 0 and 1

``fn`` must be a module-level function (ranks are spawned, so it is imported by name). Each rank sees the
environment torchrun would give it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so code under
test initialises its process group exactly as under torchrun. A rank that raises fails the call with its
traceback and the other ranks (likely blocked in a collective) are killed; when several fail, the earliest
error leads (the others are usually peers noticing the failed rank is gone). A run past ``timeout`` seconds
fails instead of hanging CI.

``torchrun(script, *args)`` runs a script under the real ``torchrun`` (``python -m torch.distributed.run``) instead.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 1.0  # after a first error, how long to collect the others before choosing which one to show


class RankError(RuntimeError):
    """A rank raised (message: its traceback), died, or the ranks ran out of time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The variables torchrun sets for one rank of a single-node job."""
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
            "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def _rank_main(fn: Callable, rank: int, world: int, port: int, args: tuple, kwargs: dict, conn, threads: int
               ) -> None:
    os.environ.update(rank_env(rank, world, port))
    os.environ.setdefault("LITESYS_NO_PROGRESS", "1")
    import torch

    torch.set_num_threads(threads)  # N ranks on a few cores: no oversubscription
    try:
        result = fn(rank, world, *args, **kwargs)
        payload = ("ok", pickle.dumps(result))  # plain pickle: tensors are copied, not shared via fds
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
        payload = ("error", f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
    # sent (synchronously) before the process group goes away, so a root cause is stamped before its echoes
    conn.send((*payload, time.time()))
    if torch.distributed.is_initialized():
        if payload[0] == "ok":
            torch.distributed.barrier()  # nobody tears down while a peer still needs it
        torch.distributed.destroy_process_group()
    conn.close()


def run_ranks(fn: Callable[..., Any], world: int, *args, timeout: float = 120.0, threads: int = 1,
              **kwargs) -> list[Any]:
    """``[fn(0, world, *args, **kwargs), ..., fn(world - 1, ...)]``, each call in its own spawned process."""
    ctx = mp.get_context("spawn")
    port = free_port()
    pipes, procs = [], []
    for r in range(world):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_rank_main, args=(fn, r, world, port, args, kwargs, send, threads), name=f"rank{r}")
        p.start()
        send.close()  # the child holds the only write end: EOF here means it died
        pipes.append(recv)
        procs.append(p)
    results: dict[int, Any] = {}
    errors: list[tuple[float, int, str]] = []  # (time, rank, message)
    deadline, give_up = time.monotonic() + timeout, None
    try:
        open_ = {pipes[r]: r for r in range(world)}
        while open_ and (give_up is None or time.monotonic() < give_up):
            if time.monotonic() > deadline:
                missing = [r for r in range(world) if r not in results and all(e[1] != r for e in errors)]
                errors.append((time.time(), -1, f"timed out after {timeout:.0f}s waiting for rank(s) {missing} of "
                                                f"{world} (a hang in a collective?)"))
                break
            for c in wait(list(open_), timeout=0.2):
                r = open_.pop(c)
                try:
                    status, payload, stamp = c.recv()
                except EOFError:
                    procs[r].join(timeout=5)
                    errors.append((time.time(), r, f"rank {r} of {world} died with exit code {procs[r].exitcode} "
                                                   "without a result"))
                    continue
                if status == "ok":
                    results[r] = pickle.loads(payload)
                else:
                    errors.append((stamp, r, f"rank {r} of {world} failed: {payload}"))
            if errors and give_up is None:
                give_up = time.monotonic() + GRACE_S
    finally:
        for p in procs:
            p.join(timeout=5 if not errors else 0)
            if p.is_alive():
                p.kill()
                p.join()
    if errors:
        errors.sort()
        others = "".join(f"\n(then {m.splitlines()[0]})" for _, _, m in errors[1:])
        raise RankError(errors[0][2] + others)
    return [results[r] for r in range(world)]


def torchrun(script: Path, *args: str, nproc: int = 2, timeout: float = 180) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node nproc script args`` from the repository root, output captured."""
    # TMPDIR: torchrun's torchelastic_* folders and the ranks' multiprocessing folders go where they are removed
    with tempfile.TemporaryDirectory(prefix="litesys-torchrun-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "LITESYS_NO_PROGRESS": "1",
               "TMPDIR": tmp}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               str(script), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
