"""benchmarks/throughput.py without a GPU: the ragged workload, the memory floor against hand-computed bytes, the
launch/GPU-time counting of profiler events, and one whole run on CPU (every request gets exactly its budget, the
step timer sees every decode step)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import throughput  # noqa: E402


def test_ranges_parse_and_bad_ones_name_the_flag():
    assert throughput.parse_range("64-512", "--prompt-range") == (64, 512)
    assert throughput.parse_range("128", "--gen-range") == (128, 128)
    for bad in ("512-64", "a-b", "0-4", "-3"):
        with pytest.raises(SystemExit, match="--prompt-range"):
            throughput.parse_range(bad, "--prompt-range")


@pytest.mark.parametrize("flag", ["-n", "--page-size", "--max-num-seqs", "--check-every"])
def test_bad_counts_are_one_line_before_anything_runs(flag, tmp_path):
    out = tmp_path / "res.json"
    with pytest.raises(SystemExit, match=f"throughput.py: {flag} must be >= 1, got 0"):
        throughput.main(["--device", "cpu", flag, "0", "--json", str(out)])
    assert not out.exists()


def test_uniform_workload_is_the_one_measured_before():
    ids, budgets = throughput.workload(5, (7, 7), (9, 9))
    assert ids == torch.randint(100, 100000, (5, 7), generator=torch.Generator().manual_seed(0)).tolist()
    assert budgets == [9] * 5


def test_ragged_workload_is_seeded_and_within_its_ranges():
    ids, budgets = throughput.workload(200, (64, 512), (16, 1024))
    lens = [len(x) for x in ids]
    assert (ids, budgets) == throughput.workload(200, (64, 512), (16, 1024))  # the same every run
    assert 64 <= min(lens) < 100 and 470 < max(lens) <= 512 and len(set(lens)) > 100
    assert 16 <= min(budgets) < 80 and 960 < max(budgets) <= 1024
    full, _ = throughput.workload(200, (512, 512), (16, 16))
    assert all(x == row[:len(x)] for x, row in zip(ids, full))  # prompts are prefixes of the same draw


def test_floor_sums_the_kv_of_the_sequences_still_running():
    # request 0: p=3, g=2 -> 1 decode step reading 3+1 tokens; request 1: p=5, g=4 -> steps of 6, 7, 8 tokens
    f = throughput.floor_bytes([3, 5], [2, 4], weight_bytes=1000, kv_bytes_per_token=10)
    assert f == dict(floor_steps=3, kv_tokens_read=4 + 21, floor_bytes=3 * 1000 + 25 * 10)
    # uniform: n * sum over the g - 1 steps of (p + s), the formula used so far
    n, p, g = 256, 128, 1024
    steps = g - 1
    f = throughput.floor_bytes([p] * n, [g] * n, 7, 3)
    assert f["kv_tokens_read"] == n * (steps * p + steps * (steps + 1) // 2) and f["floor_steps"] == steps
    # a sequence that is done reads nothing: one long request among short ones keeps only the weights
    f = throughput.floor_bytes([10, 10], [2, 101], 1, 1)
    assert f["floor_steps"] == 100 and f["kv_tokens_read"] == 11 + sum(10 + s for s in range(1, 101))


def _event(name: str, device: str = "cpu", us: float = 0.0):
    from torch.autograd import DeviceType

    kind = DeviceType.CUDA if device == "cuda" else DeviceType.CPU
    return SimpleNamespace(name=name, device_type=kind, time_range=SimpleNamespace(elapsed_us=lambda: us))


def test_launches_and_gpu_time_per_step_from_profiler_events():
    events = ([_event("cudaGraphLaunch")] * 4 + [_event("cudaLaunchKernel")] * 20 + [_event("cuLaunchKernel")] * 8
              + [_event("cudaMemcpyAsync")] * 4 + [_event("aten::add")] * 50 + [_event("cudaStreamSynchronize")]
              + [_event("some_kernel", "cuda", 250.0)] * 16 + [_event("Memcpy DtoH", "cuda", 10.0)] * 4)
    got = throughput.launch_counts(events, steps=4)
    assert got["launches_per_step"] == (4 + 20 + 8) / 4 and got["copies_per_step"] == 1
    assert got["gpu_busy_ms_per_step"] == pytest.approx((16 * 250 + 40) / 4 / 1e3)
    assert got["calls_per_step"] == {"cuLaunchKernel": 2, "cudaGraphLaunch": 1, "cudaLaunchKernel": 5,
                                     "cudaMemcpyAsync": 1}


def _tiny_config(tmp_path: Path) -> tuple[Path, dict]:
    import transformers
    from checkpoints import BASE

    cfg, shape = tmp_path / "tiny.json", transformers.Qwen3Config(**BASE).to_dict()
    cfg.write_text(json.dumps(shape))
    return cfg, shape


def test_the_profiled_window_covers_its_steps_and_unwraps_the_engine(tmp_path, monkeypatch):
    from litesys import LLM, SamplingParams

    cfg, _ = _tiny_config(tmp_path)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(cfg.read_text())
    llm = LLM(str(tmp_path / "ckpt"), device="cpu", dtype=torch.float32, max_seq_len=64, load_format="random")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)  # the CPU profiler stands in for CUDA's
    ids, budgets = throughput.workload(3, (3, 9), (30, 40))
    params = [SamplingParams(max_new_tokens=g, ignore_eos=True, repeat_check=False) for g in budgets]
    got = throughput.profile_steps(llm, ids, params)
    assert got["profiled_steps"] == throughput.PROFILE_STEPS and got["launches_per_step"] == 0  # no CUDA here
    assert throughput.DECODE_STEP not in vars(llm.engine)  # the class's decode step again
    short = [SamplingParams(max_new_tokens=14, ignore_eos=True, repeat_check=False)] * 3  # 13 decode steps
    assert throughput.profile_steps(llm, ids, short)["profiled_steps"] == 13 - throughput.PROFILE_SKIP


def test_a_ragged_run_on_cpu(tmp_path):
    cfg, shape = _tiny_config(tmp_path)
    out = tmp_path / "res.json"
    res = throughput.main(["--device", "cpu", "--config", str(cfg), "-n", "6", "--prompt-range", "3-12",
                           "--gen-range", "2-7", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    ids, budgets = throughput.workload(6, (3, 12), (2, 7))
    assert res["p"] == "3-12" and res["g"] == "2-7" and res["generated_tokens"] == sum(budgets)
    f = throughput.floor_bytes([len(x) for x in ids], budgets, res["weight_bytes"], res["kv_bytes_per_token"])
    assert {k: res[k] for k in f} == f
    # fp32 K and V of every layer and KV head
    assert res["kv_bytes_per_token"] == 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * \
        shape["head_dim"] * 4
    assert res["timed_steps"] == res["decode_steps"] >= max(budgets) - 1  # the timer wraps the real decode step
    assert res["host_ms_per_step"] > 0 and res["gpu_span_ms_per_step"] is None
    # the timed run prefills its prompts in full: none of its tokens came from the warm-up runs' cached pages
    assert res["prefix_cache"] is False and res["timed_prefix_hit_tokens"] == 0
    cached = throughput.main(["--device", "cpu", "--config", str(cfg), "-n", "6", "--prompt-range", "8-12",
                              "--gen-range", "2-3", "--page-size", "4", "--prefix-cache"])
    assert cached["timed_prefix_hit_tokens"] >= 6 * 4  # --prefix-cache: at least each prompt's first full page


def test_hf_in_the_same_run_on_cpu(tmp_path, monkeypatch):
    """--hf: transformers generate on the same workload after LiteSys, with our sampling settings and exactly g new
    tokens per request; tok/s and the ratio in the JSON; a smaller HF batch (--hf-num-requests) is stated."""
    from transformers.generation.utils import GenerationMixin

    calls = []
    generate = GenerationMixin.generate

    def recording(self, inputs=None, **kw):
        calls.append((inputs.shape, kw))
        return generate(self, inputs, **kw)

    monkeypatch.setattr(GenerationMixin, "generate", recording)
    cfg, _ = _tiny_config(tmp_path)
    args = ["--device", "cpu", "--config", str(cfg), "-p", "5", "-g", "6", "--hf"]
    res = throughput.main(args + ["-n", "4", "--hf-num-requests", "2"])
    shape, kw = calls[-1]  # the timed call (after an 8-token warm-up)
    assert tuple(shape) == (2, 5) and kw["max_new_tokens"] == kw["min_new_tokens"] == 6
    assert kw["do_sample"] and (kw["temperature"], kw["top_p"], kw["top_k"]) == (0.6, 0.95, 20)
    assert res["hf_n"] == 2 and res["hf_generated_tokens"] == 2 * 6 and res["hf_tok_s"] > 0
    assert res["speedup_vs_hf"] == pytest.approx(res["tok_s"] / res["hf_tok_s"])
    assert "first 2 of the 4 requests" in res["hf_note"]
    for bad in (["-n", "4", "--hf-num-requests", "5"], ["-n", "4", "--hf-num-requests", "0"]):
        with pytest.raises(SystemExit, match="--hf-num-requests"):
            throughput.main(args + bad)
    with pytest.raises(SystemExit, match="--hf-num-requests"):
        throughput.main(["--device", "cpu", "--config", str(cfg), "-n", "4", "--hf-num-requests", "2"])


def test_greedy_rows_on_cpu(tmp_path, monkeypatch):
    """--greedy: every LiteSys request at temperature 0 and HF with do_sample=False (no sampling settings); the
    JSON says greedy."""
    from transformers.generation.utils import GenerationMixin

    calls, params_seen = [], []
    generate = GenerationMixin.generate

    def recording(self, inputs=None, **kw):
        calls.append(kw)
        return generate(self, inputs, **kw)

    monkeypatch.setattr(GenerationMixin, "generate", recording)
    llm_generate = throughput.LLM.generate

    def recording_llm(self, prompts, params=None, **kw):
        params_seen.extend(params if isinstance(params, list) else [params])
        return llm_generate(self, prompts, params, **kw)

    monkeypatch.setattr(throughput.LLM, "generate", recording_llm)
    cfg, _ = _tiny_config(tmp_path)
    res = throughput.main(["--device", "cpu", "--config", str(cfg), "-n", "3", "-p", "5", "-g", "6", "--greedy",
                           "--hf"])
    assert res["greedy"] and not calls[-1]["do_sample"] and "temperature" not in calls[-1]
    assert params_seen and all(p.temperature == 0 for p in params_seen)
    assert res["hf_generated_tokens"] == 3 * 6


def test_moe_experts_are_counted_outside_the_timed_run(tmp_path, monkeypatch):
    """The MoE floor's routed experts come from an identical run before the timed one; the timed run (and its
    graphs) count nothing, so its step time carries no counting kernels."""
    import transformers
    from checkpoints import BASE
    from moe_stats import ExpertStats

    cfg = tmp_path / "moe.json"
    cfg.write_text(json.dumps(transformers.Qwen3MoeConfig(**BASE, num_experts=8, num_experts_per_tok=2,
                                                           moe_intermediate_size=32).to_dict()))
    counted = []
    generate = throughput.LLM.generate

    def recording(self, prompts, params=None, **kw):
        stats = ExpertStats.of(self.model)
        before = int(stats.decode_steps)
        outs = generate(self, prompts, params, **kw)
        counted.append((stats, stats.enabled, int(stats.decode_steps) - before))
        return outs

    monkeypatch.setattr(throughput.LLM, "generate", recording)
    throughput.main(["--device", "cpu", "--config", str(cfg), "-n", "3", "-p", "5", "-g", "6"])
    stats = counted[0][0]
    assert counted[0][1:] == (True, 5)  # the counting run: the timed workload's 5 decode steps
    assert all(not on and steps == 0 for _, on, steps in counted[1:])  # warm-up, prefill, timed run, profile
    # per step, each of the 2 sparse layers routes 3 tokens x 2 slots to 2..6 distinct experts
    assert 2 * 2 <= int(stats.expert_hits.sum()) / int(stats.decode_steps) <= 2 * 6
