#!/usr/bin/env bash
# LiveCodeBench v5 (the problems added in release_v5) with Qwen3: generate on all GPUs, then grade in the
# sandbox (as root for the full sandbox: programs then run as dedicated unprivileged uids).
#   bash examples/eval_lcb.sh Qwen/Qwen3-8B 8
set -euo pipefail
source "$(dirname "$0")/common.sh" && help_if_asked "$@"  # --help: this header
MODEL=${1:-Qwen/Qwen3-8B}
NPROC=${2:-1}
OUT=outputs/lcb_v5/$(basename "$MODEL")

python eval_lcb.py --model "$MODEL" --release v5 --trial 4 --gen_len 32768 --max_len 34816 \
    --temperature 0.6 --top_p 0.95 --top_k 20 --nproc "$NPROC" --output_dir "$OUT"
python grade_lcb.py --output_dir "$OUT" --timeout 6   # verdicts: $OUT/verdicts.jsonl, both I/O modes
