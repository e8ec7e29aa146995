#!/usr/bin/env bash
# Data parallel: one engine per GPU, each on its share of the problems (samples.<rank>.jsonl), merged at the end.
# Qwen3-0.6B on GSM8K with a 4K generation budget.
#   bash examples/example_dp.sh [NPROC] [more eval_math.py flags]
# Offline: DATA_DIR=../shared/data bash examples/example_dp.sh 8
set -euo pipefail
NPROC=${1:-$(python -c "import torch; print(max(torch.cuda.device_count(), 1))")}
OUT=outputs/gsm8k/Qwen3-0.6B-dp
python eval_math.py --model Qwen/Qwen3-0.6B --task gsm8k --nproc "$NPROC" --gen_len 4096 --max_len 4608 \
    --trial 1 --output_dir "$OUT" ${DATA_DIR:+--data-dir "$DATA_DIR"} "${@:2}"
python -m litesys.report "$OUT"
