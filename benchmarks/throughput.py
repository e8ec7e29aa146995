"""End-to-end generation throughput with random weights of a real architecture, against the memory floor.

    python benchmarks/throughput.py --config qwen3_0.6b -n 256 -p 128 -g 1024 --hf
    python benchmarks/throughput.py --config qwen3_0.6b -n 256 --prompt-range 64-512 -g 1024
    python benchmarks/throughput.py --config qwen3_8b -n 128 -p 512 -g 2048
    python benchmarks/throughput.py --config qwen3_8b -n 32 -p 128 -g 8192 --kv-cache-dtype fp8_e4m3

``--greedy``: temperature 0 instead of the default T 0.6 / top-p 0.95 / top-k 20. Reports output tok/s, decode
ms/step, the memory floor (weights + the KV of every running sequence read once per decode step, over the HBM copy
bandwidth measured in this run; fp8 KV pages count 1 byte per element) and the ratio to it. ``--prompt-range LO-HI``
and ``--gen-range LO-HI`` draw each request's prompt length and generation budget (seeded; exactly that many tokens).
The timed run prefills its prompts in full (the prefix cache is off: the warm-up runs saw the same prompts; rows
measured before 2026-12-02 had it on, so their timed prefill mostly hit the cache; ``--prefix-cache``: that way).
Where the step time goes: host ms per decode step (the engine's decode step timed on the host: Python and launches),
GPU span per step (CUDA events around it: idle gaps included), and over a few steady steps of a short profiled run,
GPU busy ms per step (kernel time) and launches per step (cudaLaunchKernel, cuLaunchKernel, cudaGraphLaunch, ...).
``--hf`` (= ``--compare-hf``) then runs transformers ``generate`` on the same workload in the same process, right
after LiteSys has freed its engine (same config with random weights, same sampling, exactly g tokens each;
``--hf-num-requests N``: the first N requests only, stated in the JSON): ``hf_tok_s`` and ``speedup_vs_hf``. Results
print as a table and go to ``--json`` (and $OUT if set).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported (tests)
from common import UsageExit, copy_bandwidth, model_config, random_model_dir  # noqa: E402
from moe_stats import ExpertStats  # noqa: E402

from litesys import LLM, SamplingParams  # noqa: E402

DECODE_STEP = "_decode"  # the Engine method that runs one decode step (wrapped to time and profile it)
PROFILE_SKIP, PROFILE_STEPS = 8, 16  # the profiled window: steps 8..23 of a short run (whole check periods)
LAUNCH_APIS = ("cudaLaunch", "cuLaunch", "cudaGraphLaunch", "cuGraphLaunch")  # prefixes of the runtime/driver calls
COPY_APIS = ("cudaMemcpy", "cudaMemset", "cuMemcpy", "cuMemset")


def identity(logits, lengths, layer, meta):
    return logits


# ---------------------------------------------------------------- workload and floor (CPU-testable)


def parse_range(text: str, flag: str) -> tuple[int, int]:
    """``"LO-HI"`` or ``"N"`` -> (lo, hi), both >= 1."""
    try:
        lo, _, hi = text.partition("-")
        lo, hi = int(lo), int(hi or lo)
    except ValueError:
        raise UsageExit(f"throughput.py: {flag} takes LO-HI (e.g. 64-512), got {text!r}") from None
    if not 1 <= lo <= hi:
        raise UsageExit(f"throughput.py: {flag} {text} needs 1 <= LO <= HI")
    return lo, hi


def workload(n: int, prompt_range: tuple[int, int], gen_range: tuple[int, int], seed: int = 0
             ) -> tuple[list[list[int]], list[int]]:
    """Random prompts and per-request generation budgets. One length each gives the uniform workload (the same
    tokens as always); the ragged lengths come from their own seeded generators."""
    (p_lo, p_hi), (g_lo, g_hi) = prompt_range, gen_range
    tokens = torch.randint(100, 100000, (n, p_hi), generator=torch.Generator().manual_seed(seed)).tolist()

    def draw(lo: int, hi: int, salt: int) -> list[int]:
        g = torch.Generator().manual_seed(seed + salt)
        return torch.randint(lo, hi + 1, (n,), generator=g).tolist() if lo < hi else [lo] * n

    prompt_lens, budgets = draw(p_lo, p_hi, 1), draw(g_lo, g_hi, 2)
    return [row[:k] for row, k in zip(tokens, prompt_lens)], budgets


def floor_bytes(prompt_lens: list[int], gen_lens: list[int], weight_bytes: int, kv_bytes_per_token: int) -> dict:
    """Bytes the decode steps must read at least, all requests in one batch: the weights once per step while any
    sequence runs, and in step ``s`` (1-based) the ``p + s`` tokens of KV of every sequence still running. A request
    of ``g`` tokens takes ``g - 1`` decode steps (its first token comes from its prefill)."""
    steps = max(gen_lens) - 1
    kv_tokens = sum((g - 1) * p + (g - 1) * g // 2 for p, g in zip(prompt_lens, gen_lens))
    return dict(floor_steps=steps, kv_tokens_read=kv_tokens,
                floor_bytes=steps * weight_bytes + kv_tokens * kv_bytes_per_token)


def launch_counts(events, steps: int) -> dict:
    """Launches, copies and GPU busy time per step from torch.profiler events covering ``steps`` decode steps."""
    from torch.autograd import DeviceType

    by_api: Counter = Counter()
    gpu_us = 0.0
    for e in events:
        if e.device_type == DeviceType.CUDA:  # a kernel, memcpy or memset on the device (graph nodes too)
            gpu_us += e.time_range.elapsed_us()
        elif e.name.startswith(LAUNCH_APIS + COPY_APIS):
            by_api[e.name] += 1
    launches = sum(c for name, c in by_api.items() if name.startswith(LAUNCH_APIS))
    return dict(profiled_steps=steps, launches_per_step=launches / steps,
                copies_per_step=(sum(by_api.values()) - launches) / steps, gpu_busy_ms_per_step=gpu_us / steps / 1e3,
                calls_per_step={name: c / steps for name, c in sorted(by_api.items())})


# ---------------------------------------------------------------- measuring a run


def weight_bytes_per_step(llm: LLM) -> int:
    """Bytes of weights a decode step reads: every tensor once; the embedding table only if it is the lm_head."""
    m = llm.model
    # stacked MoE experts count only as far as they are routed to (ExpertStats counts that per decode step)
    stats = ExpertStats.of(m)
    seen = {t.data_ptr() for t in (stats.stacked_tensors() if stats else [])}
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
    return total + (stats.weight_bytes_per_step() if stats else 0)


def memory_floor(llm: LLM, prompt_lens: list[int], gen_lens: list[int], bw: float) -> dict:
    cfg = llm.cfg
    # K and V of every layer as stored (2 bytes in bf16, 1 in fp8; the fp8 scales are per layer, negligible)
    kv_per_token = 2 * cfg.num_layers * llm.model.num_kv_heads * cfg.head_dim * llm.kv.k.element_size()
    w = weight_bytes_per_step(llm)
    f = floor_bytes(prompt_lens, gen_lens, w, kv_per_token)
    t = f["floor_bytes"] / bw
    return dict(weight_bytes=w, kv_bytes_per_token=kv_per_token, floor_s=t, floor_tok_s=sum(gen_lens) / t, **f)


class StepTimer:
    """Times every decode step of the engine: host seconds inside the step and, on CUDA, events around it."""

    def __init__(self, engine, cuda: bool):
        self.engine, self.cuda = engine, cuda
        self.host_s: list[float] = []
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        step = getattr(engine, DECODE_STEP)

        def timed(*args, **kwargs):
            if cuda:
                ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                ev[0].record()
            t = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                self.host_s.append(time.perf_counter() - t)
                if cuda:
                    ev[1].record()
                    self.events.append(ev)

        setattr(engine, DECODE_STEP, timed)  # an instance attribute: the class's method again once deleted

    def close(self) -> dict:
        delattr(self.engine, DECODE_STEP)
        self.engine = None  # holding it would keep the KV pool alive after the LLM is closed
        if self.cuda:
            torch.cuda.synchronize()
        n = len(self.host_s)
        out = dict(timed_steps=n, host_ms_per_step=sum(self.host_s) / n * 1e3 if n else None,
                   gpu_span_ms_per_step=None)
        if self.events:
            out["gpu_span_ms_per_step"] = sum(a.elapsed_time(b) for a, b in self.events) / len(self.events)
        return out


def profile_steps(llm: LLM, ids: list[list[int]], params: list[SamplingParams]) -> dict:
    """torch.profiler over PROFILE_STEPS steady decode steps (after PROFILE_SKIP) of a short run of the same
    requests: launches, copies and GPU busy time per step (the device is synchronised at both ends of the window)."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
    engine, state = llm.engine, {"calls": 0, "on": False}
    step = getattr(engine, DECODE_STEP)
    end = PROFILE_SKIP + PROFILE_STEPS

    def counted(*args, **kwargs):
        if state["calls"] == PROFILE_SKIP or state["calls"] == end and state["on"]:
            torch.cuda.synchronize()  # the window holds exactly its steps' work
            if state["on"]:
                prof.stop()
            else:
                prof.start()
            state["on"] = not state["on"]
        state["calls"] += 1
        return step(*args, **kwargs)

    short = [dataclasses.replace(p, max_new_tokens=min(p.max_new_tokens, end + 2)) for p in params]
    setattr(engine, DECODE_STEP, counted)
    try:
        llm.generate(ids, short)
    finally:
        delattr(engine, DECODE_STEP)
        if state["on"]:  # the run was shorter than the window
            torch.cuda.synchronize()
            prof.stop()
    steps = min(state["calls"], end) - PROFILE_SKIP
    return launch_counts(prof.events(), steps) if steps > 0 else {}


def profile(llm: LLM, ids: list[list[int]], params: list[SamplingParams]) -> None:
    """Where a decode step's GPU time goes: kernels by total time over a short profiled generation."""
    from torch.profiler import ProfilerActivity, profile

    short = [dataclasses.replace(p, max_new_tokens=min(p.max_new_tokens, 64)) for p in params]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        llm.generate(ids, short)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60)
    print(table)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "profile.txt").write_text(table)


def run_hf(model_dir: Path, prompts: torch.Tensor, g: int, sp: SamplingParams, device: str) -> dict:
    """transformers ``generate`` on the same workload: a model made from the same config.json with random weights
    (bf16 on CUDA, fp32 on CPU as LiteSys), sampling with the same temperature/top-p/top-k, exactly ``g`` new tokens
    per request (``min_new_tokens``: EOS cannot end one early), one batch of equal-length prompts (no padding)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if cuda else torch.float32)
    model = model.to(device).eval()
    sampling = dict(temperature=sp.temperature, top_p=sp.top_p, top_k=sp.top_k) if sp.temperature > 0 else {}
    kw = dict(do_sample=sp.temperature > 0, **sampling, max_new_tokens=g, min_new_tokens=g, pad_token_id=0)
    prompts = prompts.to(device)
    with torch.inference_mode():
        model.generate(prompts[:8], **{**kw, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
        sync()
        t = time.perf_counter()
        out = model.generate(prompts, **kw)
        sync()
        dt = time.perf_counter() - t
    new_tokens = (out.shape[1] - prompts.shape[1]) * out.shape[0]
    assert new_tokens == prompts.shape[0] * g, (out.shape, prompts.shape, g)
    del model
    if cuda:
        torch.cuda.empty_cache()
    return dict(hf_n=prompts.shape[0], hf_generated_tokens=new_tokens, hf_s=dt, hf_tok_s=new_tokens / dt)


def _shape(lo: int, hi: int) -> int | str:
    return lo if lo == hi else f"{lo}-{hi}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="qwen3_0.6b", help="name in benchmarks/configs or a config.json path")
    ap.add_argument("-n", "--num-requests", type=int, default=256)
    ap.add_argument("-p", "--prompt-len", type=int, default=128)
    ap.add_argument("-g", "--gen-len", type=int, default=1024)
    ap.add_argument("--prompt-range", default=None, metavar="LO-HI",
                    help="ragged prompts: each request's length drawn uniformly from LO..HI (seeded; replaces -p)")
    ap.add_argument("--gen-range", default=None, metavar="LO-HI",
                    help="per-request generation budgets drawn uniformly from LO..HI (seeded; replaces -g)")
    ap.add_argument("--max-num-seqs", type=int, default=None, help="default: the number of requests")
    ap.add_argument("--page-size", type=int, default=None, help="tokens per KV page (default 16; fp8 64)")
    ap.add_argument("--check-every", type=int, default=None)
    ap.add_argument("--logits-path", action="store_true", help="force the raw-logits path (identity processor)")
    ap.add_argument("--no-cuda-graphs", action="store_true")
    ap.add_argument("--prefix-cache", action="store_true",
                    help="keep the prefix cache on: the timed run's prompts were seen by the warm-up runs, so their "
                         "full pages come from the cache and the timed prefill is mostly skipped (off: every run "
                         "prefills its prompts in full, as an eval's distinct prompts are)")
    ap.add_argument("--kv-cache-dtype", default="auto", choices=("auto", "fp8_e4m3"),
                    help="KV pages: auto = bf16, fp8_e4m3 = FP8 (docs/kv_fp8.md)")
    ap.add_argument("--deterministic", action="store_true", help="deterministic=True: batch-invariant kernels")
    ap.add_argument("--greedy", action="store_true", help="temperature 0 (argmax; HF: do_sample=False) instead of "
                    "the default T 0.6 / top-p 0.95 / top-k 20")
    ap.add_argument("--hf", "--compare-hf", dest="compare_hf", action="store_true",
                    help="then transformers generate on the same workload in the same process: its tok/s and ours/its")
    ap.add_argument("--hf-num-requests", type=int, default=None, metavar="N",
                    help="--hf on the first N requests only (HF is slow at large n); the JSON says so")
    ap.add_argument("--profile", action="store_true", help="print the top GPU kernels of a profiled run")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only runs the logic at tiny sizes (tests)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    p_range = parse_range(a.prompt_range, "--prompt-range") if a.prompt_range else (a.prompt_len, a.prompt_len)
    g_range = parse_range(a.gen_range, "--gen-range") if a.gen_range else (a.gen_len, a.gen_len)
    for flag, value in (("-n", a.num_requests), ("--page-size", a.page_size), ("--max-num-seqs", a.max_num_seqs),
                        ("--check-every", a.check_every)):
        if value is not None and value < 1:
            raise UsageExit(f"throughput.py: {flag} must be >= 1, got {value}")
    if g_range[0] < 2:
        raise UsageExit("throughput.py: generation lengths (-g / --gen-range) must be >= 2: the first token comes "
                        "from the prefill, the rest are the decode steps measured")
    ragged = p_range[0] < p_range[1] or g_range[0] < g_range[1]
    if a.compare_hf and ragged:
        raise UsageExit("throughput.py: --hf needs one prompt and one generation length (HF generate pads "
                        "a batch to one shape); drop --prompt-range/--gen-range")
    if a.hf_num_requests is not None and not (a.compare_hf and 1 <= a.hf_num_requests <= a.num_requests):
        raise UsageExit(f"throughput.py: --hf-num-requests goes with --hf and must be 1..{a.num_requests} (-n)")
    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("throughput.py needs a CUDA GPU")
    uninstall = ExpertStats.install()  # MoE floor: count the experts each decode step routes to (before capture)
    try:
        res = measure(a, p_range, g_range, cuda)
    finally:
        uninstall()
    print(json.dumps(res, indent=1))
    print(summary_line(a, res))
    shape = ("" if p_range[0] == p_range[1] else f"_p{p_range[0]}-{p_range[1]}") + \
        ("" if g_range[0] == g_range[1] else f"_g{g_range[0]}-{g_range[1]}")
    tag = f"{'' if a.kv_cache_dtype == 'auto' else '_' + a.kv_cache_dtype}{'_det' if a.deterministic else ''}"
    tag += "_greedy" if a.greedy else ""
    for path in filter(None, [a.json, os.environ.get("OUT") and
                              f"{os.environ['OUT']}/throughput_{a.config}{shape}{'_logits' if a.logits_path else ''}"
                              f"{tag}.json"]):
        Path(path).write_text(json.dumps(res, indent=1))
    return res


def measure(a: argparse.Namespace, p_range: tuple[int, int], g_range: tuple[int, int], cuda: bool) -> dict:
    """Build the engine, time the workload, and measure its floor, step times and launches."""
    ragged = p_range[0] < p_range[1] or g_range[0] < g_range[1]
    tmp = random_model_dir(model_config(a.config))
    bw = copy_bandwidth(device=a.device)
    llm = LLM(str(tmp), device=a.device, dtype=torch.bfloat16 if cuda else torch.float32,
              max_seq_len=p_range[1] + g_range[1] + 8, load_format="random",
              max_num_seqs=a.max_num_seqs or a.num_requests, page_size=a.page_size,
              cuda_graphs=cuda and not a.no_cuda_graphs, check_every=a.check_every, kv_cache_dtype=a.kv_cache_dtype,
              deterministic=a.deterministic, enable_prefix_cache=a.prefix_cache)
    if a.logits_path:  # an identity processor on every layer: logits kernel -> processor -> softmax·V kernel
        from litesys.attention.sparse.base import ProcessorMethod
        llm.attn.method = ProcessorMethod({i: [identity] for i in range(llm.cfg.num_layers)})
        if llm.engine.graphs is not None:  # graphs captured before the processors were set would skip them
            llm.engine.graphs.clear()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    ids, budgets = workload(a.num_requests, p_range, g_range)
    prompt_lens = [len(x) for x in ids]
    sp = SamplingParams(temperature=0.0 if a.greedy else 0.6, top_p=0.95, top_k=20, max_new_tokens=g_range[1],
                        ignore_eos=True, repeat_check=False)
    params = [dataclasses.replace(sp, max_new_tokens=g) for g in budgets]
    stats = ExpertStats.of(llm.model)
    if stats:  # MoE floor: routed experts counted in an identical run first, so the timed run has no counting kernels
        llm.generate(ids, params)
        sync()
        stats.enabled = False
        if llm.engine.graphs is not None:  # graphs captured while counting hold its kernels
            llm.engine.graphs.clear()
    # warm-up: budgets 1..n shrink the batch through every graph bucket, so no capture lands in the timed run
    llm.generate(ids, [dataclasses.replace(sp, max_new_tokens=min(1 + i, g_range[0])) for i in range(len(ids))])
    sync()
    for _ in range(2):  # the prefill alone, timed the second time (the first may compile kernels for its shapes)
        t = time.perf_counter()
        llm.generate(ids, dataclasses.replace(sp, max_new_tokens=1))
        sync()
        t_prefill = time.perf_counter() - t
    steps0 = llm.engine.stats["decode_steps"]
    timer = StepTimer(llm.engine, cuda)
    t = time.perf_counter()
    try:
        outs = llm.generate(ids, params)
        sync()
        t_total = time.perf_counter() - t
    finally:
        step_times = timer.close()
    steps = llm.engine.stats["decode_steps"] - steps0
    hit_tokens = llm.engine.counts.prefix_hit_tokens  # of the timed run: 0 unless --prefix-cache
    assert [len(o.token_ids) for o in outs] == budgets
    tok_s = sum(budgets) / t_total
    floor = memory_floor(llm, prompt_lens, budgets, bw)
    res = dict(config=a.config, n=a.num_requests, p=_shape(*p_range), g=_shape(*g_range),
               device=torch.cuda.get_device_name() if cuda else "cpu",
               torch=torch.__version__, logits_path=a.logits_path, cuda_graphs=cuda and not a.no_cuda_graphs,
               kv_cache_dtype=a.kv_cache_dtype, kv_dtype=str(llm.kv.k.dtype), deterministic=a.deterministic,
               prefix_cache=a.prefix_cache, timed_prefix_hit_tokens=hit_tokens,
               greedy=a.greedy,
               hbm_copy_TBps=bw / 1e12, kv_pages=llm.kv.num_pages, page_size=llm.kv.page_size,
               tok_s=tok_s, total_s=t_total, prefill_s=t_prefill, decode_steps=steps,
               decode_ms_per_step=(t_total - t_prefill) / max(steps, 1) * 1e3,
               floor_ms_per_step=floor["floor_s"] / floor["floor_steps"] * 1e3, **floor)
    res["ratio_to_floor"] = tok_s / floor["floor_tok_s"]
    if ragged:
        res.update(prompt_tokens=sum(prompt_lens), generated_tokens=sum(budgets))
    res.update(step_times)
    gr = llm.engine.graphs
    res["graphs_captured"] = len(gr.graphs) if gr is not None else 0
    res["graph_eager_fallback"] = bool(gr.eager_only) if gr is not None else None
    del gr
    if cuda:
        res.update(profile_steps(llm, ids, params))
    if a.profile and cuda:
        profile(llm, ids, params)
    llm.close()  # weights, KV pool and graphs freed now: HF's model comes next
    del llm
    if a.compare_hf:
        hf_n = a.hf_num_requests or a.num_requests
        res.update(run_hf(tmp, torch.tensor(ids[:hf_n]), g_range[0], sp, a.device))
        res["speedup_vs_hf"] = tok_s / res["hf_tok_s"]
        if hf_n < a.num_requests:  # a smaller batch gets less from batching: the ratio is not at equal n
            res["hf_note"] = (f"HF ran the first {hf_n} of the {a.num_requests} requests (same prompts, same "
                              f"g={g_range[0]}); speedup_vs_hf compares tok/s at n={a.num_requests} with HF at "
                              f"n={hf_n}")
    return res


def summary_line(a: argparse.Namespace, res: dict) -> str:
    tags = (" logits-path" if a.logits_path else "") + ("" if a.kv_cache_dtype == "auto" else f" kv {a.kv_cache_dtype}")
    tags += (" deterministic" if a.deterministic else "") + (" greedy" if a.greedy else "")
    line = (f"{a.config} {a.num_requests}x{res['p']}->{res['g']}{tags}: "
            f"{res['tok_s']:,.0f} tok/s, graphs {res['graphs_captured']} (fallback {res['graph_eager_fallback']}), "
            f"{res['decode_ms_per_step']:.2f} ms/step, floor {res['floor_tok_s']:,.0f} tok/s "
            f"({res['ratio_to_floor']:.0%} of floor)")
    if res.get("host_ms_per_step") is not None:
        line += f"; host {res['host_ms_per_step']:.2f} ms/step"
    if res.get("gpu_busy_ms_per_step") is not None:
        line += (f", GPU busy {res['gpu_busy_ms_per_step']:.2f} ms/step (span {res['gpu_span_ms_per_step']:.2f}), "
                 f"{res['launches_per_step']:.0f} launches/step")
    if "hf_tok_s" in res:
        line += f", HF {res['hf_tok_s']:,.0f} tok/s at n={res['hf_n']} ({res['speedup_vs_hf']:.1f}x)"
    return line


if __name__ == "__main__":
    main()
