"""End-to-end generation throughput with random weights of a real architecture, against the memory floor.

    python benchmarks/throughput.py --config qwen3_0.6b -n 256 -p 128 -g 1024 --compare-hf
    python benchmarks/throughput.py --config qwen3_8b -n 128 -p 512 -g 2048
    python benchmarks/throughput.py --config qwen3_8b -n 32 -p 128 -g 8192 --kv-cache-dtype fp8_e4m3

Reports output tok/s, decode ms/step, the memory floor (weights + KV read once per decode step, over the HBM
copy bandwidth measured in this run; fp8 KV pages count 1 byte per element) and the ratio to it; ``--compare-hf``
runs transformers ``generate`` on the same workload in the same process. Results print as a table and go to
``--json`` (and $OUT if set).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("LITESYS_MOE_STATS", "1")  # MoE floor: count the experts each decode step routes to
from common import copy_bandwidth  # noqa: E402

from litesys import LLM, SamplingParams  # noqa: E402

CONFIGS = Path(__file__).parent / "configs"


def identity(logits, lengths, layer, meta):
    return logits


def weight_bytes_per_step(llm: LLM) -> int:
    """Bytes of weights a decode step reads: every tensor once; the embedding table only if it is the lm_head."""
    m = llm.model
    # stacked MoE experts count only as far as they are routed to (the model tracks that per decode step)
    seen = {t.data_ptr() for t in getattr(m, "moe_stacked_tensors", list)()}
    total = 0

    def add(t):
        nonlocal total
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()

    for layer in m.layers:
        for v in vars(layer).values():
            add(v)
    for name in ("norm", "lm_head"):
        add(getattr(m, name))
    add_moe = getattr(m, "moe_weight_bytes_per_step", None)
    return total + (add_moe() if add_moe else 0)


def memory_floor(llm: LLM, n: int, p: int, g: int, bw: float) -> dict:
    cfg = llm.cfg
    # K and V of every layer as stored (2 bytes in bf16, 1 in fp8; the fp8 scales are per layer, negligible)
    kv_per_token = 2 * cfg.num_layers * llm.model.num_kv_heads * cfg.head_dim * llm.kv.k.element_size()
    w = weight_bytes_per_step(llm)
    steps = g - 1  # the first token of each request comes from its prefill
    kv_tokens = n * (steps * p + steps * (steps + 1) // 2)
    t = (steps * w + kv_tokens * kv_per_token) / bw
    return dict(weight_bytes=w, kv_bytes_per_token=kv_per_token, floor_s=t, floor_tok_s=n * g / t)


def run_hf(cfg_path: Path, prompts: torch.Tensor, g: int, sp: SamplingParams) -> float:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(cfg_path)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).cuda().eval()
    kw = dict(do_sample=True, temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k, max_new_tokens=g,
              min_new_tokens=g, pad_token_id=0)
    with torch.inference_mode():
        model.generate(prompts[:8].cuda(), **{**kw, "max_new_tokens": 8, "min_new_tokens": 8})
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate(prompts.cuda(), **kw)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
    assert out.shape[1] == prompts.shape[1] + g
    del model
    torch.cuda.empty_cache()
    return prompts.shape[0] * g / dt


def profile(llm: LLM, ids: list[list[int]], sp: SamplingParams) -> None:
    """Where a decode step's GPU time goes: kernels by total time over a short profiled generation."""
    from torch.profiler import ProfilerActivity, profile

    short = SamplingParams(**{**sp.__dict__, "max_new_tokens": 64})
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        llm.generate(ids, short)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60)
    print(table)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "profile.txt").write_text(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="qwen3_0.6b", help="name in benchmarks/configs or a config.json path")
    ap.add_argument("-n", "--num-requests", type=int, default=256)
    ap.add_argument("-p", "--prompt-len", type=int, default=128)
    ap.add_argument("-g", "--gen-len", type=int, default=1024)
    ap.add_argument("--max-num-seqs", type=int, default=None, help="default: the number of requests")
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--check-every", type=int, default=None)
    ap.add_argument("--logits-path", action="store_true", help="force the raw-logits path (identity processor)")
    ap.add_argument("--no-cuda-graphs", action="store_true")
    ap.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "fp8_e4m3"),
                    help="KV pages: auto = bf16, fp8_e4m3 = FP8 (docs/kv_fp8.md)")
    ap.add_argument("--compare-hf", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print the top GPU kernels of a profiled run")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("throughput.py needs a CUDA GPU")

    cfg_path = Path(a.config) if a.config.endswith(".json") else CONFIGS / f"{a.config}.json"
    tmp = Path(tempfile.mkdtemp())
    shutil.copy(cfg_path, tmp / "config.json")
    bw = copy_bandwidth()
    llm = LLM(str(tmp), device="cuda", dtype=torch.bfloat16, max_seq_len=a.prompt_len + a.gen_len + 8,
              load_format="random", max_num_seqs=a.max_num_seqs or a.num_requests, page_size=a.page_size,
              cuda_graphs=not a.no_cuda_graphs, check_every=a.check_every, kv_cache_dtype=a.kv_cache_dtype)
    if a.logits_path:  # an identity processor on every layer: logits kernel -> processor -> softmax·V kernel
        llm.attn.processors = {i: [identity] for i in range(llm.cfg.num_layers)}
        if llm.engine.graphs is not None:  # dense graphs were captured before the processors were set
            gr = llm.engine.graphs
            gr.graphs.clear()
            gr.outputs.clear()
            gr.pool = None
            torch.cuda.synchronize()
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, 100000, (a.num_requests, a.prompt_len), generator=g)
    ids = prompts.tolist()
    sp = SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=a.gen_len, ignore_eos=True,
                        repeat_check=False)
    llm.generate(ids[:32], SamplingParams(**{**sp.__dict__, "max_new_tokens": 16}))  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    llm.generate(ids, SamplingParams(**{**sp.__dict__, "max_new_tokens": 1}))
    torch.cuda.synchronize()
    t_prefill = time.perf_counter() - t
    steps0 = llm.engine.stats["decode_steps"]
    if hasattr(llm.model, "reset_expert_stats"):
        llm.model.reset_expert_stats()
    t = time.perf_counter()
    outs = llm.generate(ids, sp)
    torch.cuda.synchronize()
    t_total = time.perf_counter() - t
    steps = llm.engine.stats["decode_steps"] - steps0
    assert all(len(o.token_ids) == a.gen_len for o in outs)
    tok_s = a.num_requests * a.gen_len / t_total
    floor = memory_floor(llm, a.num_requests, a.prompt_len, a.gen_len, bw)
    res = dict(config=a.config, n=a.num_requests, p=a.prompt_len, g=a.gen_len, device=torch.cuda.get_device_name(),
               torch=torch.__version__, logits_path=a.logits_path, cuda_graphs=not a.no_cuda_graphs,
               kv_cache_dtype=a.kv_cache_dtype, kv_dtype=str(llm.kv.k.dtype),
               hbm_copy_TBps=bw / 1e12, kv_pages=llm.kv.num_pages, page_size=a.page_size,
               tok_s=tok_s, total_s=t_total, prefill_s=t_prefill, decode_steps=steps,
               decode_ms_per_step=(t_total - t_prefill) / max(steps, 1) * 1e3,
               floor_ms_per_step=floor["floor_s"] / max(a.gen_len - 1, 1) * 1e3, **floor)
    res["ratio_to_floor"] = tok_s / floor["floor_tok_s"]
    gr = llm.engine.graphs
    res["graphs_captured"] = len(gr.graphs) if gr is not None else 0
    res["graph_eager_fallback"] = bool(gr.eager_only) if gr is not None else None
    if a.profile:
        profile(llm, ids, sp)
    del llm
    torch.cuda.empty_cache()
    if a.compare_hf:
        res["hf_tok_s"] = run_hf(cfg_path, prompts, a.gen_len, sp)
        res["speedup_vs_hf"] = tok_s / res["hf_tok_s"]
    print(json.dumps(res, indent=1))
    tags = (" logits-path" if a.logits_path else "") + ("" if a.kv_cache_dtype == "auto" else f" kv {a.kv_cache_dtype}")
    line = (f"{a.config} {a.num_requests}x{a.prompt_len}->{a.gen_len}{tags}: "
            f"{tok_s:,.0f} tok/s, graphs {res['graphs_captured']} (fallback {res['graph_eager_fallback']}), "
            f"{res['decode_ms_per_step']:.2f} ms/step, floor {floor['floor_tok_s']:,.0f} tok/s "
            f"({res['ratio_to_floor']:.0%} of floor)")
    if "hf_tok_s" in res:
        line += f", HF {res['hf_tok_s']:,.0f} tok/s ({res['speedup_vs_hf']:.1f}x)"
    print(line)
    for path in filter(None, [a.json, os.environ.get("OUT") and
                              f"{os.environ['OUT']}/throughput_{a.config}{'_logits' if a.logits_path else ''}"
                              f"{'' if a.kv_cache_dtype == 'auto' else '_' + a.kv_cache_dtype}.json"]):
        Path(path).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
