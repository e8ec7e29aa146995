#!/usr/bin/env bash
# Accuracy against cost (docs/cost.md): one model, dense attention vs Quest, at two generation budgets, then one
# report comparing the four runs: pass@1 and pass@k vs modelled eFLOPs and vs measured GPU-seconds per problem, the
# Pareto frontier across runs (budget sweeps also come from truncating each run's samples).
#   bash examples/cost_sweep.sh [MODEL] [TASK] [TRIAL] [NPROC] [more eval_math.py flags]
# Defaults: Qwen/Qwen3-8B aime24 4 1. BUDGETS="8192 16384" (generation budgets, one run each); QUEST_K pages per
# step (default 1/8 of the largest budget's 16-token pages); OUT=DIR the parent folder (default outputs/cost_sweep);
# DATA_DIR=../shared/data for the offline files; DRY_RUN=1 prints the commands instead of running them.
# A CPU smoke run on a tiny checkpoint: BUDGETS="16 32" QUEST_K=1 bash examples/cost_sweep.sh CKPT gsm8k 2 1 \
#     --limit 4 --device cpu
set -euo pipefail
source "$(dirname "$0")/common.sh"
help_if_asked "$@"
MODEL=${1:-Qwen/Qwen3-8B}
TASK=${2:-aime24}
TRIAL=${3:-4}
NPROC=${4:-1}
BUDGETS=${BUDGETS:-8192 16384}
OUT=${OUT:-outputs/cost_sweep}
read -r -a budgets <<< "$BUDGETS"
top=${budgets[-1]}
QUEST_K=${QUEST_K:-$(( top / 16 / 8 > 1 ? top / 16 / 8 : 1 ))}
runs=()
for budget in "${budgets[@]}"; do
    for method in dense quest; do
        dir="$OUT/$TASK/$(basename "$MODEL")-$method-$budget"
        sparse=()
        [[ $method == quest ]] && sparse=(--quest_topk_blocks "$QUEST_K" --quest_block_size 16)
        run "$PYTHON" "$ROOT/eval_math.py" --model "$MODEL" --task "$TASK" --trial "$TRIAL" --gen_len "$budget" \
            --max_len $(( budget + 2048 )) --nproc "$NPROC" --output_dir "$dir" ${DATA_DIR:+--data-dir "$DATA_DIR"} \
            "${sparse[@]}" "${@:5}"
        runs+=("$dir")
    done
done
run "$PYTHON" -m litesys.report "${runs[@]}" --png "$OUT/$TASK/pass1_vs_budget.png" \
    --cost-png "$OUT/$TASK/accuracy_vs_cost.png" --json "$OUT/$TASK/report.json"
