#!/usr/bin/env bash
# GSM8K test (1319 problems, openai/gsm8k main).
# Qwen3 thinking-mode sampling (temperature 0.6, top-p 0.95, top-k 20), 32K generation, 1 samples per problem:
# pass@1 is their mean; pass@k and maj@k for k = 1, 2, 4, ... <= 1.
#   bash examples/eval_gsm8k.sh [MODEL] [NPROC] [more eval_math.py flags]
# Offline: DATA_DIR=../shared/data bash examples/eval_gsm8k.sh
set -euo pipefail
MODEL=${1:-Qwen/Qwen3-8B}
NPROC=${2:-1}
OUT=outputs/gsm8k/$(basename "$MODEL")
python eval_math.py --model "$MODEL" --task gsm8k --trial 1 --gen_len 32768 --max_len 34816 \
    --temperature 0.6 --top_p 0.95 --top_k 20 --min_p 0 --nproc "$NPROC" --output_dir "$OUT" \
    ${DATA_DIR:+--data-dir "$DATA_DIR"} "${@:3}"
python -m litesys.report "$OUT"
