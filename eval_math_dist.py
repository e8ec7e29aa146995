"""eval_math.py under torchrun: tensor parallel, and data parallel over replicas of ``--tp`` ranks.

    torchrun --nproc_per_node 2 eval_math_dist.py --model Qwen/Qwen3-0.6B --task gsm8k            # one model on 2 GPUs
    torchrun --nproc_per_node 8 eval_math_dist.py --tp 2 --model Qwen/Qwen3-32B --task aime24     # 4 replicas x TP 2

``--tp`` (default: all processes) must divide the world size; the world splits into world / tp replicas, each
taking its share of the samples into samples.<replica>.jsonl (resumable, as eval_math.py). All other flags are
eval_math.py's. See docs/tp.md, also for multi-node launches.
"""
import argparse
import os
import sys


def main() -> None:
    from litesys.eval import cli
    from litesys.eval.dist_runner import run_distributed
    from litesys.eval.math_eval import main as eval_main

    prog = "eval_math_dist.py"
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--tp", "--tensor_parallel_size", "--tensor-parallel-size", dest="tp", type=int, default=None)
    known, argv = pre.parse_known_args(sys.argv[1:])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    tp = known.tp or world
    if tp < 1:
        cli.die(f"--tp must be >= 1, got {tp}", prog)
    if "WORLD_SIZE" not in os.environ and tp > 1:
        cli.die(f"--tp {tp} needs one process per rank: launch with torchrun --nproc_per_node {tp} {prog} ...", prog)
    if world % tp:
        cli.die(f"--tp {tp} does not divide the world size {world}; start a multiple of {tp} processes "
                "(--nproc_per_node x nodes) or pick a --tp dividing it", prog)
    if "--nproc" in argv or any(a.startswith("--nproc=") for a in argv):
        cli.die("--nproc is eval_math.py's data parallelism; under torchrun the world size sets the GPUs", prog)
    local = os.environ.get("LOCAL_RANK")
    if local is not None and not any(a == "--device" or a.startswith("--device=") for a in argv):
        import torch

        argv += ["--device", f"cuda:{local}" if torch.cuda.is_available() else "cpu"]
    eval_main(argv, prog=prog, tensor_parallel_size=tp, runner=run_distributed)


if __name__ == "__main__":
    main()
