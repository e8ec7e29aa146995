"""Sweep Quest's Triton launch parameters at one shape; prints the best per kernel (picks the defaults).

    python benchmarks/sweep_quest.py --context 32768 --batch 8 --out benchmarks/results/h100_quest_sweep.json

Times ``quest_scores`` (block_p, pages_per_prog, num_warps, num_stages) and ``quest_decode`` (block_n, splits
per (sequence, KV head), num_warps, num_stages) separately, each replayed from a CUDA graph (host launch
overhead excluded, as in the engine), on random bf16 K/V in shuffled pages and a 1/8 page budget; then the
selection kernel's warps. ``BENCH_SMOKE=1 TRITON_INTERPRET=1`` runs the logic on CPU at a tiny size.

    python benchmarks/sweep_quest.py --diagnose --out $OUT/quest_diag.json   # where one layer's decode time goes

``--diagnose``: checks the one-launch paths (parallel score + select, decode merged by its last split) against
the separate kernels at the benchmark size, then times each stage alone, the tiles of both one-launch kernels,
the whole chain in each arrangement, and dense decode at the context and at the selection's token count (the
same K/V bytes as Quest's decode), for Qwen3-0.6B heads (and the chains at 8B heads).
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


def _workload(ctx: int, b: int, hq: int, hkv: int, ps: int, d: int) -> tuple[torch.Tensor, ...]:
    """Random bf16 K/V in shuffled pages, full-length rows, a query and the pages' key summaries."""
    dev = "cpu" if SMOKE else "cuda"
    n_pages = ctx // ps
    k = torch.randn(b * n_pages + 1, ps, hkv, d, dtype=torch.bfloat16, device=dev)
    v = torch.randn_like(k)
    pt = (torch.randperm(b * n_pages, device=dev) + 1).view(b, n_pages).int()
    lengths = torch.full((b,), ctx, dtype=torch.int32, device=dev)
    q = torch.randn(b, hq, d, dtype=torch.bfloat16, device=dev)
    return k, v, pt, lengths, q, k.amin(dim=1), k.amax(dim=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--hq", type=int, default=16)
    ap.add_argument("--hkv", type=int, default=8)
    ap.add_argument("--page", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("quest_sweep.json"))
    ap.add_argument("--diagnose", action="store_true", help="stage times and the streaming knobs instead")
    ap.add_argument("--targets-from", type=Path, help="a --diagnose JSON: set its best knobs, then run "
                    "examples/sparse_bench.py's 32K targets (attention rows first, written at once; then e2e)")
    args = ap.parse_args()
    if args.targets_from:
        targets(args.targets_from, args.out, args.page)
        return
    if args.diagnose:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        best: dict = {}
        rows = diagnose(args.context, args.batch, args.page, 16, best=best)
        for name, value in best.items():  # the 8B-heads chains (and whatever runs next in-process) use them
            setattr(quest_triton, name, value)
        rows += diagnose(args.context, args.batch, args.page, 32, sweep=False)
        args.out.write_text(json.dumps(rows, indent=1))
        return
    ctx, b, hq, hkv, ps, d = args.context, args.batch, args.hq, args.hkv, args.page, 128
    if SMOKE:
        ctx, b = 256, 2
    n_pages = ctx // ps
    k, v, pt, lengths, q, kmin, kmax = _workload(ctx, b, hq, hkv, ps, d)
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


def diagnose(ctx: int, b: int, ps: int, hq: int, hkv: int = 8, d: int = 128, sweep: bool = True,
             best: dict | None = None) -> list[dict]:
    """Check streaming against the waiting chain, then time stages and both chains over the streaming knobs
    (persistent score programs per SM, pages per score item, decode programs per SM). ``best``: filled with the
    fastest knobs (the module defaults are set to them before the 8B-heads pass)."""
    from litesys.kernels import ops_triton
    from litesys.kernels.ref.quest import select_pages

    dev = "cpu" if SMOKE else "cuda"
    if SMOKE:
        ctx, b = 512, 2
    n_pages = ctx // ps
    k, v, pt, lengths, q, kmin, kmax = _workload(ctx, b, hq, hkv, ps, d)
    topk, scale = n_pages // 8, d ** -0.5
    cnt = torch.zeros(3, b * hkv, dtype=torch.int32, device=dev)
    sel_args = (q, kmin, kmax, pt, lengths, ps, n_pages, topk, 4, 0)
    rows = []

    def row(name: str, fn, **info) -> float:
        us = graph_ms(fn) * 1e3
        rows.append(dict(name=name, hq=hq, us=us, **info))
        log(f"hq={hq} {name} {info if info else ''}: {us:.1f} us")
        return us

    def waiting(lens=lengths):
        s_, p_ = quest_triton.quest_select(q, kmin, kmax, pt, lens, ps, n_pages, topk, 4, 0, fused=False)
        return quest_triton.quest_decode(q, k, v, pt, lens, s_, scale, phys=p_)

    def stream(lens=lengths, programs=None, run_pages=None, out=None):
        s_, p_, sc = quest_triton.quest_select(q, kmin, kmax, pt, lens, ps, n_pages, topk, 4, 0, counters=cnt,
                                               programs=programs, run_pages=run_pages, return_scores=True)
        o = quest_triton.quest_decode(q, k, v, pt, lens, s_, scale, phys=p_, counters=cnt)
        if out is not None:
            out.update(sel=s_, scores=sc)
        return o

    # correctness at this size (ragged lengths too): the selection == its own scores' top-k, the same output
    for lens in (lengths, torch.randint(ctx // 4, ctx + 1, (b,), dtype=torch.int32, device=dev)):
        for programs, run_pages in ((None, None), (7, 16)):
            got = {}
            out = stream(lens, programs, run_pages, got)
            ref = waiting(lens)
            rows.append(dict(name="check", hq=hq, programs=programs, run_pages=run_pages,
                             sel_equal_own_topk=torch.equal(got["sel"], select_pages(got["scores"], lens, ps, topk,
                                                                                     4, 0)),
                             rel_err_vs_waiting=((out.float() - ref.float()).norm() / ref.float().norm()).item(),
                             counters_zero=not cnt.any().item()))
            log(f"check hq={hq}: {rows[-1]}")
    sel, phys = quest_triton.quest_select(*sel_args, fused=False)
    dense_ms = row("dense_fused", lambda: ops_triton.paged_decode_fused(q, k, v, pt, lengths, scale, ctx))
    for name, fn in {"chain_waiting": waiting, "chain_stream": stream}.items():
        us = row(name, fn)
        rows[-1]["vs_dense"] = dense_ms * 1e3 / us
    if sweep:
        row("scores_kernel", lambda: quest_triton.quest_scores(q, kmin, kmax, pt, lengths, ps, n_pages))
        scores = quest_triton.quest_scores(q, kmin, kmax, pt, lengths, ps, n_pages)
        row("select_from_scores", lambda: quest_triton.quest_select(*sel_args, fused=False, scores=scores))
        row("decode", lambda: quest_triton.quest_decode(q, k, v, pt, lengths, sel, scale, phys=phys))
        n_virtual = sel.shape[-1] * ps
        row("dense_fused_same_bytes", lambda: ops_triton.paged_decode_fused(
            q, k, v, pt, torch.full_like(lengths, n_virtual), scale, n_virtual), context=n_virtual)
        knobs = {}
        for per_sm in (1, 2, 3, 4):
            for run_pages in (16, 32, 64):
                us = row("chain_stream", lambda p=per_sm, r=run_pages: stream(
                    programs=p * quest_triton.num_sms(q.device), run_pages=r), score_programs_per_sm=per_sm,
                    run_pages=run_pages)
                knobs[(per_sm, run_pages, quest_triton.DECODE_PROGRAMS_PER_SM)] = us
        per_sm, run_pages, _ = min(knobs, key=knobs.get)
        keep = quest_triton.DECODE_PROGRAMS_PER_SM
        for dec in (2, 4, 5, 6):
            quest_triton.DECODE_PROGRAMS_PER_SM = dec
            knobs[(per_sm, run_pages, dec)] = row("chain_stream", lambda: stream(
                programs=per_sm * quest_triton.num_sms(q.device), run_pages=run_pages),
                score_programs_per_sm=per_sm, run_pages=run_pages, decode_programs_per_sm=dec)
        quest_triton.DECODE_PROGRAMS_PER_SM = keep
        if best is not None:
            names = ("STREAM_PROGRAMS_PER_SM", "SCORE_RUN", "DECODE_PROGRAMS_PER_SM")
            best.update(zip(names, min(knobs, key=knobs.get)))
            us = min(knobs.values())
            rows.append(dict(name="best", hq=hq, us=us, vs_dense=dense_ms * 1e3 / us, **best))
            log(f"best: {rows[-1]}")
    return rows


def targets(diag: Path, out: Path, page: int) -> None:
    """sparse_bench's target rows with the knobs a --diagnose run found best (streaming off if its checks failed)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import sparse_bench

    from litesys.attention.sparse.quest import QuestSelector

    rows = json.loads(diag.read_text()) if diag.exists() else []
    checks = [r for r in rows if r["name"] == "check"]
    ok = bool(checks) and all(r["sel_equal_own_topk"] and r["counters_zero"] and r["rel_err_vs_waiting"] < 1e-2
                              for r in checks)
    best = next((r for r in rows if r["name"] == "best"), None)
    if ok and best:
        for name in ("STREAM_PROGRAMS_PER_SM", "SCORE_RUN", "DECODE_PROGRAMS_PER_SM"):
            setattr(quest_triton, name, best[name])
    else:
        QuestSelector._counters = lambda self, q: None  # no streaming: the waiting chain
    knobs = dict(streaming=ok, **{n: getattr(quest_triton, n) for n in
                                  ("STREAM_PROGRAMS_PER_SM", "SCORE_RUN", "DECODE_PROGRAMS_PER_SM")})
    log(f"targets with {knobs}")
    res = [dict(method="knobs", **knobs)]
    for shape in ("0.6b", "8b"):
        res += sparse_bench.bench_attention(shape, 32768, 8, page)
        out.write_text(json.dumps(res, indent=1))
    sparse_bench.print_table([r for r in res if "ms" in r])
    res += sparse_bench.bench_e2e(32768, 8, page, 520)
    out.write_text(json.dumps(res, indent=1))
    sparse_bench.print_table([r for r in res if "decode_tok_s" in r])


if __name__ == "__main__":
    main()
