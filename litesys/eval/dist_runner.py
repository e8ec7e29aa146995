"""The runner under torchrun: data-parallel replicas of ``tp`` tensor-parallel ranks each.

Drop-in for ``runner.run`` (same arguments; ``job.tensor_parallel_size`` = tp). With ``world = R * tp``
processes, replica ``r`` (global ranks ``[r * tp, (r + 1) * tp)``) writes ``samples.<r>.jsonl``, the same resumable
shard files as ``eval_math.py --nproc R``. The replicas pull samples from one queue in the ``torch.distributed``
store as their engines free slots (work_queue.py), so they finish together: a replica's tp-rank 0 claims and
opens the file; its other ranks make the same ``generate`` calls with the same pulls, in lockstep, and write nothing.

Global rank 0 alone takes the output folder's lock, checks/writes the run config, and lists the samples
already done; it broadcasts that list so every rank holds exactly the same queue (no rank reads the folder
while another writes it), with a name for this run's queue in the store. A failing rank raises, and torchrun
takes the whole job down.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from litesys.distributed import check_launch, init_tensor_parallel, layout
from litesys.eval import runner, work_queue
from litesys.eval.fileio import hold_lock
from litesys.eval.runner import Job, RunError, RunResult

# Replicas finish at different times; the wait for the slowest must not trip a collective timeout (NCCL's
# default is 10 minutes), so control messages go over a CPU (gloo) group with a long one.
CONTROL_TIMEOUT = timedelta(days=7)


def run_distributed(job: Job, output_dir: Path, devices: list[str], run_config: dict) -> RunResult | None:
    """Generate this process's share; on global rank 0 return the run's result, elsewhere ``None``."""
    tp = job.tensor_parallel_size
    if "WORLD_SIZE" not in os.environ and not dist.is_initialized() and tp == 1:
        return runner.run(job, output_dir, devices, run_config)  # plain python: no torchrun
    lay = layout(tp)  # ValueError (one line) when tp does not divide the world size
    device = devices[0]
    # every rank creates every replica group now, before any replica can skip work (new_group is collective)
    init_tensor_parallel(tp, device)
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    output_dir = Path(output_dir)

    lock, decision = None, [None, None]
    if lay.rank == 0:
        try:
            runner.check_run_config(output_dir, run_config)
            output_dir.mkdir(parents=True, exist_ok=True)
            lock = hold_lock(output_dir)
            runner.write_run_config(output_dir, run_config)
            decision = [sorted(runner.done_keys(output_dir)), f"litesys/dp/{os.getpid()}-{time.time_ns()}"]
        except RunError as e:
            decision = [str(e), None]
    dist.broadcast_object_list(decision, src=0, group=control)
    if isinstance(decision[0], str):
        raise RunError(decision[0])
    done = {tuple(k) for k in decision[0]}
    todo = [it for it in job.items if it.key not in done]
    store = dist.distributed_c10d._get_default_store()  # torchrun's store: every rank reaches it
    share = work_queue.replica_share(todo, store, decision[1], lay.replica, lay.num_replicas, lay.tp_rank, tp)
    if lay.rank == 0 and todo:
        print(f"{len(job.items) - len(todo)} of {len(job.items)} samples already in {output_dir}; generating "
              f"{len(todo)} on {lay.num_replicas} replica(s) x TP {tp}", file=sys.stderr)
    try:
        if lay.tp_rank == 0:
            runner.run_shard(job, share, output_dir, lay.replica, device, position=lay.replica)
        elif todo:  # the very calls run_shard makes, with its lead's pulls, so the ranks take identical steps
            work_queue.generate_share(job.make_llm(device), share)
        dist.barrier(group=control)  # every replica's samples are on disk
    finally:
        if lock is not None:
            lock.close()
    if lay.rank != 0:
        return None
    return runner.finished(output_dir, job.items)


def torchrun_main(eval_main: Callable[..., object], prog: str, argv: list[str] | None = None) -> None:
    """The ``*_dist.py`` entry points: ``--tp`` and the launch checks, then ``eval_main`` with this runner.

    ``eval_main(argv, prog=, tensor_parallel_size=, runner=)`` is a task's main (tasks/math/main.py,
    tasks/lcb/main.py); every flag but ``--tp`` is the task's own. Bad launches exit with one line and code 2
    before any work.
    """
    from litesys.eval import cli

    pre = cli.Parser(prog=prog, add_help=False)  # one-line errors (--tp abc) like the task's own flags
    pre.add_argument("--tp", "--tensor_parallel_size", "--tensor-parallel-size", dest="tp", type=int, default=None)
    known, argv = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    tp = world if known.tp is None else known.tp  # --tp 0 is an error, not "all processes"
    try:
        check_launch(tp, world if "WORLD_SIZE" in os.environ else None, "--tp", prog)
    except ValueError as e:
        cli.die(str(e), prog)
    if "--nproc" in argv or any(a.startswith("--nproc=") for a in argv):
        cli.die("--nproc is the single-process scripts' data parallelism; under torchrun the world size sets the "
                "GPUs", prog)
    local = os.environ.get("LOCAL_RANK")
    if local is not None and not any(a == "--device" or a.startswith("--device=") for a in argv):
        import torch

        argv += ["--device", f"cuda:{local}" if torch.cuda.is_available() else "cpu"]  # one GPU per local rank
    eval_main(argv, prog=prog, tensor_parallel_size=tp, runner=run_distributed)
