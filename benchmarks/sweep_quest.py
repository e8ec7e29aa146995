"""Sweep Quest's Triton launch parameters at one shape; prints the best per kernel (picks the defaults).

    python benchmarks/sweep_quest.py --context 32768 --batch 8 --out benchmarks/results/h100_quest_sweep.json

Times ``quest_scores`` (block_p, pages_per_prog, num_warps, num_stages) and ``quest_decode`` (block_n, splits
per (sequence, KV head), num_warps, num_stages) separately, each replayed from a CUDA graph (host launch
overhead excluded, as in the engine), on random bf16 K/V in shuffled pages and a 1/8 page budget; then the
selection kernel's warps. ``BENCH_SMOKE=1 TRITON_INTERPRET=1`` runs the logic on CPU at a tiny size.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
from functools import partial
from pathlib import Path

import torch
from common import SMOKE, graph_ms, log

from litesys.kernels import quest as quest_triton


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--hq", type=int, default=16)
    ap.add_argument("--hkv", type=int, default=8)
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("quest_sweep.json"))
    args = ap.parse_args()
    ctx, b, hq, hkv, ps, d = args.context, args.batch, args.hq, args.hkv, args.page, 128
    dev = "cpu" if SMOKE else "cuda"
    if SMOKE:
        ctx, b = 256, 2
    n_pages = ctx // ps
    k = torch.randn(b * n_pages + 1, ps, hkv, d, dtype=torch.bfloat16, device=dev)
    v = torch.randn_like(k)
    pt = (torch.randperm(b * n_pages, device=dev) + 1).view(b, n_pages).int()
    lengths = torch.full((b,), ctx, dtype=torch.int32, device=dev)
    q = torch.randn(b, hq, d, dtype=torch.bfloat16, device=dev)
    kmin, kmax = k.amin(dim=1), k.amax(dim=1)
    topk = n_pages // 8
    sel, phys = quest_triton.quest_select(q, kmin, kmax, pt, lengths, ps, n_pages, topk, 4, 0, fused=False)
    rows = []
    for block_p, per_prog, warps, stages in itertools.product([2, 4, 8], [16, 32, 64], [4, 8], [2, 3]):
        ms = graph_ms(partial(quest_triton.quest_scores, q, kmin, kmax, pt, lengths, ps, n_pages, block_p, per_prog,
                              warps, stages))
        rows.append(dict(kernel="scores", block_p=block_p, pages_per_prog=per_prog, num_warps=warps,
                         num_stages=stages, us=ms * 1e3))
    n_virtual = sel.shape[-1] * ps
    for block_n, nsplit, warps, stages in itertools.product([32, 64], [6, 9, 12, 16, 24], [2, 4], [2, 3]):
        split = math.ceil(math.ceil(n_virtual / nsplit) / block_n) * block_n
        try:
            ms = graph_ms(partial(quest_triton.quest_decode, q, k, v, pt, lengths, sel, d ** -0.5, block_n, split,
                                  warps, stages, phys=phys))
        except Exception as e:  # e.g. out of shared memory at this config
            log(f"decode block_n={block_n} nsplit={nsplit} warps={warps} stages={stages}: {type(e).__name__}")
            continue
        rows.append(dict(kernel="decode", block_n=block_n, nsplit=nsplit, split=split, num_warps=warps,
                         num_stages=stages, us=ms * 1e3))
    scores = quest_triton.quest_scores(q, kmin, kmax, pt, lengths, ps, n_pages)
    for warps in (2, 4, 8, 16):
        ms = graph_ms(partial(quest_triton.quest_select, q, kmin, kmax, pt, lengths, ps, n_pages, topk, 4, 0,
                              fused=False, scores=scores, num_warps=warps))
        rows.append(dict(kernel="select", num_warps=warps, us=ms * 1e3))
    default_split = quest_triton._split_size(b, hkv, n_virtual, 64, q.device)
    rows.append(dict(kernel="decode_default", split=default_split,
                     us=graph_ms(lambda: quest_triton.quest_decode(q, k, v, pt, lengths, sel, d ** -0.5,
                                                                   phys=phys)) * 1e3))
    rows.append(dict(kernel="scores_default",
                     us=graph_ms(lambda: quest_triton.quest_scores(q, kmin, kmax, pt, lengths, ps, n_pages)) * 1e3))
    for name in ("scores", "decode", "select"):
        best = sorted((r for r in rows if r["kernel"] == name), key=lambda r: r["us"])[:5]
        for r in best:
            log(f"{name} best: {r}")
    for r in rows:
        if r["kernel"].endswith("_default"):
            log(f"{r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
