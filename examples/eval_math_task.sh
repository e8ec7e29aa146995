#!/usr/bin/env bash
# One math task with Qwen3's thinking-mode sampling (temperature 0.6, top-p 0.95, top-k 20, min-p 0), 32K generation,
# TRIAL samples per problem: pass@1 is their mean; pass@k and maj@k for k = 1, 2, 4, ... <= TRIAL. Then the report
# (table + pass@1-vs-budget PNG). The per-task scripts (eval_aime24.sh, ...) call this one.
#   bash examples/eval_math_task.sh TASK TRIAL [MODEL] [NPROC] [more eval_math.py flags]
# Offline: DATA_DIR=../shared/data bash examples/eval_math_task.sh gsm8k 1
# Later flags win (e.g. --gen_len 4096 --max_len 4608). OUT=DIR sets the output folder (default
# outputs/TASK/<model name>); DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
help_if_asked "$@"
TASK=${1:?usage: eval_math_task.sh TASK TRIAL [MODEL] [NPROC] [flags] (see --help)}
TRIAL=${2:?usage: eval_math_task.sh TASK TRIAL [MODEL] [NPROC] [flags] (see --help)}
MODEL=${3:-Qwen/Qwen3-8B}
NPROC=${4:-1}
OUT=${OUT:-outputs/$TASK/$(basename "$MODEL")}
run "$PYTHON" "$ROOT/eval_math.py" --model "$MODEL" --task "$TASK" --trial "$TRIAL" --gen_len 32768 --max_len 34816 \
    --temperature 0.6 --top_p 0.95 --top_k 20 --min_p 0 --nproc "$NPROC" --output_dir "$OUT" \
    ${DATA_DIR:+--data-dir "$DATA_DIR"} "${@:5}"
run "$PYTHON" -m litesys.report "$OUT"
