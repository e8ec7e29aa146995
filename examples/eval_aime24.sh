#!/usr/bin/env bash
# AIME 2024 (30 problems, HuggingFaceH4/aime_2024); 16 samples per problem (settings: eval_math_task.sh).
#   bash examples/eval_aime24.sh [MODEL] [NPROC] [more eval_math.py flags]      (DATA_DIR=../shared/data: offline)
source "$(dirname "$0")/common.sh" && help_if_asked "$@"
exec bash "$(dirname "$0")/eval_math_task.sh" aime24 16 "$@"
