"""benchmarks/deterministic.py runs end to end at tiny shapes on the CPU interpreter (the GPU run is the lead's):
every section fills its JSON and the invariant paths come out bitwise invariant."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_writes_every_section(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}  # tiny ops
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "deterministic.py"), "--smoke", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "deterministic.json").read_text())
    assert res["all_invariant"] is True
    assert {s["proj"] for s in res["gemm"]} == {"qkv", "o", "gate_up", "down", "lm_head"}
    for s in res["gemm"]:
        assert s["invariant"] and s["invariant_bad_M"] == [] and s["rel_err_vs_fp32"] < 2e-2
        assert set(s["times"]) == {"1", "8", "40"} and all(t["invariant_ms"] > 0 for t in s["times"].values())
        assert len(s["sweep"]) == 2 and s["same_block_k_tiles_bitwise_equal"]["32"] in (True, False)
    assert set(res["step"]["tiny"]) == {"1", "8", "40"}
    for a in res["attention"]:
        assert set(a) == {"ctx", "batch", "default", "split_64", "split_128"}
        assert a["split_64"]["alone_equals_batch"] and a["split_128"]["alone_equals_batch"]
        assert a["split_64"]["rel_err_vs_default"] < 1e-2
    det = res["engine"]["deterministic"]
    assert det["alone_differ"] == 0 and det["preempted_differ"] == 0 and det["preemptions"] > 0
    assert res["engine"]["default"]["tok_per_s"] > 0 and res["engine"]["tok_per_s_ratio"] > 0
    assert "invariant GEMM" in r.stdout and "all invariant paths bitwise: True" in r.stdout
