"""eval_math.py under torchrun, for tensor parallelism.

    torchrun --nproc_per_node 1 eval_math_dist.py --model Qwen/Qwen3-0.6B --task gsm8k

The tensor-parallel engine comes in its own issue; until then only a world size of 1 runs.
"""
import os
import sys


def main() -> None:
    from litesys.eval import cli
    from litesys.eval.math_eval import main as eval_main

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        cli.die(f"tensor parallelism (world size {world}) is not available yet - it comes with the TP engine; "
                "run torchrun --nproc_per_node 1, or eval_math.py --nproc N for data parallelism",
                "eval_math_dist.py")
    if "--nproc" in sys.argv or "--nproc=" in " ".join(sys.argv):
        cli.die("--nproc is eval_math.py's data parallelism; under torchrun the world size sets the GPUs",
                "eval_math_dist.py")
    local = os.environ.get("LOCAL_RANK")
    argv = sys.argv[1:]
    if local is not None and "--device" not in argv:
        argv += ["--device", f"cuda:{local}"]
    eval_main(argv, prog="eval_math_dist.py", tensor_parallel_size=world)


if __name__ == "__main__":
    main()
