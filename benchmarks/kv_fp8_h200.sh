#!/usr/bin/env bash
# Every FP8-KV measurement of docs/kv_fp8.md in one device call (~7 min on an H200): throughput fp8 vs bf16 pages
# (Qwen3-8B 32 x 128 -> 8192, Qwen3-0.6B 64 x 128 -> 4096), 32K-sequence capacity, teacher-forced accuracy, GPU
# tests. Each step has its own time limit, so one failure leaves the others' results. Writes $OUT/log.txt and
# $OUT/h200_kv_fp8.json (all results so far, merged after every step; commit it as
# benchmarks/results/h200_kv_fp8.json).
set -u
export PYTHONUNBUFFERED=1 LITESYS_NO_PROGRESS=1
R=$(mktemp -d)
O=${OUT:-/tmp}
LOG=$O/log.txt
merge() {
  python3 - "$R" "$O/h200_kv_fp8.json" <<'PY'
import json, sys
from pathlib import Path
res = {p.stem: json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("*.json"))}
Path(sys.argv[2]).write_text(json.dumps(res, indent=1) + "\n")
keys = ("tok_s", "ratio_to_floor", "decode_ms_per_step", "floor_ms_per_step", "kv_pages", "bf16_sequences",
        "fp8_sequences", "kl_mean", "kl_p99", "top1_agreement", "logit_rel_err_mean")
for k, r in res.items():
    print(k, {x: round(r[x], 5) for x in keys if x in r})
PY
}
step() {
  local limit=$1; shift
  echo "== $(date +%T) $*" >>"$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  echo "== rc $?" >>"$LOG"
  merge >"$O/summary.txt" 2>&1
}
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem --format=csv >>"$LOG" 2>&1
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)" >>"$LOG" 2>&1
# STEPS: a subset to run (default all): 8b_auto 8b_fp8 kernel 06b_auto 06b_fp8 capacity acc8b tests acc06b
want() { [ -z "${STEPS:-}" ] || [[ " $STEPS " == *" $1 "* ]]; }
for kv in auto fp8_e4m3; do
  want "8b_${kv%%_*}" && step 150 env OUT="$R" python3 benchmarks/throughput.py --config qwen3_8b -n 32 -p 128 \
    -g 8192 --kv-cache-dtype $kv
done
want kernel && step 40 env OUT="$R" python3 benchmarks/kv_fp8.py kernel
for kv in auto fp8_e4m3; do
  want "06b_${kv%%_*}" && step 50 env OUT="$R" python3 benchmarks/throughput.py --config qwen3_0.6b -n 64 -p 128 \
    -g 4096 --kv-cache-dtype $kv
done
want capacity && step 70 env OUT="$R" python3 benchmarks/kv_fp8.py capacity --config qwen3_8b --seq-len 32768
want acc8b && step 55 env OUT="$R" python3 benchmarks/kv_fp8.py accuracy --config qwen3_8b --prompts 8 --tokens 4096
if want tests; then
  step 40 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_kv_fp8.py tests/test_kernels_decode.py \
    tests/test_kernels_prefill.py
  step 45 python3 -m pytest -q -p no:cacheprovider tests/test_kv_fp8.py \
    -k "quantize or calibration or write_kernel or fused_decode or rounding or logits_and or prefill_fp8 or quest_fp8"
fi
want acc06b && step 30 env OUT="$R" python3 benchmarks/kv_fp8.py accuracy --config qwen3_0.6b --prompts 8 \
  --tokens 4096
grep -E "^== |tok/s|passed|failed|Error" "$LOG" | tail -40
cat "$O/summary.txt"
