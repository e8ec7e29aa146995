"""Where one decode step's GPU time goes, by kind of kernel, against what each kind must read.

    python benchmarks/step_profile.py --config qwen3_8b -n 32 --context 4200 [--kv-cache-dtype fp8_e4m3] [--json F]

Random weights of a real architecture; ``n`` prompts of ``--context`` tokens, then steady decode steps (sampled
T 0.6 / top-p 0.95 / top-k 20, or ``--greedy``; ignore_eos; CUDA graphs on, as in the engine) with torch.profiler
over ``--steps`` of them after 8 warm ones. Kernels are sorted into kinds by name (``KINDS``): attention, dense
projections (cuBLAS GEMMs, the lm_head among them), MoE experts, router, small (norms, RoPE, K/V write, SiLU,
embedding), sampler, other. Floors at the device's copy bandwidth (measured in the run): attention = the K/V of
every sequence once, projections = the dense weights once, experts = the stacked expert weights once (all of them:
at 128 tokens x top-8 of 128 every expert is routed to); the step's floor is their sum. ``of_floor`` per kind says
how close that kind runs to its bytes, ``share`` how much of the step it is.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import UsageExit, copy_bandwidth, model_config, random_model_dir  # noqa: E402

from litesys import LLM, SamplingParams  # noqa: E402

# (kind, substrings of the kernel name, lower case); the first kind that matches wins
KINDS = (
    ("attention", ("decode", "quest", "softmax_v", "attention", "flash")),
    ("router", ("route",)),
    ("experts", ("_gate_up_kernel", "_down_kernel", "align", "moe")),
    ("projections", ("nvjet", "gemm", "cutlass", "splitk", "xmma", "sm90_")),
    ("small", ("rms_norm", "norm_rope", "silu", "kv_write", "index_elementwise", "index_copy", "embedding")),
    ("sampler", ("topk", "sort", "scan", "reduce", "softmax", "cumsum", "gather", "scatter", "argmax", "radix")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KINDS if any(k in low for k in keys)), "other")


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def weight_floors(llm: LLM) -> dict[str, int]:
    """Bytes per step: dense weights (the embedding table only as the lm_head) and stacked MoE experts."""
    m = llm.model
    sparse = getattr(m, "sparse", None) or [False] * len(m.layers)
    experts = [t for w, s in zip(m.layers, sparse) if s for t in (w.gate_up, w.down)]
    dense = [t for w in m.layers for t in vars(w).values() if isinstance(t, torch.Tensor)]
    dense += [m.lm_head, m.norm] + list(getattr(m, "routers", {}).values())
    skip = {t.data_ptr() for t in experts}
    return dict(projections=tensor_bytes(t for t in dense if t.data_ptr() not in skip), experts=tensor_bytes(experts))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="qwen3_0.6b", help="name in benchmarks/configs or a config.json path")
    ap.add_argument("-n", "--num-seqs", type=int, default=64)
    ap.add_argument("--context", type=int, default=2048, help="prompt tokens per sequence (the profiled context)")
    ap.add_argument("--steps", type=int, default=16, help="profiled decode steps (after 8 warm ones)")
    ap.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "fp8_e4m3"))
    ap.add_argument("--greedy", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.num_seqs < 1 or a.context < 1 or a.steps < 1:
        raise UsageExit("step_profile.py: -n, --context and --steps must be >= 1")
    if a.json and not Path(a.json).resolve().parent.is_dir():
        raise UsageExit(f"step_profile.py: --json {a.json}: its folder does not exist; create it or pick another path")
    if not torch.cuda.is_available():
        raise UsageExit("step_profile.py profiles GPU kernels: run it on a CUDA device")
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    bw = copy_bandwidth()
    warm = 8
    llm = LLM(str(random_model_dir(model_config(a.config))), device="cuda", dtype=torch.bfloat16,
              max_seq_len=a.context + warm + 2 * a.steps + 8, load_format="random", max_num_seqs=a.num_seqs,
              kv_cache_dtype=a.kv_cache_dtype)
    ids = torch.randint(100, 100000, (a.num_seqs, a.context), generator=torch.Generator().manual_seed(0)).tolist()
    sp = SamplingParams(temperature=0.0 if a.greedy else 0.6, top_p=0.95, top_k=20, ignore_eos=True,
                        repeat_check=False, max_new_tokens=warm + 2 * a.steps + 2)
    llm.generate(ids[:2], SamplingParams(max_new_tokens=4, ignore_eos=True))  # compile the kernels
    engine, state = llm.engine, {"calls": 0}
    prof = profile(activities=[ProfilerActivity.CUDA])
    step = engine._decode
    # a second window of as many steps, unprofiled, timed by the wall clock: what the kernels' sum leaves out
    # (gaps between kernels, graph launch, the host's work at check points) is wall minus GPU time
    wall = [torch.cuda.Event(enable_timing=True) for _ in range(2)]

    def counted(*args, **kwargs):
        c = state["calls"]
        if c in (warm, warm + a.steps, warm + 2 * a.steps):
            torch.cuda.synchronize()
            if c == warm:
                prof.start()
            elif c == warm + a.steps:
                prof.stop()
        if c in (warm + a.steps, warm + 2 * a.steps):
            wall[c != warm + a.steps].record()
        state["calls"] += 1
        return step(*args, **kwargs)

    engine._decode = counted
    try:
        llm.generate(ids, sp)
    finally:
        del engine._decode
    us, launches, by_name = defaultdict(float), defaultdict(int), defaultdict(float)
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            kind = kind_of(e.name)
            us[kind] += e.time_range.elapsed_us()
            launches[kind] += 1
            by_name[kind, e.name[:80]] += e.time_range.elapsed_us()
    cfg = llm.cfg
    kv_token = 2 * cfg.num_layers * llm.model.num_kv_heads * cfg.head_dim * llm.kv.k.element_size()
    ctx = a.context + warm + a.steps / 2  # mean tokens per sequence over the window
    floors = dict(attention=a.num_seqs * ctx * kv_token, **weight_floors(llm))
    floor_us = {k: b / bw * 1e6 for k, b in floors.items()}
    total = sum(us.values()) / a.steps
    wall_ms = wall[0].elapsed_time(wall[1]) / a.steps
    kinds = {k: dict(ms_per_step=us[k] / a.steps / 1e3, share=us[k] / a.steps / total,
                     kernels_per_step=launches[k] / a.steps,
                     top_kernels=dict([(n, t / a.steps) for (kk, n), t in sorted(by_name.items(), key=lambda x: -x[1])
                                       if kk == k][:6]),  # the kind's 6 largest: name -> us per step
                     **({"floor_ms": floor_us[k] / 1e3, "of_floor": floor_us[k] / (us[k] / a.steps)}
                        if k in floors and us[k] else {}))
             for k in sorted(us, key=lambda k: -us[k])}
    step_floor = sum(floor_us.values())
    res = dict(config=a.config, n=a.num_seqs, context=a.context, kv_cache_dtype=a.kv_cache_dtype, greedy=a.greedy,
               device=torch.cuda.get_device_name(), hbm_copy_TBps=bw / 1e12, profiled_steps=a.steps,
               gpu_ms_per_step=total / 1e3, wall_ms_per_step=wall_ms, idle_share=1 - total / 1e3 / wall_ms,
               floor_ms_per_step=step_floor / 1e3, of_floor=step_floor / total,
               kinds=kinds)
    llm.close()
    print(f"{a.config} {a.num_seqs} x {a.context} (kv {a.kv_cache_dtype}): GPU {total / 1e3:.2f} ms/step, floor "
          f"{step_floor / 1e3:.2f} ms ({step_floor / total:.0%}); wall {wall_ms:.2f} ms/step, GPU idle "
          f"{1 - total / 1e3 / wall_ms:.1%}")
    for k, v in kinds.items():
        extra = f", floor {v['floor_ms']:.3f} ms ({v['of_floor']:.0%})" if "floor_ms" in v else ""
        print(f"  {k:12s} {v['ms_per_step']:7.3f} ms/step {v['share']:5.1%}  {v['kernels_per_step']:5.0f} "
              f"kernels{extra}")
    for path in filter(None, [a.json, os.environ.get("OUT") and
                              f"{os.environ['OUT']}/step_profile_{a.config}_{a.num_seqs}x{a.context}"
                              f"{'' if a.kv_cache_dtype == 'auto' else '_' + a.kv_cache_dtype}.json"]):
        Path(path).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
