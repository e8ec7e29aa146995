"""The sampler's top-k on the GPU: the Triton kernel (``kernels/topk.py``) vs the torch paths it replaced, and the
whole ``sample()`` at the benchmark's params (T 0.6 / top-p 0.95 / top-k 20), default and deterministic.

    python benchmarks/sampler_topk.py [--out DIR] [--sweep]    # GPU, ~1-2 min; writes DIR/sampler_topk.json
    python benchmarks/sampler_topk.py --smoke                  # the logic on CPU (the twin), tiny sizes

Each time is the median us per call replayed from a CUDA graph (as the decode graphs run it), on random bf16 logits
[B, 151936] (Qwen3's vocabulary) at B = 64, 128, 256: ``torch_chunked`` = the sampler's previous top-k ([B, 64,
V/64].topk then the top-k of the 64 k), ``torch_topk`` = torch.topk, ``sort`` / ``sort_stable`` = the full sort of
the (previous / new) deterministic and top_k-off paths, ``kernel_k20`` / ``kernel_k64`` (``stage1_k20``: its first
launch alone); ``read_us`` = the logits'
bytes at the copy bandwidth. ``sample_*``: the whole ``sample()``: default (kernel at k 20), deterministic (64
fixed candidates), deterministic with one top_k 0 row (full sort + the fixed-width set), and the previous default /
deterministic (the chunked torch top-k / the full sort, same filters). ``--sweep`` (first): the kernel's configs
(chunk, group, super-group, warps) at B = 256, each checked against the twin; the fastest exact one per k bucket is
used for the rows. Imports only litesys.kernels and the sampler.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
if "--smoke" in sys.argv:
    os.environ["BENCH_SMOKE"] = "1"
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
import argparse  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402

import torch  # noqa: E402
from common import SMOKE, UsageExit, bench_args, copy_bandwidth, graph_ms, log, save_json  # noqa: E402

from litesys.engine.sampler import SamplingTensors, draw, filtered, sample, seed_hash, uniform  # noqa: E402
from litesys.kernels import topk as topk_mod  # noqa: E402
from litesys.kernels.common import cdiv, next_pow2  # noqa: E402
from litesys.kernels.ref.topk import topk_torch  # noqa: E402
from litesys.kernels.topk import TOPK_MAX, topk  # noqa: E402

V = 151_936 if not SMOKE else 4096
BATCHES = (64, 128, 256) if not SMOKE else (2,)
# (chunk, group, super-group, warps) tried per k bucket (results/h200_sampler_topk_lease1.json: the one-level ones)
SWEEP = {32: [(8192, 16, 1, 4), (8192, 16, 1, 2), (4096, 8, 1, 2), (4096, 16, 1, 2), (16384, 16, 8, 4),
              (16384, 16, 4, 4), (16384, 8, 8, 4), (8192, 16, 4, 4), (8192, 8, 8, 4), (32768, 16, 8, 4),
              (16384, 16, 8, 8), (16384, 16, 8, 2), (16384, 8, 4, 2), (8192, 8, 4, 2)],
         64: [(8192, 16, 1, 4), (4096, 8, 1, 4), (16384, 16, 4, 4), (16384, 8, 8, 4), (32768, 16, 8, 4),
              (16384, 16, 4, 8), (8192, 8, 4, 4), (16384, 16, 4, 2), (16384, 8, 4, 4)]}


def chunked_torch_topk(x: torch.Tensor, k: int, chunks: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's previous GPU top-k: the top-k of each of 64 chunks, then of the 64 k."""
    B, n = x.shape
    v, i = x.view(B, chunks, n // chunks).topk(k, dim=-1)
    i = i + (torch.arange(chunks, device=x.device) * (n // chunks)).view(1, chunks, 1)
    v2, j = v.reshape(B, chunks * k).topk(k, dim=-1)
    return v2, i.reshape(B, chunks * k).gather(1, j)


def stage1(x: torch.Tensor, k: int) -> None:
    """The kernel's first launch alone (the chunks' candidates), as ``topk`` makes it: where the time goes."""
    B, n = x.shape
    K = max(2, next_pow2(k))
    chunk, group, sup, warps = topk_mod.CONFIGS.get(K, topk_mod.DEFAULT)
    ch = max(K, min(chunk, next_pow2(n)))
    s = max(1, min(group, ch // K))
    C = cdiv(n, ch)
    ok = torch.empty(B, C * K, dtype=torch.int32, device=x.device)
    pos = torch.empty(B, C * K, dtype=torch.int32, device=x.device)
    topk_mod._chunk_topk[(B, C)](x, x.stride(0), n, ok, pos, C, CH=ch, S=s, S2=max(1, min(sup, ch // (s * K))), K=K,
                                 WIDE=False, num_warps=warps)


def params(B: int, top_k: int = 20) -> SamplingTensors:
    f = lambda v, dt: torch.full((B,), v, dtype=dt, device=DEV)  # noqa: E731
    return SamplingTensors(f(0.6, torch.float32), f(top_k, torch.int64), f(0.95, torch.float32),
                           f(0.0, torch.float32), seed_hash(torch.arange(B, dtype=torch.int64, device=DEV)))


def previous_sample(logits, p, steps, full: bool) -> torch.Tensor:
    """The previous ``sample()``'s work: the chunked torch top-k (default) or the full sort (deterministic)."""
    vals, idx = logits.sort(dim=-1, descending=True) if full else chunked_torch_topk(logits, 20)
    tok = draw(*filtered(vals, idx, p), uniform(p.seed_hash, steps).unsqueeze(1))
    return torch.where(p.temperature == 0, logits.argmax(dim=-1), tok)


def us(fn, *args, **kw) -> float:
    """Microseconds per graph-replayed call of ``fn(*args, **kw)``."""
    return round(graph_ms(partial(fn, *args, **kw)) * 1e3, 2)


def sweep(a: argparse.Namespace, res: dict) -> None:
    """Each config of SWEEP at B = 256 (exactness against the twin checked), within --sweep-seconds; the fastest
    exact one per k bucket becomes ``CONFIGS[K]`` for the rows measured next."""
    g = torch.Generator(device=DEV).manual_seed(1)
    x = (torch.randn(BATCHES[-1], V, generator=g, device=DEV) * 3).bfloat16()
    start = time.time()
    for K, configs in SWEEP.items():
        k = 20 if K == 32 else K
        want = topk_torch(x, k)
        for config in configs if not SMOKE else [(256, 16, 2, 4)]:
            if time.time() - start > a.sweep_seconds:
                break
            got = topk(x, k, config=config)
            ok = torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
            res["sweep"].append(dict(k=k, config=config, us=us(topk, x, k, config=config), exact=ok))
            log(res["sweep"][-1])
        tried = [r for r in res["sweep"] if r["k"] == k and r["exact"]]
        if tried:
            topk_mod.CONFIGS[K] = tuple(min(tried, key=lambda r: r["us"])["config"])
    res["kernel"]["configs"] = {K: topk_mod.CONFIGS[K] for K in SWEEP}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--sweep", action="store_true", help="the kernel's configs at B = 256 first (the best is used)")
    ap.add_argument("--sweep-seconds", type=float, default=60.0, help="stop sweeping after this long")
    a = bench_args(__doc__, "sampler_topk.json", argv, [ap])
    if a.sweep_seconds <= 0:
        raise UsageExit(f"sampler_topk.py: --sweep-seconds must be > 0 (got {a.sweep_seconds})")
    if not SMOKE and not torch.cuda.is_available():
        raise UsageExit("sampler_topk.py needs a CUDA GPU (or --smoke for the logic on CPU)")
    bw = copy_bandwidth(device=DEV)
    res = dict(vocab=V, dtype="bfloat16", copy_bandwidth_tb_s=round(bw / 1e12, 3), rows={}, sweep=[],
               kernel=dict(configs=dict(topk_mod.CONFIGS), topk_max=TOPK_MAX))
    if a.sweep:
        sweep(a, res)
        if a.out:
            save_json(a.out, "sampler_topk.json", res)
    g = torch.Generator(device=DEV).manual_seed(0)
    for B in BATCHES:
        x = (torch.randn(B, V, generator=g, device=DEV) * 3).bfloat16()
        for k in (20, 64):
            assert torch.equal(topk(x, k)[1], topk_torch(x, k)[1]) and torch.equal(topk(x, k)[0], x.topk(k).values)
        steps = torch.zeros(B, dtype=torch.int64, device=DEV)
        p, p0 = params(B), params(B)
        p0.top_k[0] = 0
        row = dict(read_us=round(B * V * 2 / bw * 1e6, 2), torch_chunked=us(chunked_torch_topk, x, 20),
                   torch_topk=us(x.topk, 20), sort=us(x.sort, dim=-1, descending=True),
                   sort_stable=us(x.sort, dim=-1, descending=True, stable=True),
                   kernel_k20=us(topk, x, 20), kernel_k64=us(topk, x, 64),
                   stage1_k20=us(stage1, x, 20) if not SMOKE else None,  # the interpreter: seconds
                   sample_default=us(sample, x, p, steps, False, False, 20),
                   sample_deterministic=us(sample, x, p, steps, False, False, TOPK_MAX),
                   sample_deterministic_with_top_k_0=us(sample, x, p0, steps, False, True, TOPK_MAX),
                   sample_previous_default=us(previous_sample, x, p, steps, False),
                   sample_previous_deterministic=us(previous_sample, x, p, steps, True))
        res["rows"][B] = row
        log(f"B={B}: {row}")
        if a.out:
            save_json(a.out, "sampler_topk.json", res)
    return res


DEV = "cuda" if torch.cuda.is_available() else "cpu"

if __name__ == "__main__":
    main()
