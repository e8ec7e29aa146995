"""LiveCodeBench generation (grading is separate: grade_lcb.py); resumable, data parallel.

    python eval_lcb.py --model Qwen/Qwen3-8B --release v5 --trial 4 --gen_len 32768 --nproc 8

Tensor parallel (models too large for one GPU): torchrun ... eval_lcb_dist.py --tp N with the same flags.
See docs/eval_lcb.md for the flags and the output layout.
"""
from litesys.eval.tasks.lcb.main import main

if __name__ == "__main__":  # guarded: data-parallel workers import this file
    main()
