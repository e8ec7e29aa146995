#!/usr/bin/env bash
# Data parallel: one engine per GPU, each on its share of the problems (samples.<rank>.jsonl), merged at the end.
# Qwen3-0.6B on GSM8K with a 4K generation budget.
#   bash examples/example_dp.sh [NPROC] [more eval_math.py flags]      (NPROC default: every visible GPU)
# Offline: DATA_DIR=../shared/data bash examples/example_dp.sh 8
# MODEL=... and OUT=DIR override the model and the output folder; DRY_RUN=1 prints the commands.
set -euo pipefail
source "$(dirname "$0")/common.sh"
help_if_asked "$@"
NPROC=${1:-$("$PYTHON" -c "import torch; print(max(torch.cuda.device_count(), 1))")}
MODEL=${MODEL:-Qwen/Qwen3-0.6B}
OUT=${OUT:-outputs/gsm8k/$(basename "$MODEL")-dp}
run "$PYTHON" "$ROOT/eval_math.py" --model "$MODEL" --task gsm8k --nproc "$NPROC" --gen_len 4096 --max_len 4608 \
    --trial 1 --output_dir "$OUT" ${DATA_DIR:+--data-dir "$DATA_DIR"} "${@:2}"
run "$PYTHON" -m litesys.report "$OUT"
