"""eval_math.py under torchrun: tensor parallel, and data parallel over replicas of ``--tp`` ranks.

    torchrun --nproc_per_node 2 eval_math_dist.py --model Qwen/Qwen3-0.6B --task gsm8k            # one model on 2 GPUs
    torchrun --nproc_per_node 8 eval_math_dist.py --tp 2 --model Qwen/Qwen3-32B --task aime24     # 4 replicas x TP 2

``--tp`` (default: all processes) must divide the world size; the world splits into world / tp replicas, each
taking its share of the samples into samples.<replica>.jsonl (resumable, as eval_math.py). All other flags are
eval_math.py's. See docs/tp.md, also for multi-node launches.
"""


def main() -> None:
    from litesys.eval.dist_runner import torchrun_main
    from litesys.eval.tasks.math.main import main as eval_main

    torchrun_main(eval_main, "eval_math_dist.py")


if __name__ == "__main__":
    main()
