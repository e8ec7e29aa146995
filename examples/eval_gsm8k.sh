#!/usr/bin/env bash
# GSM8K test (1319 problems, openai/gsm8k main); 1 samples per problem (settings: eval_math_task.sh).
#   bash examples/eval_gsm8k.sh [MODEL] [NPROC] [more eval_math.py flags]      (DATA_DIR=../shared/data: offline)
source "$(dirname "$0")/common.sh" && help_if_asked "$@"
exec bash "$(dirname "$0")/eval_math_task.sh" gsm8k 1 "$@"
