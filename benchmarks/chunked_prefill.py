"""A long prompt admitted while many sequences decode: chunked prefill (mixed steps) vs one whole prefill.

    python benchmarks/chunked_prefill.py                      # Qwen3-0.6B shapes, 128 decoding + one 30,000-token
    python benchmarks/chunked_prefill.py --seqs 64 --prompt 16000 --chunk 1024
    python benchmarks/chunked_prefill.py --smoke              # tiny shapes on the CPU: checks the logic (tests)

Random weights of the real architecture (bf16, CUDA graphs), greedy, ``ignore_eos``. ``--seqs`` requests of
``--short`` tokens fill every slot (``max_num_seqs = --seqs``); the first stops after ``--warm`` tokens, which frees
the slot the ``--prompt``-token request waits for, so it is admitted while the others decode. Two engines: chunked
(``max_num_batched_tokens = --chunk``: the long prompt goes in chunks, each step the running rows decode first) and
whole (the budget holds the whole prompt: one prefill step, no decode meanwhile). Each runs the workload twice and
times the second (kernels compiled, graphs captured, prefix cache cleared). Step times come from CUDA events
recorded after every decode and around every prefill step (no extra synchronisation). Reported per mode: decode
tok/s of the running sequences during the long prompt's prefill (first chunk start -> last chunk end) and before
it, the longest gap between two decode steps, the long prompt's prefill time, and the peak
``torch.cuda.max_memory_allocated`` of the timed pass against the plan (weights + profiled activations + KV pool);
also how many sequences have the same tokens in both modes. JSON to ``--out`` (default $OUT) as chunked_prefill.json.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SMOKE, UsageExit, bench_args, model_config, random_model_dir, save_json  # noqa: E402

from litesys import LLM, SamplingParams  # noqa: E402
from litesys.engine import memory  # noqa: E402

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=16, vocab_size=512)  # --smoke
SMOKE_SIZES = dict(seqs=6, prompt=200, chunk=32, short=8, warm=4, new=40)


class Timeline:
    """Marks (kind, info, when): CUDA events on the GPU (read after the pass), host clock on the CPU."""

    def __init__(self, cuda: bool):
        self.cuda, self.marks = cuda, []

    def mark(self, kind: str, info) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append((kind, info, e))
        else:
            self.marks.append((kind, info, time.perf_counter()))

    def ms(self) -> list[tuple[str, object, float]]:
        """Each mark's time in ms since the first."""
        if self.cuda:
            torch.cuda.synchronize()
        t0 = self.marks[0][2]
        at = (lambda e: t0.elapsed_time(e)) if self.cuda else (lambda t: (t - t0) * 1e3)
        return [(k, i, at(t)) for k, i, t in self.marks]


def instrument(llm: LLM, long_len: int, timeline: Timeline) -> None:
    """Marks after each decode step (tokens it generated) and around each prefill step (is it the long prompt's)."""
    eng = llm.engine
    decode, prefill = eng._decode, eng._prefill

    def timed_decode():
        before = eng.stats["generated"]
        decode()
        timeline.mark("decode", eng.stats["generated"] - before)

    def timed_prefill(items):
        is_long = any(len(it.tokens) >= long_len for it in items)
        timeline.mark("prefill_start", is_long)
        prefill(items)
        timeline.mark("prefill_end", is_long)
    eng._decode, eng._prefill = timed_decode, timed_prefill


def summarize(marks: list[tuple[str, object, float]]) -> dict:
    """The long prompt's window (its first prefill step's start -> its last one's end) and the decode steps."""
    long_starts = [t for k, info, t in marks if k == "prefill_start" and info]
    long_ends = [t for k, info, t in marks if k == "prefill_end" and info]
    w0, w1 = long_starts[0], long_ends[-1]
    decodes = [(t, n) for k, n, t in marks if k == "decode"]
    last_short = max(t for k, info, t in marks if k == "prefill_end" and not info and t < w0)
    before = [(t, n) for t, n in decodes if last_short < t <= w0]
    during = sum(n for t, n in decodes if w0 < t <= w1)
    after_fill = [t for t, _ in decodes if t > last_short]  # every slot decoding from here on
    gaps = [b - a for a, b in zip(after_fill, after_fill[1:])]
    prefill_ms = sum(e - s for s, e in zip(long_starts, long_ends))
    return dict(long_prefill_steps=len(long_starts), long_prefill_ms=prefill_ms, window_ms=w1 - w0,
                decode_tokens_during=during, decode_tok_s_during=during / ((w1 - w0) / 1e3),
                decode_tok_s_before=(sum(n for _, n in before[1:]) / ((before[-1][0] - before[0][0]) / 1e3)
                                     if len(before) > 2 else None),
                longest_decode_gap_ms=max(gaps), decode_steps=len(decodes))


def run_mode(path: Path, a: argparse.Namespace, cuda: bool, budget: int, prompts, params) -> dict:
    seen = []
    measure = memory.measure

    def keep(profile):  # the plan's measurement (GPU only): activations above the weights
        seen.append(measure(profile))
        return seen[-1]
    memory.measure = keep
    try:
        llm = LLM(str(path), device=a.device, dtype=torch.bfloat16 if cuda else torch.float32, load_format="random",
                  max_seq_len=a.max_len, max_num_seqs=a.seqs, max_num_batched_tokens=budget, cuda_graphs=cuda)
    finally:
        memory.measure = measure
    res: dict = dict(max_num_batched_tokens=budget, kv_pages=llm.kv.num_pages)
    try:
        for _ in ("warm-up", "timed"):
            llm.engine.allocator.clear()  # the prefix cache: every pass starts cold
            timeline = Timeline(cuda)
            instrument(llm, a.prompt, timeline)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            outs = llm.generate(prompts, params)
            llm.engine.__dict__.pop("_decode"), llm.engine.__dict__.pop("_prefill")  # the class's again
        res.update(summarize(timeline.ms()), tokens=[o.token_ids for o in outs])
        if cuda:
            gpu = seen[0]
            kv_bytes = llm.kv.k.nbytes + llm.kv.v.nbytes + sum(t.nbytes for t in llm.engine.attn.method.paged_state())
            res.update(peak_allocated=torch.cuda.max_memory_allocated(), weights_and_others_held=gpu.held,
                       profiled_activations=gpu.activations, kv_pool_bytes=kv_bytes,
                       plan_budget=gpu.held + gpu.activations + kv_bytes)
            res["peak_within_plan"] = res["peak_allocated"] <= res["plan_budget"]
    finally:
        llm.close()
    return res


def main(argv: list[str] | None = None) -> dict:
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--config", default="qwen3_0.6b", help="a name in benchmarks/configs (or a config.json path)")
    extra.add_argument("--seqs", type=int, default=None, help="decoding sequences (default 128)")
    extra.add_argument("--prompt", type=int, default=None, help="tokens of the long prompt (default 30000)")
    extra.add_argument("--chunk", type=int, default=None, help="max_num_batched_tokens of the chunked run (2048)")
    extra.add_argument("--short", type=int, default=None, help="prompt tokens of the decoding sequences (256)")
    extra.add_argument("--warm", type=int, default=None, help="tokens before the long prompt is admitted (32)")
    extra.add_argument("--new", type=int, default=None, help="new tokens per decoding sequence (256)")
    extra.add_argument("--device", default="cuda", help="cuda; --smoke runs the logic on the CPU")
    a = bench_args(__doc__, "chunked_prefill.json", argv, parents=[extra])
    smoke = a.smoke or SMOKE
    if smoke:
        a.device = "cpu"
    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise UsageExit("chunked_prefill.py: no CUDA GPU; pass --smoke for the tiny CPU check")
    defaults = SMOKE_SIZES if smoke else dict(seqs=128, prompt=30000, chunk=2048, short=256, warm=32, new=256)
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    for k in defaults:
        if getattr(a, k) < 1:
            raise UsageExit(f"chunked_prefill.py: --{k} must be >= 1, got {getattr(a, k)}")
    if a.seqs < 2:
        raise UsageExit("chunked_prefill.py: --seqs must be >= 2 (one finishes to let the long prompt in)")
    if a.prompt <= a.chunk:
        raise UsageExit(f"chunked_prefill.py: --prompt ({a.prompt}) must exceed --chunk ({a.chunk}), or nothing is "
                        "chunked")
    if a.new <= a.warm + 2 * -(-a.prompt // a.chunk):
        raise UsageExit(f"chunked_prefill.py: --new must exceed --warm + 2 x the chunks ({a.warm} + "
                        f"{2 * -(-a.prompt // a.chunk)}): the sequences must still decode after the long prefill")
    a.max_len = a.prompt + a.new + 64
    cfg = {**model_config(a.config), **(TINY if smoke else {})}
    cfg["max_position_embeddings"] = max(cfg.get("max_position_embeddings", 0), a.max_len)
    tmp = random_model_dir(cfg)
    g = torch.Generator().manual_seed(0)
    vocab = cfg["vocab_size"]
    prompts = [torch.randint(vocab, (a.short,), generator=g).tolist() for _ in range(a.seqs)]
    prompts.append(torch.randint(vocab, (a.prompt,), generator=g).tolist())
    greedy = dict(temperature=0.0, ignore_eos=True, repeat_check=False)
    params = [SamplingParams(max_new_tokens=a.warm, **greedy)] + \
        [SamplingParams(max_new_tokens=a.new, **greedy)] * (a.seqs - 1) + [SamplingParams(max_new_tokens=8, **greedy)]
    out = dict(device=torch.cuda.get_device_name() if cuda else "cpu", torch=torch.__version__, config=a.config,
               seqs=a.seqs, prompt=a.prompt, chunk=a.chunk, short=a.short, warm=a.warm, new=a.new, modes={})
    try:
        for mode, budget in (("chunked", a.chunk), ("whole", a.prompt + a.short)):
            out["modes"][mode] = run_mode(tmp, a, cuda, budget, prompts, params)
            m = out["modes"][mode]
            print(f"{mode}: decode {m['decode_tok_s_during']:.0f} tok/s during the long prefill "
                  f"({m['decode_tok_s_before'] or 0:.0f} before), longest gap {m['longest_decode_gap_ms']:.1f} ms, "
                  f"prefill {m['long_prefill_ms']:.0f} ms in {m['long_prefill_steps']} steps, peak "
                  f"{m.get('peak_allocated', 0) / 2**30:.2f} GiB of a {m.get('plan_budget', 0) / 2**30:.2f} GiB plan",
                  flush=True)
        toks = [out["modes"][m].pop("tokens") for m in ("chunked", "whole")]
        out["same_tokens"] = sum(x == y for x, y in zip(*toks))
        out["sequences"] = len(toks[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.out:
        save_json(a.out, "chunked_prefill.json", out)
    return out


if __name__ == "__main__":
    main()
