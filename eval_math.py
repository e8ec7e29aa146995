"""Math evaluation: AIME24/25, AMC23, MATH500, GSM8K (or a local file) with pass@k, resumable, data parallel.

    python eval_math.py --model Qwen/Qwen3-0.6B --task gsm8k --gen_len 4096 --trial 4 --nproc 8

See docs/eval_math.md for the flags and the output layout.
"""
from litesys.eval.tasks.math.main import main

if __name__ == "__main__":  # guarded: data-parallel and grading workers import this file
    main()
