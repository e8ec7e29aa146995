"""GPU check and benchmark of the fused MoE kernels alone, Qwen3-30B-A3B's shape (~2 min).

    python3 benchmarks/bench_moe.py                   # writes $OUT/bench_moe.json if OUT is set
    BENCH_SMOKE=1 python3 benchmarks/bench_moe.py     # tiny shapes on CPU (TRITON_INTERPRET)

One MoE block with random bf16 weights (E=128 experts, top-8, H=2048, I=768) and a random router, for
T in {1, 16, 64, 128, 256, 4096} tokens:
1. HBM copy bandwidth (device-to-device copy, bytes read + written): the ceiling of a weight-bound kernel.
2. Correctness of every timed configuration vs the PyTorch reference in fp32 (bf16 rel err < 1e-2).
3. Time (median of ``do_bench``) of routing + alignment + both kernels replayed as one CUDA graph (as a decode
   step runs it), for ``pick_config``'s choice and a small sweep of tiles; the kernels alone (alignment
   precomputed); the per-expert PyTorch loop (the old path). Bandwidth counts only the experts the tokens
   actually route to (plus x and the output), as a fraction of the copy bandwidth; TFLOP/s for large T.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

from common import bench_args  # (parsed before torch touches the GPU: --help answers anywhere)

ARGS = bench_args(__doc__, "bench_moe.json", None if __name__ == "__main__" else [])
SMOKE = ARGS.smoke or os.environ.get("BENCH_SMOKE") == "1"  # exercise the logic on CPU before spending GPU time
if SMOKE:
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import triton  # noqa: E402
from common import bench_ms as _bench_ms  # noqa: E402
from common import copy_bandwidth as _copy_bandwidth  # noqa: E402
from common import log, rel_err  # noqa: E402

from litesys.kernels.moe import MoeKernelConfig, fused_moe, pick_config  # noqa: E402
from litesys.kernels.moe_align import align_block_size  # noqa: E402
from litesys.kernels.ref.moe import moe_reference  # noqa: E402
from litesys.models.moe.routing import route  # noqa: E402

C = MoeKernelConfig


@dataclasses.dataclass(frozen=True)
class Sizes:
    experts: int = 128
    top_k: int = 8
    hidden: int = 2048
    inter: int = 768
    tokens: tuple[int, ...] = (1, 16, 64, 128, 256, 4096)  # 128: the 128-request decode step
    copy_elems: int = 1 << 29  # 1 GiB of bf16


SZ = Sizes(experts=8, top_k=2, hidden=64, inter=32, tokens=(1, 5, 40), copy_elems=1 << 10) if SMOKE else Sizes()
DEV = "cpu" if SMOKE else "cuda"
BF16 = torch.bfloat16
T0 = time.time()
RESULTS: dict = {"device": "cpu (smoke)" if SMOKE else torch.cuda.get_device_name(), "torch": torch.__version__,
                 "triton": triton.__version__, "sizes": dataclasses.asdict(SZ)}





def bench_ms(fn) -> float:
    return _bench_ms(fn, rep=50)


def graph_ms(fn) -> float:
    """Median time of ``fn`` replayed as a CUDA graph (no launch overhead: how a captured decode step runs)."""
    if SMOKE:
        return bench_ms(fn)
    fn()  # compile / warm up outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    ms = bench_ms(g.replay)
    del g
    return ms


def copy_bandwidth() -> float:
    return _copy_bandwidth(SZ.copy_elems, DEV) / 1e12  # TB/s


def candidates(n_pairs: int) -> list[MoeKernelConfig]:
    """A few tiles around pick_config's choice for this pair count (kept small: each one compiles 2 kernels)."""
    if SMOKE:
        return [C(16, 32, 32, 4, 1, pair_mode=True), C(16, 32, 32, 4, 1)]
    per_expert = n_pairs / SZ.experts
    if n_pairs <= 32:
        return [C(16, 32, 128, 4, 4, True), C(16, 64, 128, 4, 4, True), C(16, 64, 64, 4, 4, True),
                C(16, 64, 128, 4, 4)]
    if per_expert <= 16:
        return [C(16, 32, 128, 4, 4), C(16, 64, 128, 4, 4), C(16, 64, 64, 4, 3), C(16, 128, 128, 4, 3)]
    if per_expert <= 64:
        return [C(16, 64, 128, 4, 4), C(32, 64, 128, 4, 4), C(32, 128, 64, 4, 3), C(64, 64, 64, 4, 3)]
    return [C(64, 128, 64, 8, 4), C(64, 128, 64, 4, 3), C(128, 128, 64, 8, 3), C(64, 64, 64, 4, 4),
            C(128, 64, 64, 4, 4)]


def cfg_str(c: MoeKernelConfig) -> str:
    return f"{'pair' if c.pair_mode else 'sort'} m{c.block_m} n{c.block_n} k{c.block_k} w{c.num_warps} s{c.num_stages}"


def run_tokens(T: int, w13: torch.Tensor, w2: torch.Tensor, gate: torch.Tensor, ref_w: tuple, bw: float) -> dict:
    E, k, H, inter = SZ.experts, SZ.top_k, SZ.hidden, SZ.inter
    x = torch.randn(T, H, device=DEV, dtype=BF16)
    w, ids = route(x, gate, k, norm_topk_prob=True)
    n_pairs = T * k
    hit = int(torch.unique(ids).numel())
    per_expert = 3 * inter * H * 2
    nbytes = hit * per_expert + 2 * T * H * 2  # routed experts + x read + output written
    flops = 2 * n_pairs * 3 * inter * H
    ref = moe_reference(x.float(), ref_w[0], ref_w[1], w.float(), ids)
    default = pick_config(n_pairs, E, BF16)
    row: dict = {"tokens": T, "pairs": n_pairs, "experts_hit": hit, "routed_MB": nbytes / 1e6,
                 "default": cfg_str(default), "configs": []}
    cfgs = candidates(n_pairs)
    if default not in cfgs:
        cfgs.insert(0, default)
    for c in cfgs:
        err = rel_err(fused_moe(x, w13, w2, w, ids, config=c), ref)
        ms = graph_ms(lambda c=c: fused_moe(x, w13, w2, w, ids, config=c))
        row["configs"].append({"config": cfg_str(c), "ms": ms, "rel_err": err, "ok": err < 1e-2,
                               "bw_frac": nbytes / ms / 1e9 / bw, "tflops": flops / ms / 1e9})
    d = next(r for r in row["configs"] if r["config"] == row["default"])
    best = min((r for r in row["configs"] if r["ok"]), key=lambda r: r["ms"])
    row.update(ms=d["ms"], bw_frac=d["bw_frac"], tflops=d["tflops"], rel_err=d["rel_err"], best=best["config"],
               best_ms=best["ms"], best_bw_frac=best["bw_frac"])
    row["layer_ms"] = graph_ms(lambda: fused_moe(x, w13, w2, *route(x, gate, k, True), config=default))
    if not default.pair_mode:  # the kernels alone: what the sort/alignment launches cost on top
        a = align_block_size(ids, E, default.block_m)
        row["kernels_only_ms"] = graph_ms(lambda: fused_moe(x, w13, w2, w, ids, config=default, align=a))
    row["torch_loop_ms"] = bench_ms(lambda: moe_reference(x, w13, w2, w, ids))  # host syncs: eager only
    log(f"T={T:5d}: {hit:3d} experts, default {row['default']}: {d['ms'] * 1e3:8.1f} us "
        f"({d['bw_frac']:.0%} of copy bw, {d['tflops']:.0f} TFLOP/s, err {d['rel_err']:.1e}); best {row['best']}: "
        f"{best['ms'] * 1e3:.1f} us ({best['bw_frac']:.0%}); torch loop {row['torch_loop_ms'] * 1e3:.0f} us")
    return row


def main() -> None:
    torch.manual_seed(0)
    E, H, inter = SZ.experts, SZ.hidden, SZ.inter
    bw = copy_bandwidth()
    RESULTS["copy_TBps"] = bw
    w13 = torch.randn(E, 2 * inter, H, device=DEV, dtype=BF16) * H ** -0.5
    w2 = torch.randn(E, H, inter, device=DEV, dtype=BF16) * inter ** -0.5
    gate = torch.randn(E, H, device=DEV, dtype=BF16) * 0.02
    ref_w = (w13.float(), w2.float())
    rows = [run_tokens(T, w13, w2, gate, ref_w, bw) for T in SZ.tokens]
    RESULTS["rows"] = rows
    RESULTS["all_ok"] = all(c["ok"] for r in rows for c in r["configs"])
    print()
    print(f"{'tokens':>6} {'experts':>7} {'MB':>7} {'default':>26} {'us':>8} {'%bw':>5} {'TF/s':>5} "
          f"{'best':>26} {'us':>8} {'%bw':>5} {'layer':>8} {'kern':>8} {'loop':>8}")
    for r in rows:
        print(f"{r['tokens']:>6} {r['experts_hit']:>7} {r['routed_MB']:>7.1f} {r['default']:>26} {r['ms'] * 1e3:>8.1f} "
              f"{r['bw_frac']:>5.0%} {r['tflops']:>5.0f} {r['best']:>26} {r['best_ms'] * 1e3:>8.1f} "
              f"{r['best_bw_frac']:>5.0%} {r['layer_ms'] * 1e3:>8.1f} "
              f"{r.get('kernels_only_ms', float('nan')) * 1e3:>8.1f} "
              f"{r['torch_loop_ms'] * 1e3:>8.0f}")
    print(f"copy bandwidth {bw:.2f} TB/s; all configurations correct: {RESULTS['all_ok']}; "
          f"total {time.time() - T0:.0f}s")
    if ARGS.out:
        with open(os.path.join(ARGS.out, "bench_moe.json"), "w") as f:
            json.dump(RESULTS, f, indent=1)


if __name__ == "__main__":
    main()
