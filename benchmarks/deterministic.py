"""Deterministic-mode kernels on a GPU (~2 minutes on an H200): are they batch-invariant, and what do they cost?

    python benchmarks/deterministic.py            # JSON to $OUT/deterministic.json if OUT is set
    python benchmarks/deterministic.py --smoke    # tiny shapes on CPU (TRITON_INTERPRET): checks the script runs

1. Invariant GEMM (kernels/gemm_invariant.py, bf16) on the projection shapes of Qwen3-0.6B and Qwen3-8B (qkv, o,
   gate_up, down, lm_head): M rows taken anywhere in a 2048-row product, placed among random other rows, must come
   out bitwise equal for M = 1..2048; cuBLAS (F.linear) is checked the same way for contrast; error vs fp32.
2. Its time vs F.linear (cuBLAS) at decode M (1..256) and prefill M (2048), from CUDA-graph replays, and per model
   the GEMMs of one decode step (layers x (qkv + o + gate_up + down) + lm_head) as a ratio.
3. A tile sweep at M 64 and 2048 (the data for ``gemm_tiles``), and whether tiles with the same BLOCK_K give
   bitwise equal rows (if they do, tiles could follow M without breaking invariance).
4. Decode attention with fixed-size splits (``DecodeConfig.split_tokens``) vs the default adaptive splits at 4K
   and 32K context, batch 1/16/64, Qwen3-8B heads: time, error vs default, and whether each sequence computed
   alone (its own narrow page table) is bitwise equal to itself inside the ragged batch.
5. The engine, Qwen3-0.6B shapes with random weights, CUDA graphs on: 64 sampled requests (T 0.8) of random
   prompt lengths, 256 new tokens each, run as one batch, then 4 of them alone, then the batch with a KV pool so
   small that sequences are preempted (swap off: recomputed); samples that differ from the full batch's, and
   output tok/s of the full batch, for ``deterministic=False`` and ``True``.

Issue 17's scale (engine section only, flags): ``--engine-only --requests 256 --prompt-range 32-1024 --new 512
--alone 4 --pool-fraction 0.5 --resume-max-num-seqs 96 --modes deterministic,default``: the small pool is that
fraction of the pages the full batch needs, run with swap off (recompute) and with swap on; the resume re-runs the
second half of the requests in a fresh engine at another ``max_num_seqs``; every sample is compared with the full
batch's. The JSON is written after each mode.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import UsageExit, bench_args  # noqa: E402  (parsed before torch touches the GPU: --help answers anywhere)


def _engine_flags() -> argparse.ArgumentParser:
    """The engine section's scale flags (issue 17), a parent of ``bench_args``'s parser."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--engine-only", action="store_true", help="only section 5")
    ap.add_argument("--requests", type=int, default=None)
    ap.add_argument("--prompt-range", default=None, metavar="LO-HI")
    ap.add_argument("--new", type=int, default=None)
    ap.add_argument("--alone", type=int, default=None)
    ap.add_argument("--pool-fraction", type=float, default=None,
                    help="small pool = this fraction of the pages the full batch needs (also run with swap on)")
    ap.add_argument("--resume-max-num-seqs", type=int, default=None,
                    help="re-run the second half of the requests at this max_num_seqs")
    ap.add_argument("--modes", default="default,deterministic")
    return ap


ARGS = bench_args(__doc__, "deterministic.json", None if __name__ == "__main__" else [], parents=[_engine_flags()])
EFLAGS = ARGS
SMOKE = ARGS.smoke or os.environ.get("BENCH_SMOKE") == "1"
if SMOKE:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import graph_ms, log, random_model_dir  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from litesys.kernels import decode  # noqa: E402
from litesys.kernels.common import num_sms  # noqa: E402
from litesys.kernels.gemm_invariant import GemmTiles, gemm, gemm_tiles  # noqa: E402
from litesys.kernels.launch import DECODE  # noqa: E402

DEV = "cpu" if SMOKE else "cuda"
DT = torch.bfloat16


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    inter: int
    vocab: int
    layers: int

    def shapes(self) -> dict[str, tuple[int, int]]:
        """(N, K) of each projection, as the executors fuse them (qkv, gate_up)."""
        d = self.head_dim
        return {"qkv": ((self.q_heads + 2 * self.kv_heads) * d, self.hidden), "o": (self.hidden, self.q_heads * d),
                "gate_up": (2 * self.inter, self.hidden), "down": (self.hidden, self.inter),
                "lm_head": (self.vocab, self.hidden)}


if SMOKE:
    MODELS = [Model("tiny", 64, 4, 2, 16, 80, 200, 2)]
    CHECK_MS, TIME_MS, PREFILL_M = (1, 3, 7), (1, 8), 40
    SWEEP = [GemmTiles(16, 32, 32, 4, 1), GemmTiles(32, 32, 32, 4, 1)]
    ATT_CTX, ATT_BATCH, ATT_HEADS, SPLITS, PAGE = (200,), (1, 3), (4, 2, 16), (64, 128), 16
    ENGINE = dict(requests=6, prompt=(2, 20), new=24, alone=2, small_pool=8,
                  config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=16, vocab_size=512))
else:
    MODELS = [Model("Qwen3-0.6B", 1024, 16, 8, 128, 3072, 151936, 28),
              Model("Qwen3-8B", 4096, 32, 8, 128, 12288, 151936, 36)]
    CHECK_MS, TIME_MS, PREFILL_M = (1, 2, 3, 7, 8, 16, 33, 64, 100, 128, 255, 256, 1000), (1, 8, 32, 64, 128, 256), 2048
    SWEEP = [GemmTiles(64, 128, 64, 4, 4), GemmTiles(64, 64, 128, 4, 4), GemmTiles(64, 32, 128, 4, 4),
             GemmTiles(128, 128, 64, 8, 3), GemmTiles(128, 256, 64, 8, 3), GemmTiles(64, 256, 64, 4, 3)]
    ATT_CTX, ATT_BATCH, ATT_HEADS, SPLITS, PAGE = (4096, 32768), (1, 16, 64), (32, 8, 128), (256, 512, 1024), 16
    ENGINE = dict(requests=64, prompt=(16, 256), new=256, alone=4, small_pool=400, config={})  # 400 x 16 tokens

if EFLAGS.requests is not None:
    ENGINE["requests"] = EFLAGS.requests
if EFLAGS.prompt_range is not None:
    try:
        lo, _, hi = EFLAGS.prompt_range.partition("-")
        ENGINE["prompt"] = (int(lo), int(hi or lo))
    except ValueError:
        raise UsageExit("deterministic.py: --prompt-range takes LO-HI (e.g. 32-1024), "
                        f"got {EFLAGS.prompt_range!r}") from None
for _key in ("new", "alone"):
    if getattr(EFLAGS, _key) is not None:
        ENGINE[_key] = getattr(EFLAGS, _key)
MODES = [m.strip() for m in EFLAGS.modes.split(",")]
if not MODES or set(MODES) - {"default", "deterministic"}:
    raise UsageExit(f"deterministic.py: --modes takes default and/or deterministic, got {EFLAGS.modes!r}")

RESULTS: dict = {"device": "cpu (smoke)" if SMOKE else torch.cuda.get_device_name(), "torch": torch.__version__}


def timed_ms(fn, iters: int = 50) -> float:
    """GPU ms per call from CUDA-graph replays (no launch overhead, as under the engine's decode graphs)."""
    if SMOKE:
        fn()
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    return graph_ms(fn, iters)


def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
    """Random bf16 on the device (generated there: a 32K x 64 KV cache is 4 G values)."""
    return (torch.randn(*shape, device=DEV) * scale).to(DT)


def free() -> None:
    if not SMOKE:
        torch.cuda.empty_cache()


# ---- 1 + 2: the GEMM ------------------------------------------------------------------------------------------
def rows_invariant(fn, x: torch.Tensor, w: torch.Tensor, full: torch.Tensor, seed: int) -> list[int]:
    """The M of CHECK_MS whose rows (random ones of ``x``, placed at random among 7 random others) differ from
    ``full``'s; [] = invariant."""
    g = torch.Generator().manual_seed(seed)
    bad = []
    for m in CHECK_MS:
        rows = torch.randperm(x.shape[0], generator=g)[:m].to(x.device)
        xs = torch.randn(m + 7, x.shape[1], generator=g).to(x.device, x.dtype)
        at = torch.randperm(m + 7, generator=g)[:m].to(x.device)
        xs[at] = x[rows]
        if not torch.equal(fn(xs)[at], full[rows]):
            bad.append(m)
    return bad


def gemm_shape(model: Model, name: str, n: int, k: int) -> dict:
    torch.manual_seed(n * 7 + k)
    w = randn(n, k, scale=k ** -0.5)
    x = randn(PREFILL_M, k)
    tiles = gemm_tiles(n, k, DT, num_sms(torch.device(DEV)))
    full = gemm(x, w)
    exact = x.float() @ w.float().T
    err = ((full.float() - exact).norm() / exact.norm()).item()
    res = dict(model=model.name, proj=name, N=n, K=k, tiles=dataclasses.asdict(tiles), rel_err_vs_fp32=err,
               invariant_bad_M=rows_invariant(lambda a: gemm(a, w), x, w, full, 1),
               cublas_bad_M=rows_invariant(lambda a: F.linear(a, w), x, w, F.linear(x, w), 1))
    res["invariant"] = not res["invariant_bad_M"] and err < 2e-2
    times = {}
    for m in (*TIME_MS, PREFILL_M):
        xm, iters = x[:m].contiguous(), 20 if m >= 1024 else 50
        times[m] = dict(invariant_ms=timed_ms(lambda xm=xm: gemm(xm, w), iters),
                        cublas_ms=timed_ms(lambda xm=xm: F.linear(xm, w), iters))
        times[m]["ratio"] = times[m]["invariant_ms"] / times[m]["cublas_ms"]
    res["times"] = times
    # tile sweep (M 64 and prefill) and cross-tile bitwise equality at the same BLOCK_K
    sweep, by_k = [], {}
    for t in SWEEP:
        by_k.setdefault(t.block_k, []).append(gemm(x, w, tiles=t))
        ms = {}
        for m in (64, PREFILL_M):
            xm = x[:m].contiguous()
            ms[m] = timed_ms(lambda t=t, xm=xm: gemm(xm, w, tiles=t), 20)
        sweep.append(dict(tiles=dataclasses.asdict(t), ms=ms))
    res["sweep"] = sweep
    res["same_block_k_tiles_bitwise_equal"] = {bk: all(torch.equal(ys[0], y) for y in ys[1:])
                                               for bk, ys in by_k.items()}
    log(f"{model.name} {name} [{n}x{k}] tiles {tiles.block_m}/{tiles.block_n}/{tiles.block_k}: invariant "
        f"{res['invariant']} (bad M {res['invariant_bad_M']}), cuBLAS bad M {res['cublas_bad_M']}, err {err:.1e}, "
        f"ratio M=1 {times[TIME_MS[0]]['ratio']:.2f} M={PREFILL_M} {times[PREFILL_M]['ratio']:.2f}")
    return res


def step_ratios(model: Model, shapes: list[dict]) -> dict:
    """One decode step's GEMMs (every layer's four + lm_head) at each M: invariant ms, cuBLAS ms, ratio."""
    out = {}
    for m in (*TIME_MS, PREFILL_M):
        tot = {"invariant_ms": 0.0, "cublas_ms": 0.0}
        for s in shapes:
            mult = 1 if s["proj"] == "lm_head" else model.layers
            for key in tot:
                tot[key] += mult * s["times"][m][key]
        out[m] = {**tot, "ratio": tot["invariant_ms"] / tot["cublas_ms"]}
    return out


# ---- 4: decode attention --------------------------------------------------------------------------------------
def attention_case(ctx: int, batch: int) -> dict:
    hq, hkv, d = ATT_HEADS
    torch.manual_seed(ctx + batch)
    lens = torch.randint(ctx // 2, ctx + 1, (batch,))
    lens[0] = ctx
    per_seq = -(-ctx // PAGE)
    n_pages = batch * per_seq + 1
    k, v = randn(n_pages, PAGE, hkv, d), randn(n_pages, PAGE, hkv, d)
    pt = (1 + torch.randperm(n_pages - 1)[:batch * per_seq]).view(batch, per_seq).int().to(DEV)
    lengths = lens.int().to(DEV)
    q = randn(batch, hq, d)
    scale = d ** -0.5
    cfgs = {"default": DECODE, **{f"split_{t}": dataclasses.replace(DECODE, split_tokens=t) for t in SPLITS}}
    res = dict(ctx=ctx, batch=batch)
    base = None
    for name, cfg in cfgs.items():
        out = decode.fused(q, k, v, pt, lengths, scale, cfg)
        base = out if base is None else base
        checked = range(batch) if batch <= 4 else (0, 1, batch // 2, batch - 1)
        alone_equal = all(torch.equal(out[b], decode.fused(q[b:b + 1], k, v, pt[b:b + 1, :-(-int(lens[b]) // PAGE)],
                                                           lengths[b:b + 1], scale, cfg)[0]) for b in checked)
        err = ((out.float() - base.float()).norm() / base.float().norm()).item()
        res[name] = dict(us=1e3 * timed_ms(lambda cfg=cfg: decode.fused(q, k, v, pt, lengths, scale, cfg)),
                         alone_equals_batch=alone_equal, rel_err_vs_default=err)
    log(f"attention ctx {ctx} batch {batch}: " + ", ".join(f"{n} {r['us']:.0f} us (alone==batch "
                                                            f"{r['alone_equals_batch']})" for n, r in res.items()
                                                            if isinstance(r, dict)))
    return res


# ---- 5: the engine --------------------------------------------------------------------------------------------
def engine_runs(save=lambda res: None) -> dict:
    from litesys import LLM, SamplingParams

    src = json.loads((Path(__file__).parent / "configs" / "qwen3_0.6b.json").read_text())
    tmp = random_model_dir({**src, **ENGINE["config"]})
    rng = random.Random(0)
    vocab = ENGINE["config"].get("vocab_size", src["vocab_size"])
    prompts = [[rng.randrange(vocab) for _ in range(rng.randint(*ENGINE["prompt"]))] for _ in range(ENGINE["requests"])]
    params = [SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=ENGINE["new"], ignore_eos=True,
                             repeat_check=False, seed=1000 + i) for i in range(len(prompts))]
    alone = rng.sample(range(len(prompts)), ENGINE["alone"])
    small_pool = ENGINE["small_pool"]
    if EFLAGS.pool_fraction is not None:  # of the pages every sequence needs at its full length (+ the null page)
        need = sum(-(-(len(p) + ENGINE["new"]) // 16) for p in prompts)
        small_pool = max(int(EFLAGS.pool_fraction * need), -(-(ENGINE["prompt"][1] + ENGINE["new"]) // 16) + 2)
    res = dict(requests=len(prompts), prompt=list(ENGINE["prompt"]), new=ENGINE["new"], small_pool=small_pool)

    def differ(outs: list[list[int]], ref: list[list[int]]) -> int:
        return sum(a != b for a, b in zip(outs, ref))

    for name in MODES:
        det = name == "deterministic"
        kw = dict(device=DEV, dtype=torch.float32 if SMOKE else DT, load_format="random", deterministic=det,
                  max_seq_len=ENGINE["prompt"][1] + ENGINE["new"] + 8, max_num_seqs=ENGINE["requests"])
        llm = LLM(str(tmp), **kw)
        llm.generate(prompts[:2], params[:2])  # warm-up: kernels compiled, graphs captured
        t = time.perf_counter()
        full = [o.token_ids for o in llm.generate(prompts, params)]
        wall = time.perf_counter() - t
        solo = {i: llm.generate([prompts[i]], [params[i]])[0].token_ids for i in alone}
        llm.close()
        small = LLM(str(tmp), **kw, num_kv_pages=small_pool, swap_space_gb=0)
        tight = [o.token_ids for o in small.generate(prompts, params)]
        preemptions = small.engine.stats["preemptions"]
        small.close()
        res[name] = dict(tok_per_s=len(prompts) * ENGINE["new"] / wall, wall_s=wall,
                         alone_differ=sum(solo[i] != full[i] for i in alone), alone_checked=len(alone),
                         preempted_differ=differ(tight, full), preemptions=preemptions)
        if EFLAGS.pool_fraction is not None:  # the same pool with swap on (the default swap space)
            small = LLM(str(tmp), **kw, num_kv_pages=small_pool)
            swapped = [o.token_ids for o in small.generate(prompts, params)]
            res[name].update(swap_preempted_differ=differ(swapped, full),
                             swap_preemptions=small.engine.stats["preemptions"],
                             swap_stats=dict(small.engine.swap.stats))
            small.close()
        if EFLAGS.resume_max_num_seqs is not None:  # the second half again, in another batch
            half = len(prompts) // 2
            again = LLM(str(tmp), **{**kw, "max_num_seqs": EFLAGS.resume_max_num_seqs})
            resumed = [o.token_ids for o in again.generate(prompts[half:], params[half:])]
            again.close()
            res[name].update(resume_differ=differ(resumed, full[half:]), resume_checked=len(prompts) - half,
                             resume_max_num_seqs=EFLAGS.resume_max_num_seqs)
        log(f"engine {name}: {res[name]['tok_per_s']:.0f} tok/s; alone differ {res[name]['alone_differ']}/"
            f"{len(alone)}, small pool ({preemptions} preemptions) differ {res[name]['preempted_differ']}/"
            f"{len(prompts)}" + "".join(f", {k} {v}" for k, v in res[name].items() if k.startswith(("swap", "resume"))))
        free()
        save(res)
    if {"default", "deterministic"} <= set(res):
        res["tok_per_s_ratio"] = res["deterministic"]["tok_per_s"] / res["default"]["tok_per_s"]
    return res


def summary() -> None:
    print("\n== invariant GEMM (bf16): bitwise rows across M, time / cuBLAS ==")
    ms = (*TIME_MS, PREFILL_M)
    print(f"{'model':12} {'proj':8} {'N x K':>14} {'inv':>4} {'cuBLAS inv':>10} {'err':>8} "
          + " ".join(f"{'M=' + str(m):>7}" for m in ms))
    for s in RESULTS["gemm"]:
        shape = f"{s['N']}x{s['K']}"
        print(f"{s['model']:12} {s['proj']:8} {shape:>14} {'yes' if s['invariant'] else 'NO':>4} "
              f"{'yes' if not s['cublas_bad_M'] else 'no':>10} {s['rel_err_vs_fp32']:8.1e} "
              + " ".join(f"{s['times'][m]['ratio']:7.2f}" for m in ms))
    print("\n== one decode step's GEMMs (layers x 4 + lm_head): invariant / cuBLAS ==")
    for name, r in RESULTS["step"].items():
        print(f"{name:12} " + " ".join(f"M={m}: {r[m]['invariant_ms']:.3f}/{r[m]['cublas_ms']:.3f} ms = "
                                       f"{r[m]['ratio']:.2f}" for m in ms))
    print("\n== decode attention, Qwen3-8B heads: us (alone == in batch) ==")
    for a in RESULTS["attention"]:
        print(f"ctx {a['ctx']:6} batch {a['batch']:3}: " + "  ".join(
            f"{n} {r['us']:8.1f} ({'=' if r['alone_equals_batch'] else 'x'}, err {r['rel_err_vs_default']:.0e})"
            for n, r in a.items() if isinstance(r, dict)))
    e = RESULTS["engine"]
    print("\n== engine, Qwen3-0.6B shapes, random weights, sampled ==")
    for name in ("default", "deterministic"):
        r = e[name]
        print(f"{name:14} {r['tok_per_s']:8.0f} tok/s  alone != batch: {r['alone_differ']}/{r['alone_checked']}  "
              f"preempted (x{r['preemptions']}) != batch: {r['preempted_differ']}")
    print(f"deterministic / default tok/s: {e['tok_per_s_ratio']:.3f}")
    print(f"\nall invariant paths bitwise: {RESULTS['all_invariant']}")


def write() -> None:
    if ARGS.out:
        Path(ARGS.out).mkdir(parents=True, exist_ok=True)
        path = Path(ARGS.out) / "deterministic.json"
        path.write_text(json.dumps(RESULTS, indent=1, default=str))
        log(f"wrote {path}")


def engine_summary() -> None:
    e = RESULTS["engine"]
    print(f"\n== engine, Qwen3-0.6B shapes, random weights, sampled: {e['requests']} requests, prompts "
          f"{e['prompt'][0]}-{e['prompt'][1]}, {e['new']} new tokens ==")
    for name in MODES:
        r = e[name]
        extra = "".join(f"  {k}: {r[k]}" for k in ("swap_preempted_differ", "swap_preemptions", "resume_differ")
                        if k in r)
        print(f"{name:14} {r['tok_per_s']:8.0f} tok/s  alone != batch: {r['alone_differ']}/{r['alone_checked']}  "
              f"preempted (x{r['preemptions']}) != batch: {r['preempted_differ']}{extra}")
    if "tok_per_s_ratio" in e:
        print(f"deterministic / default tok/s: {e['tok_per_s_ratio']:.3f}")


def main() -> None:
    log(f"device {RESULTS['device']}")
    if EFLAGS.engine_only:
        RESULTS["engine"] = engine_runs(lambda res: (RESULTS.__setitem__("engine", res), write()))
        engine_summary()
        write()
        return
    RESULTS["gemm"], RESULTS["step"] = [], {}
    for model in MODELS:
        shapes = []
        for name, (n, k) in model.shapes().items():
            shapes.append(gemm_shape(model, name, n, k))
            free()
        RESULTS["gemm"] += shapes
        RESULTS["step"][model.name] = step_ratios(model, shapes)
    RESULTS["attention"] = []
    for ctx in ATT_CTX:
        for b in ATT_BATCH:
            RESULTS["attention"].append(attention_case(ctx, b))
            free()
    RESULTS["engine"] = engine_runs()
    det = RESULTS["engine"]["deterministic"]
    RESULTS["all_invariant"] = (all(s["invariant"] for s in RESULTS["gemm"]) and all(
        r["alone_equals_batch"] for a in RESULTS["attention"] for n, r in a.items() if n.startswith("split_"))
        and det["alone_differ"] == 0 and det["preempted_differ"] == 0)
    summary()
    write()


if __name__ == "__main__":
    main()
