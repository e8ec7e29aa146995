#!/usr/bin/env bash
# AIME 2025 (30 problems, math-ai/aime25); 16 samples per problem (settings: eval_math_task.sh).
#   bash examples/eval_aime25.sh [MODEL] [NPROC] [more eval_math.py flags]      (DATA_DIR=../shared/data: offline)
source "$(dirname "$0")/common.sh" && help_if_asked "$@"
exec bash "$(dirname "$0")/eval_math_task.sh" aime25 16 "$@"
