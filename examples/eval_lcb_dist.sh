#!/usr/bin/env bash
# LiveCodeBench v5 with a model too large for one GPU: eval_lcb_dist.py under torchrun, GPUS processes as
# GPUS / TP replicas of TP GPUs each (default Qwen3-32B, 8 GPUs = 2 replicas x TP 4), then sandboxed grading
# (as root for the full sandbox). Resumable: rerun after a crash, with any GPUS/TP.
#   bash examples/eval_lcb_dist.sh [MODEL] [GPUS] [TP] [more eval_lcb.py flags]
set -euo pipefail
source "$(dirname "$0")/common.sh" && help_if_asked "$@"  # --help: this header
MODEL=${1:-Qwen/Qwen3-32B}
GPUS=${2:-8}
TP=${3:-4}
OUT=outputs/lcb_v5/$(basename "$MODEL")
torchrun --standalone --nproc_per_node "$GPUS" eval_lcb_dist.py --tp "$TP" --model "$MODEL" --release v5 \
    --trial 4 --gen_len 32768 --max_len 34816 --temperature 0.6 --top_p 0.95 --top_k 20 --output_dir "$OUT" "${@:4}"
python grade_lcb.py --output_dir "$OUT" --timeout 6   # verdicts: $OUT/verdicts.jsonl, both I/O modes
