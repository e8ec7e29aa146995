"""The runner under torchrun: data-parallel replicas of ``tp`` tensor-parallel ranks each.

Drop-in for ``runner.run`` (same arguments, ``args.tensor_parallel_size`` = tp). With ``world = R * tp``
processes, replica ``r`` (global ranks ``[r * tp, (r + 1) * tp)``) generates ``runner.split_work(todo, R)[r]`` into
``samples.<r>.jsonl``, the same resumable shard files as ``eval_math.py --nproc R``; only its tp-rank 0
opens the file (the other ranks of the replica run the same ``generate`` call, in lockstep, and write nothing).

Global rank 0 alone takes the output folder's lock, checks/writes the run config, and lists the samples
already done; it broadcasts that list so every rank splits exactly the same work (no rank reads the folder
while another writes it). A failing rank raises, and torchrun takes the whole job down.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from litesys.engine.distributed import init_tensor_parallel, layout
from litesys.eval import runner
from litesys.eval.runner import Job, JobFactory, RunError, RunResult

# Replicas finish at different times; the wait for the slowest must not trip a collective timeout (NCCL's
# default is 10 minutes), so control messages go over a CPU (gloo) group with a long one.
CONTROL_TIMEOUT = timedelta(days=7)


def run_distributed(job_factory: JobFactory, args: argparse.Namespace, output_dir: Path, devices: list[str],
                    run_config: dict, job: Job | None = None) -> RunResult | None:
    """Generate this process's share; on global rank 0 return the run's result, elsewhere ``None``."""
    tp = getattr(args, "tensor_parallel_size", 1)
    if "WORLD_SIZE" not in os.environ and not dist.is_initialized() and tp == 1:
        return runner.run(job_factory, args, output_dir, devices, run_config, job)  # plain python: no torchrun
    lay = layout(tp)  # ValueError (one line) when tp does not divide the world size
    device = devices[0]
    # every rank creates every replica group now, before any replica can skip work (new_group is collective)
    init_tensor_parallel(tp, device)
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    output_dir = Path(output_dir)
    job = job or job_factory(args)

    lock, decision = None, [None]
    if lay.rank == 0:
        try:
            runner.check_run_config(output_dir, run_config)
            output_dir.mkdir(parents=True, exist_ok=True)
            lock = runner._hold_lock(output_dir)
            runner.write_run_config(output_dir, run_config)
            decision = [sorted(runner.done_keys(output_dir))]
        except RunError as e:
            decision = [str(e)]
    dist.broadcast_object_list(decision, src=0, group=control)
    if isinstance(decision[0], str):
        raise RunError(decision[0])
    done = {tuple(k) for k in decision[0]}
    todo = [it for it in job.items if it.key not in done]
    mine = runner.split_work(todo, lay.num_replicas)[lay.replica]
    if lay.rank == 0 and todo:
        print(f"{len(job.items) - len(todo)} of {len(job.items)} samples already in {output_dir}; generating "
              f"{len(todo)} on {lay.num_replicas} replica(s) x TP {tp}", file=sys.stderr)
    try:
        if lay.tp_rank == 0:
            runner.run_shard(job, mine, output_dir, lay.replica, device, position=lay.replica)
        elif mine:  # the very call run_shard makes, so the replica's ranks take identical steps
            job.make_llm(device).generate([it.prompt for it in mine], [it.sampling for it in mine], progress=False)
        dist.barrier(group=control)  # every replica's samples are on disk
    finally:
        if lock is not None:
            lock.close()
    if lay.rank != 0:
        return None
    return runner.finished(output_dir, job.items)


def torchrun_main(eval_main: Callable[..., object], prog: str, argv: list[str] | None = None) -> None:
    """The ``*_dist.py`` entry points: ``--tp`` and the launch checks, then ``eval_main`` with this runner.

    ``eval_main(argv, prog=, tensor_parallel_size=, runner=)`` is a task's main (math_eval.main, lcb_eval.main);
    every flag but ``--tp`` is the task's own. Bad launches exit with one line and code 2 before any work.
    """
    from litesys.eval import cli

    pre = cli.Parser(prog=prog, add_help=False)  # one-line errors (--tp abc) like the task's own flags
    pre.add_argument("--tp", "--tensor_parallel_size", "--tensor-parallel-size", dest="tp", type=int, default=None)
    known, argv = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    tp = world if known.tp is None else known.tp  # --tp 0 is an error, not "all processes"
    if tp < 1:
        cli.die(f"--tp must be >= 1, got {tp}", prog)
    if "WORLD_SIZE" not in os.environ and tp > 1:
        cli.die(f"--tp {tp} needs one process per rank: launch with torchrun --nproc_per_node {tp} {prog} ...", prog)
    if world % tp:
        cli.die(f"--tp {tp} does not divide the world size {world}; start a multiple of {tp} processes "
                "(--nproc_per_node x nodes) or pick a --tp dividing it", prog)
    if "--nproc" in argv or any(a.startswith("--nproc=") for a in argv):
        cli.die("--nproc is the single-process scripts' data parallelism; under torchrun the world size sets the "
                "GPUs", prog)
    local = os.environ.get("LOCAL_RANK")
    if local is not None and not any(a == "--device" or a.startswith("--device=") for a in argv):
        import torch

        argv += ["--device", f"cuda:{local}" if torch.cuda.is_available() else "cpu"]  # one GPU per local rank
    eval_main(argv, prog=prog, tensor_parallel_size=tp, runner=run_distributed)
