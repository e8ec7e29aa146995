#!/usr/bin/env bash
# Tensor parallel through torchrun: Qwen3-0.6B on GSM8K with a 4K generation budget, one model split over 2 GPUs
# (eval_math_dist.py). With more GPUs than TP, the extra ones run data-parallel replicas (GPUS=8 TP=2: 4 x TP 2).
#   bash examples/example_tp.sh [TP] [GPUS] [more eval_math.py flags]      (DATA_DIR=../shared/data: offline)
set -euo pipefail
TP=${1:-2}
GPUS=${2:-$TP}
OUT=outputs/gsm8k/Qwen3-0.6B-tp$TP
torchrun --standalone --nproc_per_node "$GPUS" eval_math_dist.py --tp "$TP" --model Qwen/Qwen3-0.6B --task gsm8k \
    --gen_len 4096 --max_len 4608 --trial 1 --output_dir "$OUT" ${DATA_DIR:+--data-dir "$DATA_DIR"} "${@:3}"
python -m litesys.report "$OUT"
