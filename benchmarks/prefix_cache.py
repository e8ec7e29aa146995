"""Prefix cache on a GSM8K 8-shot-like workload: one shared few-shot prefix + a short question per request.

    python benchmarks/prefix_cache.py                          # Qwen3-0.6B shapes, 1,319 requests, JSON to $OUT
    python benchmarks/prefix_cache.py --config qwen3_8b -n 512

Random weights of the real architecture (bf16, CUDA graphs), greedy, ``ignore_eos``. For the cache on and off it
times a prefill-only pass (1 new token: the prefill time) and the full run (``--gen-len`` new tokens, end to end),
reports the hit rate, and counts the samples whose tokens equal the uncached run's (outside deterministic mode
the cached K/V were written by another batch's GEMMs, so rare bf16 flips are possible: docs/prefix_cache.md).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import model_config, random_model_dir  # noqa: E402

from litesys import LLM, SamplingParams  # noqa: E402


def workload(n: int, prefix_len: int, question_len: tuple[int, int], vocab: int, seed: int = 0) -> list[list[int]]:
    """``n`` prompts: the same ``prefix_len`` tokens, then a question of a length drawn from ``question_len``."""
    rng = random.Random(seed)
    prefix = [rng.randrange(1000, vocab - 1000) for _ in range(prefix_len)]
    return [prefix + [rng.randrange(1000, vocab - 1000) for _ in range(rng.randint(*question_len))]
            for _ in range(n)]


def run(path: Path, prompts: list[list[int]], gen_len: int, cache: bool, max_len: int, device: str = "cuda") -> dict:
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    llm = LLM(str(path), device=device, dtype=torch.bfloat16 if cuda else torch.float32,
              max_seq_len=max_len, load_format="random", enable_prefix_cache=cache)
    out: dict = {"enable_prefix_cache": cache}
    try:
        for name, g in (("warmup", 1), ("prefill", 1), ("full", gen_len)):
            clear = getattr(llm.engine.allocator, "clear", None)
            if clear is not None:  # every timed pass starts cold, as a fresh eval would
                clear()
            stats = []
            sp = SamplingParams(temperature=0.0, max_new_tokens=g, ignore_eos=True, repeat_check=False)
            sync()
            t = time.perf_counter()
            res = llm.generate(prompts if name != "warmup" else prompts[:8], sp, on_progress=stats.append)
            sync()
            out[f"{name}_s"] = time.perf_counter() - t
            if stats:
                last = stats[-1]
                out[f"{name}_hit_rate"] = getattr(last, "prefix_hit_rate", None)
            if name == "full":
                out["tokens"] = [r.token_ids for r in res]
    finally:
        llm.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="qwen3_0.6b")
    ap.add_argument("-n", "--num-requests", type=int, default=1319)
    ap.add_argument("--prefix-len", type=int, default=800)
    ap.add_argument("--question-len", default="60-140")
    ap.add_argument("-g", "--gen-len", type=int, default=256)
    ap.add_argument("--device", default="cuda", help="cuda; cpu only checks the script at tiny sizes")
    a = ap.parse_args()
    lo, hi = map(int, a.question_len.split("-"))
    cfg = model_config(a.config)
    tmp, vocab = random_model_dir(cfg), cfg["vocab_size"]
    prompts = workload(a.num_requests, a.prefix_len, (lo, hi), vocab)
    max_len = a.prefix_len + hi + a.gen_len + 8
    off = run(tmp, prompts, a.gen_len, False, max_len, a.device)
    on = run(tmp, prompts, a.gen_len, True, max_len, a.device)
    same = sum(x == y for x, y in zip(off.pop("tokens"), on.pop("tokens")))
    res = {"config": a.config, "n": a.num_requests, "prefix_len": a.prefix_len, "question_len": a.question_len,
           "gen_len": a.gen_len, "off": off, "on": on,
           "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
           "prefill_speedup": off["prefill_s"] / on["prefill_s"], "end_to_end_speedup": off["full_s"] / on["full_s"],
           "identical_samples": same, "samples": a.num_requests}
    print(json.dumps(res, indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "prefix_cache.json").write_text(json.dumps(res, indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
