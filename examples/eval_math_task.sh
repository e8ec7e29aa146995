#!/usr/bin/env bash
# One math task with Qwen3's thinking-mode sampling (temperature 0.6, top-p 0.95, top-k 20, min-p 0), 32K generation,
# TRIAL samples per problem: pass@1 is their mean; pass@k and maj@k for k = 1, 2, 4, ... <= TRIAL. Then the report
# (table + pass@1-vs-budget PNG). The per-task scripts (eval_aime24.sh, ...) call this one.
#   bash examples/eval_math_task.sh TASK TRIAL [MODEL] [NPROC] [more eval_math.py flags]
# Offline: DATA_DIR=../shared/data bash examples/eval_math_task.sh gsm8k 1
set -euo pipefail
TASK=${1:?usage: eval_math_task.sh TASK TRIAL [MODEL] [NPROC] [flags]}
TRIAL=${2:?usage: eval_math_task.sh TASK TRIAL [MODEL] [NPROC] [flags]}
MODEL=${3:-Qwen/Qwen3-8B}
NPROC=${4:-1}
OUT=outputs/$TASK/$(basename "$MODEL")
python eval_math.py --model "$MODEL" --task "$TASK" --trial "$TRIAL" --gen_len 32768 --max_len 34816 \
    --temperature 0.6 --top_p 0.95 --top_k 20 --min_p 0 --nproc "$NPROC" --output_dir "$OUT" \
    ${DATA_DIR:+--data-dir "$DATA_DIR"} "${@:5}"
python -m litesys.report "$OUT"
