"""A decode step's output projections (o_proj, down_proj) with the add+RMSNorm that follows them: cuBLAS
(+ the separate SiLU·mul before down_proj) against the split-K kernel whose partials the norm sums
(``kernels/linear_splitk.py``), at the real shapes of Qwen3-0.6B / 8B / 30B-A3B and M = 32..256 rows.

    python benchmarks/bench_linear_splitk.py [--out DIR]   # GPU, ~2 min; writes DIR/linear_splitk.json
    python benchmarks/bench_linear_splitk.py --smoke       # the logic on CPU at tiny shapes

Each variant is timed as a CUDA graph of calls cycling through enough weight copies that none is read from L2
(as in a decode step, where every layer's weights come from HBM). Rows: the cuBLAS chain, ``split_plan``'s
choice, and the best of an explicit sweep (block_m x block_n x block_k x splits), in us and as % of the copy
bandwidth for the weight bytes.
"""
from __future__ import annotations

import itertools
import os
import sys
from functools import partial
from pathlib import Path

if os.environ.get("BENCH_SMOKE") == "1" or "--smoke" in sys.argv:  # before common and any kernel are imported
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["BENCH_SMOKE"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import SMOKE, UsageExit, bench_args, copy_bandwidth, graph_ms, log, save_json  # noqa: E402

from litesys.kernels.common import cdiv, next_pow2, num_sms  # noqa: E402
from litesys.kernels.linear_splitk import SplitPlan, linear_partials, split_plan  # noqa: E402
from litesys.kernels.norm_rope import add_rms_norm, silu_mul  # noqa: E402

# name -> (N = hidden, K, the input holds gate and up (down_proj))
SHAPES = {"0.6b_o": (1024, 2048, False), "0.6b_down": (1024, 3072, True), "8b_o": (4096, 4096, False),
          "8b_down": (4096, 12288, True), "30b_o": (2048, 4096, False)}
ROWS = (32, 64, 128, 256)


def chains(x, res, ln, silu):
    def cublas(w):
        a = silu_mul(x) if silu else x
        return add_rms_norm(F.linear(a, w), res, ln, 1e-6)

    def splitk(w, plan, fuse=silu):  # fuse: SiLU·mul inside the GEMM's loads; else its own launch before
        a = silu_mul(x) if silu and not fuse else x
        return add_rms_norm(linear_partials(a, w, plan, silu=fuse), res, ln, 1e-6)

    return cublas, splitk


def timed(fn, ws) -> float:
    """us per call, a graph of calls over the weight copies in turn."""
    state = {"i": 0}

    def step():
        fn(ws[state["i"] % len(ws)])
        state["i"] += 1

    return graph_ms(step, iters=5, calls=len(ws)) * 1e3


def sweep_plans(m: int, n: int, k: int):
    full = max(16, min(128, next_pow2(m)))  # every row in one tile, or half of them
    for bm, bn, bk in itertools.product(sorted({full, max(16, full // 2)}), (32, 64, 128), (64, 128, 256)):
        if bk > k or (bm + bn) * bk * 2 * (3 if bk == 256 else 4) > 200_000:  # shared memory of the stages
            continue
        for s in (1, 2, 4, 6, 8, 12):
            if k // bk >= s:
                yield SplitPlan(bm, bn, bk, s, 4 if bm <= 64 else 8, 3 if bk == 256 else 4)


def main(argv: list[str] | None = None) -> None:
    args = bench_args(__doc__, "linear_splitk.json", argv)
    if not SMOKE and not torch.cuda.is_available():
        raise UsageExit("bench_linear_splitk.py times GPU kernels: run it on a CUDA device (or --smoke on the CPU)")
    dev = "cpu" if SMOKE else "cuda"
    copy = copy_bandwidth(device=dev)
    shapes = {"tiny_o": (64, 128, False), "tiny_down": (64, 128, True)} if SMOKE else SHAPES
    only = os.environ.get("SHAPES")  # e.g. SHAPES=8b_o,30b_o ROWS=32,128
    shapes = {k: v for k, v in shapes.items() if not only or k in only.split(",")}
    rows = [int(r) for r in os.environ["ROWS"].split(",")] if os.environ.get("ROWS") else ROWS
    out = {"device": torch.cuda.get_device_name() if not SMOKE else "cpu", "copy_TBps": copy / 1e12,
           "sms": num_sms(torch.device(dev)), "rows": []}
    for name, (n, k, silu) in shapes.items():
        copies = 2 if SMOKE else max(4, cdiv(int(400e6), 2 * n * k))
        ws = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) / 64 for _ in range(copies)]
        ln = torch.ones(n, device=dev, dtype=torch.bfloat16)
        for m in ((16,) if SMOKE else rows):
            x = torch.randn(m, 2 * k if silu else k, device=dev, dtype=torch.bfloat16)
            res = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
            cublas, splitk = chains(x, res, ln, silu)
            want = cublas(ws[0])[1].float()
            floor_us = 2 * n * k / copy * 1e6
            row = {"shape": name, "M": m, "N": n, "K": k, "silu": silu, "floor_us": floor_us,
                   "cublas_us": timed(cublas, ws)}
            auto = split_plan(m, n, k, out["sms"])
            row["auto"] = vars(auto) if auto else None
            try:
                row["auto_us"] = timed(partial(splitk, plan=auto), ws) if auto else None
            except Exception as ex:  # out of shared memory: the plan's fault, recorded
                row["auto_us"], row["auto_error"] = None, type(ex).__name__
            for fuse in ((True, False) if silu else (False,)):
                results = []
                for plan in sweep_plans(m, n, k):
                    try:
                        got = splitk(ws[0], plan, fuse)[1].float()
                    except Exception as ex:  # out of shared memory etc.
                        log(f"{name} M={m} {plan}: {type(ex).__name__}")
                        continue
                    if (got - want).abs().max().item() > 0.02 * want.abs().max().item():
                        raise AssertionError(f"{name} M={m} {plan}: split-K result differs from cuBLAS")
                    results.append((timed(partial(splitk, plan=plan, fuse=fuse), ws), vars(plan)))
                results.sort(key=lambda r: r[0])
                key = "best_fused" if fuse else "best"
                row[f"{key}_us"], row[key] = results[0]
                row[f"top5{'_fused' if fuse else ''}"] = results[:5]
            for key in ("cublas", "auto", "best", "best_fused"):
                if row.get(f"{key}_us"):
                    row[f"{key}_bw"] = round(floor_us / row[f"{key}_us"], 3)
            log(f"{name} M={m}: cublas {row['cublas_us']:.1f} auto {row['auto_us'] or 0:.1f} best {row['best_us']:.1f}"
                f" {row['best']} fused silu {row.get('best_fused_us', 0):.1f} us (floor {floor_us:.1f})")
            out["rows"].append(row)
        del ws
    if args.out:
        log(f"wrote {save_json(args.out, 'linear_splitk.json', out)}")


if __name__ == "__main__":
    main()
