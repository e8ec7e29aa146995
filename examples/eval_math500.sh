#!/usr/bin/env bash
# MATH-500 (500 problems, HuggingFaceH4/MATH-500; gold answers graded as LaTeX); 4 samples per problem (settings: eval_math_task.sh).
#   bash examples/eval_math500.sh [MODEL] [NPROC] [more eval_math.py flags]      (DATA_DIR=../shared/data: offline)
source "$(dirname "$0")/common.sh" && help_if_asked "$@"
exec bash "$(dirname "$0")/eval_math_task.sh" math500 4 "$@"
