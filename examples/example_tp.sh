#!/usr/bin/env bash
# Tensor parallel through torchrun: Qwen3-0.6B on GSM8K with a 4K generation budget, one model over TP GPUs
# (eval_math_dist.py; --tp smaller than the process count runs data-parallel replicas, see docs/tp.md).
#   bash examples/example_tp.sh [TP] [more eval_math.py flags]
set -euo pipefail
TP=${1:-1}
OUT=outputs/gsm8k/Qwen3-0.6B-tp$TP
torchrun --standalone --nproc_per_node "$TP" eval_math_dist.py --model Qwen/Qwen3-0.6B --task gsm8k \
    --gen_len 4096 --max_len 4608 --trial 1 --output_dir "$OUT" ${DATA_DIR:+--data-dir "$DATA_DIR"} "${@:2}"
python -m litesys.report "$OUT"
