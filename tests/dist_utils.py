"""Multi-process test harness: run a function on N CPU ranks (gloo, torchrun's environment), gather results.

    results = run_ranks(my_fn, 2, ckpt_path)          # my_fn(rank, world, ckpt_path) on ranks 0 and 1

``fn`` must be a module-level function (ranks are spawned, so it is imported by name). Each rank sees the
environment torchrun would give it (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so code under
test initialises its process group exactly as under torchrun. The first rank to raise fails the call with
its traceback (the other ranks, likely blocked in a collective, are killed), and a run past ``timeout``
seconds fails instead of hanging CI.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any


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


def _rank_main(fn: Callable, rank: int, world: int, port: int, args: tuple, kwargs: dict, out: mp.Queue,
               threads: int) -> None:
    os.environ.update(rank_env(rank, world, port))
    os.environ.setdefault("LITESYS_NO_PROGRESS", "1")
    import torch

    torch.set_num_threads(threads)  # N ranks on a few cores: no oversubscription
    try:
        result = fn(rank, world, *args, **kwargs)
        payload = ("ok", pickle.dumps(result))  # plain pickle: tensors are copied, not shared via fds
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
        payload = ("error", f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}")
    finally:
        if torch.distributed.is_initialized():
            if payload[0] == "ok":
                torch.distributed.barrier()  # nobody tears down while a peer still needs it
            torch.distributed.destroy_process_group()
    out.put((rank, *payload))


def run_ranks(fn: Callable[..., Any], world: int, *args, timeout: float = 120.0, threads: int = 1,
              **kwargs) -> list[Any]:
    """``[fn(0, world, *args, **kwargs), ..., fn(world - 1, ...)]``, each call in its own spawned process."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(fn, r, world, port, args, kwargs, out, threads),
                         name=f"rank{r}") for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(results) < world:
            try:
                rank, status, payload = out.get(timeout=0.2)
            except queue.Empty:
                dead = [r for r, p in enumerate(procs) if r not in results and p.exitcode not in (None, 0)]
                if dead:
                    r = dead[0]
                    raise RankError(f"rank {r} of {world} died with exit code {procs[r].exitcode} without a "
                                    "result") from None
                if time.monotonic() > deadline:
                    missing = [r for r in range(world) if r not in results]
                    raise RankError(f"timed out after {timeout:.0f}s waiting for rank(s) {missing} of {world} "
                                    "(a hang in a collective?)") from None
                continue
            if status == "error":
                raise RankError(f"rank {rank} of {world} failed: {payload}")
            results[rank] = pickle.loads(payload)
    finally:
        for p in procs:
            p.join(timeout=5 if len(results) == world else 0)
            if p.is_alive():
                p.kill()
                p.join()
    return [results[r] for r in range(world)]
