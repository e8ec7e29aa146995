"""eval_lcb.py under torchrun: tensor parallel, and data parallel over replicas of ``--tp`` ranks.

    torchrun --nproc_per_node 4 eval_lcb_dist.py --model Qwen/Qwen3-32B --release v5 --trial 4   # one model on 4 GPUs
    torchrun --nproc_per_node 8 eval_lcb_dist.py --tp 2 --model Qwen/Qwen3-14B --release v5      # 4 replicas x TP 2

``--tp`` (default: all processes) must divide the world size; the world splits into world / tp replicas, each
taking its share of the samples into samples.<replica>.jsonl (resumable, as eval_lcb.py). All other flags are
eval_lcb.py's; grade the output with grade_lcb.py. See docs/eval_lcb.md and docs/tp.md.
"""


def main() -> None:
    from litesys.eval.dist_runner import torchrun_main
    from litesys.eval.tasks.lcb.main import main as eval_main

    torchrun_main(eval_main, "eval_lcb_dist.py")


if __name__ == "__main__":
    main()
