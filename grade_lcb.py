"""Grade LiveCodeBench generations in a sandbox, as lcb_runner scores them and as real scripts; resumable.

    python grade_lcb.py --output_dir outputs/lcb/Qwen3-8B   # verdicts: outputs/lcb/Qwen3-8B/verdicts.jsonl

Run as root (e.g. in a container) for the full sandbox. See docs/eval_lcb.md.
"""
from litesys.eval.tasks.lcb.grade_main import main

if __name__ == "__main__":
    main()
