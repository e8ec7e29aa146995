"""How the split count of the fused 16-bit decode kernel sets its speed: DECODE (``decode.saturating_plan``) against
the older programs-per-SM rule at each ``programs_per_sm`` x ``block_n`` (H200 runs: results/h200_session4.json;
the explicit (block_n, splits) sweep behind the saturating plan: results/h200_session5.json, ``bn_sweep``).

    python benchmarks/decode_splits.py [--out DIR]     # GPU only, ~20 s; writes DIR/decode_splits.json
    python benchmarks/decode_splits.py --explicit      # ~60 s: every (block_n, splits) -> decode_splits_explicit.json

For each shape (batch, context, q heads, KV heads) of the engine's benchmark rows: the fused split + merge time of
DECODE and of ``programs_per_sm`` 4..8 x ``block_n`` 32/64 (CUDA graph of 20 calls, pages shuffled), as % of the
copy bandwidth for the K/V bytes read.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import UsageExit, copy_bandwidth, graph_ms, save_json  # noqa: E402

from litesys.kernels import decode  # noqa: E402
from litesys.kernels.common import LOG2E, group_pad, num_sms  # noqa: E402
from litesys.kernels.decode_merge import decode_merge  # noqa: E402
from litesys.kernels.decode_split import decode_split  # noqa: E402
from litesys.kernels.launch import DECODE  # noqa: E402

SHAPES = [(32, 4200, 32, 8, 8320), (32, 8200, 32, 8, 8320), (32, 2000, 32, 8, 8320), (16, 8000, 32, 8, 8320),
          (64, 4000, 16, 8, 4224), (64, 2100, 16, 8, 4224), (64, 1000, 16, 8, 4224), (128, 500, 32, 8, 2560),
          (128, 1500, 32, 8, 2560), (128, 700, 32, 4, 1536), (128, 1000, 32, 4, 1536), (256, 650, 16, 8, 1152),
          (256, 1100, 16, 8, 1152), (128, 200, 16, 8, 384)]  # (batch, context, Hq, Hkv, table capacity)


def workload(b: int, ctx: int, hq: int, hkv: int, cap: int, copy: float, page: int = 16, d: int = 128) -> tuple:
    """Random bf16 K/V in shuffled pages (a table of ``cap`` tokens a row), every length ``ctx``, a query, and the
    K/V bytes' time at the copy bandwidth (us)."""
    per_row = -(-cap // page)
    num_pages = b * per_row + 1
    k_cache = torch.randn(num_pages, page, hkv, d, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    table = (torch.randperm(num_pages - 1, device="cuda") + 1).view(b, per_row).int()
    lengths = torch.full((b,), ctx, device="cuda", dtype=torch.int32)
    q = torch.randn(b, hq, d, device="cuda", dtype=torch.bfloat16)
    return k_cache, v_cache, table, lengths, q, b * ctx * hkv * d * 2 * 2 / copy * 1e6


def measure(b: int, ctx: int, hq: int, hkv: int, cap: int, copy: float) -> dict:
    """One shape: us per fused call for DECODE and the programs_per_sm x block_n grid."""
    k_cache, v_cache, table, lengths, q, floor_us = workload(b, ctx, hq, hkv, cap, copy)
    grid = itertools.product(range(4, 9), (32, 64))
    cfgs = {"DECODE": DECODE, **{f"programs_per_sm={p},block_n={n}": dataclasses.replace(
        DECODE, saturate_per_sm=0, programs_per_sm=p, block_n=n) for p, n in grid}}
    us = {name: 1e3 * graph_ms(lambda c=c: decode.fused(q, k_cache, v_cache, table, lengths, 0.088, c), 5, 20)
          for name, c in cfgs.items()}
    return dict(batch=b, context=ctx, q_heads=hq, kv_heads=hkv, floor_us=floor_us, us=us,
                of_copy_bw={n: floor_us / t for n, t in us.items()})


# --explicit: (batch, context, Hq, Hkv) at 256-2048 (sequence, KV head) pairs, Qwen3-0.6B/8B/30B-A3B heads
EXPLICIT_SHAPES = [(32, 4200, 32, 8), (32, 8192, 32, 8), (64, 2000, 32, 4), (48, 2000, 16, 8), (64, 2100, 16, 8),
                   (64, 4096, 16, 8), (128, 1000, 32, 4), (64, 1500, 32, 8), (96, 1500, 32, 8), (128, 1500, 32, 8),
                   (128, 600, 16, 8), (256, 1000, 32, 4), (256, 640, 16, 8), (128, 1536, 32, 4), (128, 512, 32, 4)]
EXPLICIT_SPLITS = (1, 2, 3, 4, 5, 6, 8)


def measure_explicit(b: int, ctx: int, hq: int, hkv: int, copy: float) -> dict:
    """One shape: us of split + merge at each explicit (block_n, splits), and of DECODE's own plan."""
    cap = ctx + 64
    k_cache, v_cache, table, lengths, q, floor_us = workload(b, ctx, hq, hkv, cap, copy)
    d = q.shape[2]
    out = torch.empty_like(q)

    def run(block_n: int, splits: int):
        part = torch.empty(b, hq, splits, d, dtype=torch.float32, device="cuda") if splits > 1 else None
        lse = torch.empty(b, hq, splits, dtype=torch.float32, device="cuda") if splits > 1 else None

        def fn():
            decode_split(q, k_cache, v_cache, table, lengths, part, lse, out, 0.088 * LOG2E, block_n,
                         group_pad(hq // hkv), "tf32", DECODE.num_warps, DECODE.num_stages)
            if part is not None:
                decode_merge(part, lse, lengths, out, block_n, DECODE.merge_num_warps)
        return fn
    us = {f"block_n={n},splits={s}": 1e3 * graph_ms(run(n, s), 5, 10) for n in (32, 64) for s in EXPLICIT_SPLITS}
    us["DECODE"] = 1e3 * graph_ms(lambda: decode.fused(q, k_cache, v_cache, table, lengths, 0.088, DECODE), 5, 10)
    plan = decode.saturating_plan(b * hkv, num_sms(q.device), table.shape[1] * k_cache.shape[1], DECODE)  # fused's
    return dict(batch=b, context=ctx, q_heads=hq, kv_heads=hkv, floor_us=floor_us, plan=plan, us=us,
                best=min(us, key=us.get), of_copy_bw={n: floor_us / t for n, t in us.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for decode_splits.json")
    ap.add_argument("--explicit", action="store_true", help="every (block_n, splits) at EXPLICIT_SHAPES instead")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise UsageExit("decode_splits.py measures GPU kernels: run it on a CUDA device")
    copy = copy_bandwidth()
    rows = []
    if args.explicit:
        for shape in EXPLICIT_SHAPES:
            rows.append(measure_explicit(*shape, copy))
            r = rows[-1]
            print(f"{shape}: DECODE (plan {r['plan']}) {r['us']['DECODE']:.1f} us, best {r['best']} "
                  f"{r['us'][r['best']]:.1f} us", flush=True)
            torch.cuda.empty_cache()
        out = save_json(args.out, "decode_splits_explicit.json", dict(device=torch.cuda.get_device_name(),
                                                                       copy_TBps=copy / 1e12, rows=rows))
        print(f"wrote {out}", file=sys.stderr)
        return
    for shape in SHAPES:
        row = measure(*shape, copy)
        us = row["us"]
        print(f"{shape[0]} x {shape[1]} ({shape[2]}/{shape[3]} heads): DECODE {us['DECODE']:.1f} us "
              f"({row['of_copy_bw']['DECODE']:.0%} of copy bw), best {min(us.values()):.1f}", flush=True)
        rows.append(row)
    out = save_json(args.out, "decode_splits.json", dict(device=torch.cuda.get_device_name(), copy_TBps=copy / 1e12,
                                                         rows=rows))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
