#!/usr/bin/env bash
# AMC 2023 (40 problems, math-ai/amc23); 8 samples per problem (settings: eval_math_task.sh).
#   bash examples/eval_amc23.sh [MODEL] [NPROC] [more eval_math.py flags]      (DATA_DIR=../shared/data: offline)
source "$(dirname "$0")/common.sh" && help_if_asked "$@"
exec bash "$(dirname "$0")/eval_math_task.sh" amc23 8 "$@"
