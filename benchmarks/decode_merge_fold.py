"""The split-KV merge folded into the split launch vs its own merge kernel (``DecodeConfig.fold_merge``): time and
bit-identity of the fused decode at the engine rows' shapes, bf16 pages (16 tokens) and fp8 pages (64 tokens, V
transposed as the pool stores it).

    python benchmarks/decode_merge_fold.py [--out DIR]    # GPU, ~2 min (compiles most of it); --smoke: CPU logic

Per (batch, context, q heads, KV heads) and page kind: DECODE's own split count, deterministic mode's fixed
256-token splits, and 2 / 4 forced splits; each timed from a CUDA graph (``graph_ms``, 20 calls a replay) with the
merge kernel and folded, the two outputs compared bit for bit (also on ragged lengths with empty rows and
over 20 eager calls, which would show a race). Writes DIR/h200_decode_merge_fold.json row by row.
"""
from __future__ import annotations

import dataclasses
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
from common import SMOKE, UsageExit, bench_args, copy_bandwidth, graph_ms, log, save_json  # noqa: E402

from litesys.kernels import decode  # noqa: E402
from litesys.kernels.common import to_transposed_pages  # noqa: E402
from litesys.kernels.launch import DECODE  # noqa: E402
from litesys.kernels.ops_invariant import INVARIANT  # noqa: E402

SHAPES = [(128, 1000, 32, 4), (64, 2100, 16, 8), (64, 4096, 16, 8), (32, 4200, 32, 8), (32, 8192, 32, 8),
          (128, 1500, 32, 8)]  # (batch, context, Hq, Hkv): Qwen3-30B-A3B, 0.6B, 0.6B, 8B, 8B, 8B heads
SMOKE_SHAPES = [(2, 300, 4, 2)]
PAGES = {"bf16": 16, "fp8": 64}


def forced(splits: int):
    """DECODE with exactly ``splits`` splits (the split rules off: programs_per_sm high, max_splits = splits)."""
    off = dict(saturate_per_sm=0, resident_per_sm=0, fp8_resident_per_sm=0, programs_per_sm=1 << 12,
               max_splits=splits)
    return dataclasses.replace(DECODE, **{k: v for k, v in off.items() if hasattr(DECODE, k)})


def caches(b: int, ctx: int, hkv: int, kind: str, device: str, d: int = 128):
    """Shuffled pages for ``b`` rows of ``ctx`` tokens: bf16, or fp8 with per-head scales (kv_fp8.calibrate's rule:
    2 x amax / 448 of the first 4096 rows) and V transposed; the page table; lengths (row 0 ragged)."""
    page = PAGES[kind]
    n_pages = b * (-(-ctx // page)) + 1
    g = torch.Generator(device=device).manual_seed(0)
    k = torch.randn(n_pages * page, hkv, d, device=device, generator=g, dtype=torch.bfloat16)
    v = torch.randn(n_pages * page, hkv, d, device=device, generator=g, dtype=torch.bfloat16)
    ks = vs = None
    if kind == "fp8":
        ks, vs = (2 * x[:4096].float().abs().amax(dim=(0, 2)) / 448 for x in (k, v))
        k, v = ((x.float() / s[None, :, None]).clamp(-448, 448).to(torch.float8_e4m3fn) for x, s in ((k, ks), (v, vs)))
    kc, vc = k.view(n_pages, page, hkv, d), v.view(n_pages, page, hkv, d)
    if kind == "fp8":
        vc = to_transposed_pages(vc)
    pt = (torch.randperm(n_pages - 1, device=device, generator=g) + 1).int().view(b, -1)
    lengths = torch.full((b,), ctx, dtype=torch.int32, device=device)
    lengths[0] -= 37
    return kc, vc, ks, vs, pt, lengths


def measure(kc, vc, ks, vs, pt, lengths, q, cfg, kernels: list) -> dict:
    """Old (merge kernel) vs folded at one config: splits, us, bit-identity (these lengths, ragged ones, repeats)."""
    hkv = kc.shape[2]
    fns = {f: partial(decode.fused, q, kc, vc, pt, lengths, q.shape[2] ** -0.5,
                      dataclasses.replace(cfg, fold_merge=f), k_scale=ks, v_scale=vs) for f in (False, True)}
    kernels.clear()
    outs = {f: fn() for f, fn in fns.items()}
    row = dict(splits=kernels[-1]["splits"], regs={str(k["fold"]): k["regs"] for k in kernels})
    row["us_merge_kernel"], row["us_folded"] = (1e3 * graph_ms(fns[f], 20, 20) for f in (False, True))
    row["speedup"] = row["us_merge_kernel"] / row["us_folded"]
    row["bit_identical"] = torch.equal(outs[False], outs[True])
    row["repeats_identical"] = all(torch.equal(fns[True](), outs[True]) for _ in range(20))
    ragged = torch.randint(0, int(lengths.max()) + 1, lengths.shape, device=q.device, dtype=torch.int32)
    ragged[:2] = torch.tensor([0, 1])
    rag = {f: decode.fused(q, kc, vc, pt, ragged, q.shape[2] ** -0.5, dataclasses.replace(cfg, fold_merge=f),
                           k_scale=ks, v_scale=vs) for f in (False, True)}
    row["ragged_bit_identical"] = torch.equal(rag[False], rag[True]) and not rag[True][0].any()
    row["counters_zero"] = not decode.merge_counter(q.device, lengths.shape[0] * hkv).any()
    return row


def main() -> None:
    a = bench_args(__doc__.split("\n")[0], "h200_decode_merge_fold.json")
    smoke = SMOKE or a.smoke
    if not smoke and not torch.cuda.is_available():
        raise UsageExit("decode_merge_fold.py times GPU kernels: run it on a CUDA device (or --smoke on the CPU)")
    device = "cpu" if smoke else "cuda"
    kernels: list = []
    split = decode.decode_split

    def recorded(*args, **kw):  # the launched split kernel's registers (the folded one holds the merge)
        k = split(*args, **kw)
        partial_, counter = args[5], args[19] if len(args) > 19 else kw.get("counter")
        kernels.append(dict(fold=counter is not None and partial_ is not None,
                            splits=1 if partial_ is None else partial_.shape[2], regs=getattr(k, "n_regs", None)))
        return k
    decode.decode_split = recorded
    res = dict(device=torch.cuda.get_device_name() if not smoke else "cpu (smoke)", rows=[],
               copy_TBps=None if smoke else copy_bandwidth() / 1e12)
    configs = {"DECODE": DECODE, "deterministic": INVARIANT, "2 splits": forced(2), "4 splits": forced(4)}
    for label, cfg in configs.items():
        for b, ctx, hq, hkv in SMOKE_SHAPES if smoke else SHAPES:
            for kind in PAGES:
                kc, vc, ks, vs, pt, lengths = caches(b, ctx, hkv, kind, device)
                q = torch.randn(b, hq, kc.shape[3], device=device, dtype=torch.bfloat16)
                row = dict(config=label, pages=kind, page_size=PAGES[kind], batch=b, context=ctx, q_heads=hq,
                           kv_heads=hkv, **measure(kc, vc, ks, vs, pt, lengths, q, cfg, kernels))
                res["rows"].append(row)
                log(f"{label} {kind} {b} x {ctx} ({hq}/{hkv}): {row['splits']} splits, merge kernel "
                    f"{row['us_merge_kernel']:.1f} us, folded {row['us_folded']:.1f} us (x{row['speedup']:.3f}), "
                    f"identical {row['bit_identical']} / ragged {row['ragged_bit_identical']} / "
                    f"repeats {row['repeats_identical']}, regs {row['regs']}")
                if a.out:  # as it goes: a run stopped at its time limit keeps the rows done
                    save_json(a.out, "h200_decode_merge_fold.json", res)
                del kc, vc, pt
                if not smoke:
                    torch.cuda.empty_cache()
    print(f"all bit-identical: {all(r['bit_identical'] and r['ragged_bit_identical'] for r in res['rows'])}")


if __name__ == "__main__":
    main()
