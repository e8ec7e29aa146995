"""The cost of preempting one ~16K-token sequence and bringing it back: swap (its KV pages -> pinned host memory ->
back, engine/swap.py) vs recompute (a prefill of prompt + generated tokens, plus, when the method needs it, the
replay of the generated positions through decode, engine/replay.py). Random weights of a real architecture, bf16.

    python benchmarks/swap_vs_recompute.py                          # Qwen3-0.6B and Qwen3-8B, 16K prompts
    python benchmarks/swap_vs_recompute.py --configs qwen3_8b --prompt 16376 --new 64
    python benchmarks/swap_vs_recompute.py --device cpu             # tiny shapes on the CPU: checks the logic

Measured inside the engine: two requests of ``--prompt`` tokens with a KV pool one page larger than their prompts,
just past the admission reserve, so decode preempts the newer one once the reserve is used; it comes back once
the older one has finished. Three runs per mode (``deterministic`` False and True): a pool large enough
(the reference: no preemption), the tight pool with swap space (swap-out, swap-in ms, bytes moved; apart, the
host pool's one-time allocation when the engine is built) and the tight pool without (the recomputing prefill's ms;
replayed when ``needs_replay``). The tokens of both requests are compared with the reference's. JSON to ``--out``
(default $OUT) as swap_vs_recompute.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import UsageExit, model_config, random_model_dir, save_json  # noqa: E402

from litesys import LLM, SamplingParams  # noqa: E402
from litesys.engine.config import KV_WATERMARK_DIVISOR  # noqa: E402
from litesys.engine.swap import SwapSpace  # noqa: E402

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=512)  # --device cpu


class Timed:
    """Wall ms (device synchronised) of every call of ``obj.name``, wrapped on the instance; ``keep`` filters."""

    def __init__(self, obj, name: str, sync, keep=lambda *a: True):
        self.ms: list[float] = []
        self.results: list = []
        inner = getattr(obj, name)

        def timed(*args, **kwargs):
            if not keep(*args):
                return inner(*args, **kwargs)
            sync()
            t = time.perf_counter()
            out = inner(*args, **kwargs)
            sync()
            self.ms.append((time.perf_counter() - t) * 1e3)
            self.results.append(out)
            return out
        setattr(obj, name, timed)


def resumed(items) -> bool:  # a prefill step that recomputes a preempted sequence
    return any(it.seq is not None and it.swapped is None for it in items)


def run(model_dir: str, kw: dict, prompts: list[list[int]], params: list[SamplingParams], sync, mode: str) -> dict:
    """One engine: the two requests' tokens, its preemptions, and the timed swap / recompute calls."""
    allocate = SwapSpace._allocate
    pool = Timed(SwapSpace, "_allocate", sync)  # the host pool, allocated once when the engine is built
    try:
        llm = LLM(model_dir, **kw)
    finally:
        SwapSpace._allocate = allocate
    eng = llm.engine
    first = Timed(eng, "_prefill", sync, lambda items: not resumed(items))
    recompute = Timed(eng, "_prefill", sync, resumed)
    swap = dict(out=Timed(eng.swap, "swap_out", sync), back=Timed(eng.swap, "swap_in", sync)
                ) if eng.swap is not None else None
    tokens = [o.token_ids for o in llm.generate(prompts, params)]
    res = dict(mode=mode, kv_pages=llm.kv.num_pages, preemptions=eng.stats["preemptions"], tokens=tokens,
               first_prefill_ms=first.ms, needs_replay=bool(eng.attn.method.needs_replay))
    if swap is not None:
        moved = [s.nbytes for s in swap["out"].results if s is not None]
        res.update(swap_out_ms=swap["out"].ms, swap_in_ms=swap["back"].ms, pool_alloc_ms=pool.ms,
                   pool_bytes=eng.swap.pool.numel(), pool_pinned=eng.swap.pool.is_pinned(), bytes_moved=moved,
                   fallbacks=eng.swap.stats["fallbacks"], page_bytes=eng.swap.page_bytes())
    res["recompute_ms"] = recompute.ms
    llm.close()
    return res


def tight_pool(prompt_pages: int) -> int:
    """The smallest pool that admits both prompts (the second past the admission reserve, scheduler.py; page 0 is the
    null page)."""
    n = 2 * prompt_pages + 2
    while n - 1 - 2 * prompt_pages < max(1, n // KV_WATERMARK_DIVISOR):
        n += 1
    return n


def tokens_to_preempt(prompt: int, page_size: int) -> int:
    """Decode tokens until the tight pool runs short: both sequences take a page at each boundary."""
    spare = tight_pool(-(-prompt // page_size)) - 1 - 2 * -(-prompt // page_size)
    return (page_size - prompt % page_size) + page_size * (spare // 2) + 1


def measure(config: str, a: argparse.Namespace, cuda: bool) -> dict:
    src = model_config(config)
    tmp = random_model_dir({**src, **({} if cuda else TINY)})
    ps, vocab = a.page_size, (src if cuda else TINY)["vocab_size"]
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(vocab, (a.prompt,), generator=g).tolist() for _ in range(2)]
    params = [SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=a.new, ignore_eos=True, repeat_check=False,
                             seed=7 + i) for i in range(2)]
    prompt_pages, full_pages = -(-a.prompt // ps), -(-(a.prompt + a.new) // ps)
    tight_pages = tight_pool(prompt_pages)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    base = dict(device=a.device, dtype=torch.bfloat16 if cuda else torch.float32, load_format="random",
                max_seq_len=a.prompt + a.new + ps, max_num_seqs=2, max_num_batched_tokens=2 * (a.prompt + a.new + ps),
                page_size=ps, cuda_graphs=cuda)
    res = dict(config=config, prompt=a.prompt, new=a.new, page_size=ps, modes={})
    for det in (True, False):
        kw = dict(base, deterministic=det)
        ref = run(str(tmp), dict(kw, num_kv_pages=2 * full_pages + 2, swap_space_gb=0), prompts, params, sync, "ref")
        tight = dict(kw, num_kv_pages=tight_pages)
        swp = run(str(tmp), dict(tight, swap_space_gb=a.swap_gb), prompts, params, sync, "swap")
        rec = run(str(tmp), dict(tight, swap_space_gb=0), prompts, params, sync, "recompute")
        for r in (swp, rec):
            r["tokens_equal_unpreempted"] = r["tokens"] == ref["tokens"]
        name = "deterministic" if det else "default"
        res["modes"][name] = dict(
            unpreempted_preemptions=ref["preemptions"], prefill_ms=ref["first_prefill_ms"],
            swap={k: v for k, v in swp.items() if k != "tokens"},
            recompute={k: v for k, v in rec.items() if k != "tokens"})
        s, r = swp, rec
        print(f"{config} {name}: swap-out {s.get('swap_out_ms')} ms (host pool allocated at build "
              f"{s.get('pool_alloc_ms')} ms), "
              f"swap-in {s.get('swap_in_ms')} ms, {sum(s.get('bytes_moved', [])) / 2**20:.0f} MiB, tokens equal "
              f"{s['tokens_equal_unpreempted']}; recompute {r['recompute_ms']} ms (replay {r['needs_replay']}), "
              f"tokens equal {r['tokens_equal_unpreempted']}; preemptions swap {s['preemptions']} recompute "
              f"{r['preemptions']}", flush=True)
        if cuda:
            torch.cuda.empty_cache()
    shutil.rmtree(tmp, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="qwen3_0.6b,qwen3_8b", help="comma-separated names in benchmarks/configs")
    ap.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 16376 on cuda, 60 on cpu)")
    ap.add_argument("--new", type=int, default=None,
                    help="new tokens per request (default: 64 past the preemption point)")
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--swap-gb", type=float, default=4.0,
                    help="swap space of the swap run (GiB of host memory; the engine's default)")
    ap.add_argument("--device", default="cuda", help="cuda; cpu runs the logic at tiny sizes (tests)")
    ap.add_argument("--out", default=os.environ.get("OUT"), help="folder for swap_vs_recompute.json (default $OUT)")
    a = ap.parse_args(argv)
    for flag, value, ok in (("--swap-gb", a.swap_gb, a.swap_gb > 0), ("--page-size", a.page_size, a.page_size >= 1),
                            ("--prompt", a.prompt, a.prompt is None or a.prompt >= 1),
                            ("--new", a.new, a.new is None or a.new >= 1)):
        if not ok:  # before any engine is built or anything written
            raise UsageExit(f"swap_vs_recompute.py: {flag} must be > 0, got {value}")
    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise UsageExit("swap_vs_recompute.py: no CUDA GPU; pass --device cpu for the tiny CPU check")
    a.prompt = a.prompt or (16376 if cuda else 60)
    need = tokens_to_preempt(a.prompt, a.page_size)
    a.new = a.new or need + (64 if cuda else 8)
    if a.new <= need:
        raise UsageExit(f"swap_vs_recompute.py: --new must exceed {need} at --prompt {a.prompt}: the tight pool "
                        "preempts only after that many decode tokens")
    out = dict(device=torch.cuda.get_device_name() if cuda else "cpu", torch=torch.__version__, runs=[])
    for config in a.configs.split(","):
        out["runs"].append(measure(config, a, cuda))
        if a.out:
            save_json(a.out, "swap_vs_recompute.json", out)
    return out


if __name__ == "__main__":
    main()
