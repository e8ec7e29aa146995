#!/usr/bin/env bash
# Qwen3-32B (64 GB of bf16 weights) on AIME24 with tensor parallelism: GPUS processes under torchrun, split into
# GPUS / TP data-parallel replicas of TP GPUs each (default 8 GPUs = 2 replicas x TP 4, which leaves room for the
# KV cache of 16 samples x 32K tokens per problem; docs/tp.md). Resumable: rerun after a crash, any GPUS/TP.
#   bash examples/eval_aime_32b_tp.sh [GPUS] [TP] [more eval_math.py flags]      (DATA_DIR=../shared/data: offline)
# Several nodes: see docs/tp.md (same eval_math_dist.py flags, torchrun's rendezvous, a shared --output_dir).
# OUT=DIR sets the output folder; DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
source "$(dirname "$0")/common.sh"
help_if_asked "$@"
GPUS=${1:-8}
TP=${2:-4}
OUT=${OUT:-outputs/aime24/Qwen3-32B}
run "$TORCHRUN" --standalone --nproc_per_node "$GPUS" "$ROOT/eval_math_dist.py" --tp "$TP" --model Qwen/Qwen3-32B \
    --task aime24 --trial 16 --gen_len 32768 --max_len 34816 --temperature 0.6 --top_p 0.95 --top_k 20 --min_p 0 \
    --output_dir "$OUT" ${DATA_DIR:+--data-dir "$DATA_DIR"} "${@:3}"
run "$PYTHON" -m litesys.report "$OUT"
