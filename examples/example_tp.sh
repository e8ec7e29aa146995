#!/usr/bin/env bash
# Tensor parallel through torchrun: Qwen3-0.6B on GSM8K with a 4K generation budget, one model split over 2 GPUs
# (eval_math_dist.py). With more GPUs than TP, the extra ones run data-parallel replicas (GPUS=8 TP=2: 4 x TP 2).
#   bash examples/example_tp.sh [TP] [GPUS] [more eval_math.py flags]      (DATA_DIR=../shared/data: offline)
# MODEL=... and OUT=DIR override the model and the output folder; DRY_RUN=1 prints the commands.
set -euo pipefail
source "$(dirname "$0")/common.sh"
help_if_asked "$@"
TP=${1:-2}
GPUS=${2:-$TP}
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
OUT=${OUT:-outputs/gsm8k/$(basename "$MODEL")-tp$TP}
run "$TORCHRUN" --standalone --nproc_per_node "$GPUS" "$ROOT/eval_math_dist.py" --tp "$TP" --model "$MODEL" \
    --task gsm8k --gen_len 4096 --max_len 4608 --trial 1 --output_dir "$OUT" ${DATA_DIR:+--data-dir "$DATA_DIR"} "${@:3}"
run "$PYTHON" -m litesys.report "$OUT"
