"""benchmarks/swap_vs_recompute.py on the CPU at tiny shapes: the tight pool really preempts one sequence, swap moves
exactly its pages' bytes (hand-computed from the shapes), and both ways back give the tokens of an unpreempted run;
benchmarks/deterministic.py's issue-scale flags and throughput.py --deterministic run end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import swap_vs_recompute as svr  # noqa: E402


def test_swap_and_recompute_of_one_preempted_sequence(tmp_path):
    res = svr.main(["--device", "cpu", "--configs", "qwen3_0.6b", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "swap_vs_recompute.json").read_text()) == json.loads(json.dumps(res))
    (run,) = res["runs"]
    assert run["prompt"] == 60 and run["page_size"] == 16
    tiny = svr.TINY  # fp32 K and V of every layer, KV head and slot of a page
    page_bytes = 2 * tiny["num_hidden_layers"] * 16 * tiny["num_key_value_heads"] * tiny["head_dim"] * 4
    for name, mode in run["modes"].items():
        swap, rec = mode["swap"], mode["recompute"]
        assert mode["unpreempted_preemptions"] == 0 and swap["preemptions"] == rec["preemptions"] == 1
        assert swap["page_bytes"] == page_bytes and swap["fallbacks"] == 0
        # preempted at its first page boundary: the 4 pages of its 60-token prompt go out and come back
        assert swap["bytes_moved"] == [4 * page_bytes]
        assert len(swap["swap_out_ms"]) == len(swap["swap_in_ms"]) == len(swap["pool_alloc_ms"]) == 1
        assert swap["pool_bytes"] == 4 << 30 and not swap["pool_pinned"]  # allocated once, at build (CPU: unpinned)
        assert swap["recompute_ms"] == [] and len(rec["recompute_ms"]) == 1 and "swap_out_ms" not in rec
        assert rec["needs_replay"] is (name == "deterministic")  # deterministic replays even dense
        assert swap["tokens_equal_unpreempted"] and rec["tokens_equal_unpreempted"]


def test_a_too_short_generation_names_the_flag():
    assert svr.tokens_to_preempt(60, 16) == 5  # 4 tokens to the boundary at 64, no spare page: preempted there
    assert svr.tight_pool(1024) == 2069  # 2 x 1024 prompt pages + the null page + the 1% admission reserve
    with pytest.raises(SystemExit, match="--new must exceed 5"):
        svr.main(["--device", "cpu", "--new", "5"])


@pytest.mark.parametrize("flag,value", [("--swap-gb", "-1"), ("--swap-gb", "0"), ("--page-size", "0"),
                                        ("--prompt", "-4"), ("--new", "-2")])
def test_a_bad_flag_is_one_line_exit_2_and_writes_nothing(tmp_path, flag, value):
    with pytest.raises(SystemExit) as err:
        svr.main(["--device", "cpu", "--out", str(tmp_path / "out"), flag, value])
    shown = float(value) if flag == "--swap-gb" else int(value)  # as argparse typed it
    assert err.value.code == 2 and str(err.value) == f"swap_vs_recompute.py: {flag} must be > 0, got {shown}"
    assert not (tmp_path / "out").exists()


def test_deterministic_engine_section_at_scale_flags(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "deterministic.py"), "--smoke", "--engine-only",
                        "--requests", "8", "--prompt-range", "4-30", "--new", "24", "--alone", "2",
                        "--pool-fraction", "0.5", "--resume-max-num-seqs", "3", "--modes", "deterministic",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "deterministic.json").read_text())
    assert set(res) == {"device", "torch", "engine"}  # sections 1-4 skipped
    e = res["engine"]
    assert e["requests"] == 8 and e["prompt"] == [4, 30] and e["new"] == 24 and "default" not in e
    det = e["deterministic"]
    assert det["alone_checked"] == 2 and det["resume_checked"] == 4 and det["resume_max_num_seqs"] == 3
    assert det["preemptions"] > 0 and det["swap_preemptions"] > 0 and det["swap_stats"]["swapped_in"] > 0
    assert det["alone_differ"] == det["preempted_differ"] == det["swap_preempted_differ"] == det["resume_differ"] == 0


def test_throughput_deterministic_flag_reaches_the_engine(tmp_path, monkeypatch):
    import throughput
    import transformers
    from checkpoints import BASE

    from litesys.engine import llm as llm_mod

    seen = []
    real = llm_mod.LLM.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        seen.append(self.config.deterministic)
    monkeypatch.setattr(llm_mod.LLM, "__init__", spy)
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(transformers.Qwen3Config(**BASE).to_dict()))
    out = tmp_path / "res.json"
    res = throughput.main(["--device", "cpu", "--config", str(cfg), "-n", "3", "-p", "5", "-g", "4", "--deterministic",
                           "--json", str(out)])
    assert res["deterministic"] is True and json.loads(out.read_text())["deterministic"] is True
    assert seen == [True]
