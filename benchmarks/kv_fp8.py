"""FP8 KV cache on a GPU: how many long sequences fit, and what fp8 pages cost in accuracy (random weights).

    python benchmarks/kv_fp8.py capacity --config qwen3_8b --seq-len 32768
    python benchmarks/kv_fp8.py accuracy --config qwen3_8b --prompts 8 --tokens 4096
    python benchmarks/kv_fp8.py kernel [--sweep] [--probe] [--page-size 32]   # decode attention alone

``capacity``: the KV pool the memory planner gives at ``--gpu-memory-utilization`` (default 0.9) for bf16 and for
fp8 pages, and how many sequences of ``--seq-len`` tokens it holds. ``accuracy``: teacher-forced next-token
distributions with fp8 vs bf16 pages on the same random prompts: one prefill per prompt, which (as the engine's
prefill does) attends to the K/V as the cache stores them; the fp8 scales are calibrated on the first prompt and
then fixed. Reports KL(bf16 || fp8), top-1 agreement and the logit error. Random weights (N(0, 0.02), unit norms),
so the numbers describe the quantisation of such activations, not of a trained model. ``kernel``: decode attention
alone (imports only litesys.kernels): the fused kernel and the softmax·V stage at batch 32 x 4K / 8K with Qwen3-8B
heads and 64 x 2K / 4K with Qwen3-0.6B heads, bf16 vs fp8 pages (V transposed, as the pool stores them, converted in
registers (the default) and on e4m3 tensor cores; token-major V), bytes read over the copy bandwidth; ``--sweep``: the
fp8 kernels' tiles x L2 prefetch distance x splits; ``--probe``: a kernel that only reads the same pages (the access
pattern's floor).
JSON to $OUT if set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import copy_bandwidth, graph_ms, log, model_config, random_model_dir  # noqa: E402

from litesys.kernels.blocks import split_bounds  # noqa: E402


def capacity(a: argparse.Namespace) -> dict:
    from litesys import LLM

    res = dict(config=a.config, seq_len=a.seq_len, gpu_memory_utilization=a.gpu_memory_utilization)
    for kv in ("auto", "fp8_e4m3"):
        llm = LLM(str(random_model_dir(model_config(a.config))), device="cuda", dtype=torch.bfloat16,
                  max_seq_len=a.seq_len, load_format="random", cuda_graphs=False, kv_cache_dtype=kv,
                  gpu_memory_utilization=a.gpu_memory_utilization)
        pages, per_seq = llm.kv.num_pages, -(-a.seq_len // llm.kv.page_size)
        name = "bf16" if kv == "auto" else "fp8"
        res[f"{name}_pages"] = pages
        res[f"{name}_kv_GiB"] = (llm.kv.k.nbytes + llm.kv.v.nbytes) / 2**30
        res[f"{name}_sequences"] = (pages - 1) // per_seq  # page 0 is the scratch page
        log(f"{name}: {pages} pages of {llm.kv.page_size} ({res[f'{name}_kv_GiB']:.1f} GiB): "
            f"{res[f'{name}_sequences']} sequences of {a.seq_len} tokens")
        getattr(llm, "close", lambda: None)()  # free the pool before the next plan
        del llm
        torch.cuda.empty_cache()
    res["ratio"] = res["fp8_sequences"] / max(res["bf16_sequences"], 1)
    return res


@torch.inference_mode()
def prompt_logits(model, attn, ids: torch.Tensor, chunk: int = 512):
    """Hidden states of one prompt's prefill, and a generator of fp32 logits over row chunks (saves memory)."""
    from litesys.attention.meta import AttnMeta

    n = ids.shape[0]
    meta = AttnMeta(True, torch.arange(attn.kv.page_size, attn.kv.page_size + n, device=ids.device),
                    attn.kv.page_size, model.num_q_heads, model.num_kv_heads,
                    cu_seqlens=torch.tensor([0, n], dtype=torch.int32, device=ids.device), max_seqlen=n)
    hidden = model.forward(ids, torch.arange(n, device=ids.device), meta, attn)
    return [model.compute_logits(hidden[i:i + chunk]).float() for i in range(0, n, chunk)]


@torch.inference_mode()
def accuracy(a: argparse.Namespace) -> dict:
    from litesys import LLM
    from litesys.attention.backend import Attention
    from litesys.attention.kv_cache import KVCache
    from litesys.attention.kv_fp8 import FP8_DTYPE
    from litesys.kernels.ref import ops_torch

    llm = LLM(str(random_model_dir(model_config(a.config))), device="cuda", dtype=torch.bfloat16,
              max_seq_len=a.tokens + 16, load_format="random", cuda_graphs=False, num_kv_pages=4)
    model, cfg = llm.model, llm.cfg
    pages = a.tokens // 16 + 2

    def attention(kv_dtype):
        kv = KVCache(cfg.num_layers, pages, 16, model.num_kv_heads, cfg.head_dim, torch.bfloat16, "cuda", kv_dtype)
        return Attention(kv, model.num_q_heads, model.num_kv_heads, cfg.head_dim, cfg.head_dim ** -0.5,
                         ops=llm.attn.ops)

    ref, fp8 = attention(None), attention(FP8_DTYPE)
    # the same bf16 pages through torch SDPA instead of the Triton prefill kernel: other summation order only.
    # Its distance from ``ref`` shows how much this random network amplifies rounding-level noise.
    base = attention(None)
    base.ops = ops_torch
    g = torch.Generator().manual_seed(0)
    stats = {name: dict(kl=[], agree=0, rel=[]) for name in ("fp8", "sdpa_bf16")}
    n_pos = 0
    for i in range(a.prompts):
        ids = torch.randint(100, 100000, (a.tokens,), generator=g).cuda()
        chunks = zip(prompt_logits(model, ref, ids), prompt_logits(model, fp8, ids), prompt_logits(model, base, ids))
        for lr, lq, lb in chunks:
            lpr = lr.log_softmax(-1)
            for name, other in (("fp8", lq), ("sdpa_bf16", lb)):
                st = stats[name]
                st["kl"].append((lpr.exp() * (lpr - other.log_softmax(-1))).sum(-1))
                st["agree"] += (lr.argmax(-1) == other.argmax(-1)).sum().item()
                st["rel"].append((other - lr).norm(dim=-1) / lr.norm(dim=-1))
            n_pos += lr.shape[0]
        log(f"prompt {i}: " + ", ".join(f"{k} KL {torch.cat(v['kl']).mean():.3g} top-1 {v['agree'] / n_pos:.4f}"
                                        for k, v in stats.items()))
    res = dict(config=a.config, prompts=a.prompts, tokens=a.tokens, weights="random N(0, 0.02), unit norms",
               k_scale_mean=fp8.kv.k_scale.mean().item(), v_scale_mean=fp8.kv.v_scale.mean().item())
    for name, st in stats.items():
        kls, pre = torch.cat(st["kl"]), "" if name == "fp8" else name + "_"
        res.update({f"{pre}kl_mean": kls.mean().item(), f"{pre}kl_p99": kls.quantile(0.99).item(),
                    f"{pre}kl_max": kls.max().item(), f"{pre}top1_agreement": st["agree"] / n_pos,
                    f"{pre}logit_rel_err_mean": torch.cat(st["rel"]).mean().item()})
    return res


# batch, context, Hq, Hkv: Qwen3-8B heads at 32 x 4K / 8K, Qwen3-0.6B heads at 64 x 2K / 4K
KERNEL_SHAPES = {"qwen3_8b_4k": (32, 4096, 32, 8), "qwen3_8b": (32, 8192, 32, 8), "qwen3_0.6b_2k": (64, 2048, 16, 8),
                 "qwen3_0.6b": (64, 4096, 16, 8)}
# --sweep: fp8 fused-kernel variants (tensor cores, (block_n, num_warps, num_stages), L2 prefetch distance) x splits
SWEEP_VARIANTS = tuple((False, (128, 4, 3), pf) for pf in (0, 1, 2, 4)) + tuple(
    (True, tile, pf) for tile in ((128, 4, 3), (128, 4, 2), (64, 4, 2), (64, 4, 3)) for pf in (0, 2))
SWEEP_SPLITS = (1, 2, 3, 4, 5, 6, 8, 12)


@triton.jit
def _read_probe_kernel(k_ptr, v_ptr, pt_ptr, len_ptr, out_ptr, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs,
                       stride_vh, stride_vd, stride_ptb, num_splits, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
                       D: tl.constexpr, VEC: tl.constexpr, V_T: tl.constexpr):
    """The fused kernel's reads alone: the same split, page-table gather and K / V tiles (V^T for transposed fp8
    pages), each used by one dot with a constant so nothing is dropped; no softmax. Its time is the floor the
    access pattern leaves the real kernel."""
    b, kvh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    length = tl.load(len_ptr + b)
    start, end, _ = split_bounds(length, split, num_splits, BLOCK_N, 0)
    offs_n, offs_d = tl.arange(0, BLOCK_N), tl.arange(0, D)
    dt = k_ptr.dtype.element_ty
    qc, pc = tl.full([D, 16], 0.0078125, tl.float32).to(dt), tl.full([BLOCK_N, 16], 0.0078125, tl.float32).to(dt)
    acc, acc_s = tl.zeros([D, 16], tl.float32), tl.zeros([BLOCK_N, 16], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + offs_n
        page = tl.load(pt_ptr + b * stride_ptb + pos // PAGE, mask=pos < end, other=0).to(tl.int64)
        row = page * stride_kp + (pos % PAGE) * stride_ks + kvh * stride_kh
        acc_s += tl.dot(tl.load(k_ptr + row[:, None] + offs_d[None, :]), qc)
        row = page * stride_vp + (pos % PAGE) * stride_vs + kvh * stride_vh
        if V_T:
            offs = tl.max_contiguous(tl.multiple_of(row[None, :] + offs_d[:, None] * stride_vd, [1, VEC]), [1, VEC])
            acc += tl.dot(tl.load(v_ptr + offs), pc)
        else:
            acc += tl.dot(tl.trans(tl.load(v_ptr + row[:, None] + offs_d[None, :] * stride_vd)), pc)
    tl.store(out_ptr + (b * tl.num_programs(1) + kvh) * num_splits + split, tl.sum(tl.sum(acc, 1), 0)
             + tl.sum(tl.sum(acc_s, 1), 0))


def read_probe(kc, vc, pt, lengths, splits: int, cfg):
    """A launch of ``_read_probe_kernel`` over these pages (``cfg``: block_n, num_warps, num_stages)."""
    from litesys.kernels.common import v_layout

    out = torch.empty(lengths.shape[0] * kc.shape[2] * splits, device=kc.device)
    v_strides, v_t, vec = v_layout(vc, cfg.block_n)
    return lambda: _read_probe_kernel[(lengths.shape[0], kc.shape[2], splits)](
        kc, vc, pt, lengths, out, *kc.stride()[:3], *v_strides, pt.stride(0), splits, PAGE=kc.shape[1],
        BLOCK_N=cfg.block_n, D=kc.shape[3], VEC=vec, V_T=v_t, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def fused_at_splits(q, kc, vc, pt, lengths, scale, cfg, splits: int, ks, vs, fp8_mma: bool, prefetch: int = 0):
    """The fused decode at a given split count (the split rule bypassed), and a launch that returns the compiled
    kernel (registers, spills, shared memory)."""
    from litesys.kernels.common import LOG2E, group_pad
    from litesys.kernels.decode_merge import decode_merge
    from litesys.kernels.decode_split import decode_split, fp8_mma_group_pad

    b, hq, d = q.shape
    out = torch.empty_like(q)
    partial = torch.empty(b, hq, splits, d, dtype=torch.float32, device=q.device) if splits > 1 else None
    lse = torch.empty(b, hq, splits, dtype=torch.float32, device=q.device) if splits > 1 else None
    qq = q if fp8_mma else q.half()

    def run():
        kernel = decode_split(qq, kc, vc, pt, lengths, partial, lse, out, scale * LOG2E, cfg.block_n,
                              (fp8_mma_group_pad if fp8_mma else group_pad)(hq // kc.shape[2]), "tf32", cfg.num_warps,
                              cfg.num_stages, ks, vs, 0, fp8_mma, prefetch)
        if partial is not None:
            decode_merge(partial, lse, lengths, out, cfg.block_n, cfg.merge_num_warps)
        return kernel
    return run, out


def kernel_shape(batch: int, ctx: int, hq: int, hkv: int, bw: float, d: int = 128, page: int = 16,
                 device: str = "cuda", sweep: bool = False, probe: bool = False) -> dict:
    """Decode attention alone at one shape, bf16 vs fp8 pages (a ragged first row): the fused kernel with the
    default launch configuration (fp8: tiles converted in registers) and the e4m3 tensor-core path
    (``DecodeConfig.fp8_mma``), the processors' softmax·V stage; with ``sweep`` the tensor-core path's tiles x
    splits, with ``probe`` the read-only kernel (``_read_probe_kernel``) over the same pages. Imports only
    litesys.kernels. Bytes: K+V rows read once (softmax·V: V and the fp32 logits)."""
    from litesys.kernels import decode
    from litesys.kernels.common import to_transposed_pages
    from litesys.kernels.launch import DECODE

    n_pages = batch * ctx // page + 1
    g = torch.Generator(device=device).manual_seed(0)
    k = torch.randn(n_pages * page, hkv, d, device=device, generator=g, dtype=torch.bfloat16)
    v = torch.randn(n_pages * page, hkv, d, device=device, generator=g, dtype=torch.bfloat16)
    # kv_fp8.calibrate / quantize (first 4096 rows, margin 2), inlined to stay inside litesys.kernels
    ks, vs = (2 * x[:4096].float().abs().amax(dim=(0, 2)) / 448 for x in (k, v))
    k8, v8 = ((x.float() / s[None, :, None]).clamp(-448, 448).to(torch.float8_e4m3fn) for x, s in ((k, ks), (v, vs)))
    caches = {"bf16": (k, v, None, None), "fp8": (k8, v8, ks, vs), "fp8_token_major_v": (k8, v8, ks, vs)}
    caches = {n: (kc.view(n_pages, page, hkv, d), vc.view(n_pages, page, hkv, d), s_k, s_v)
              for n, (kc, vc, s_k, s_v) in caches.items()}
    del k, v, k8, v8
    # fp8 V pages as the pool stores them (transposed: [P, Hkv, D, page]); the last row: V as bf16 pages are laid out
    caches["fp8"] = (caches["fp8"][0], to_transposed_pages(caches["fp8"][1]), ks, vs)
    pt = (torch.randperm(n_pages - 1, device=device, generator=g)[: batch * ctx // page] + 1).int().view(batch, -1)
    lengths = torch.full((batch,), ctx, dtype=torch.int32, device=device)
    lengths[0] -= 37
    q = torch.randn(batch, hq, d, device=device, generator=g, dtype=torch.bfloat16)
    tokens, scale = int(lengths.sum()), d ** -0.5
    rows, outs = [], {}
    configs = {"bf16": {"default": DECODE},
               "fp8": {"default": DECODE, "tensor_cores": replace(DECODE, fp8_mma=True)},
               "fp8_token_major_v": {"default": DECODE}}
    for name, (kc, vc, s_k, s_v) in caches.items():
        nbytes = 2 * tokens * hkv * d * kc.element_size()
        for label, cfg in configs[name].items():
            fn = partial(decode.fused, q, kc, vc, pt, lengths, scale, cfg, k_scale=s_k, v_scale=s_v)
            ms = graph_ms(fn)
            rows.append(dict(kv=name, path="fused", config=label, us=ms * 1e3, bw_frac=nbytes / (ms / 1e3) / bw))
            outs[(name, label)] = fn()
        if name != "fp8_token_major_v":
            lg = decode.logits(q, kc, pt, lengths, scale, ctx, k_scale=s_k)
            ms = graph_ms(partial(decode.softmax_v, lg, vc, pt, lengths, DECODE, s_v, torch.bfloat16))
            rows.append(dict(kv=name, path="softmax_v", config="default", us=ms * 1e3,
                             bw_frac=(nbytes / 2 + lg.numel() * 4) / (ms / 1e3) / bw))
            del lg
        for r in rows[-len(configs[name]) - (name != "fp8_token_major_v"):]:
            log(f"{name} {r['path']} {r['config']}: {r['us']:.1f} us, {r['bw_frac']:.0%} of copy bw")
    ref = outs[("bf16", "default")].float()

    def err(key: tuple) -> float:
        return ((outs[key].float() - ref).norm() / ref.norm()).item()
    us = {(r["kv"], r["config"]): r["us"] for r in rows if r["path"] == "fused"}
    res = dict(shape=dict(batch=batch, context=ctx, hq=hq, hkv=hkv, head_dim=d, page=page), rows=rows,
               speedup_fp8_default=us[("bf16", "default")] / us[("fp8", "default")],
               fp8_vs_bf16_rel_err=err(("fp8", "default")),
               fp8_tensor_cores_vs_bf16_rel_err=err(("fp8", "tensor_cores")),
               fp8_tensor_cores_vs_default_rel_diff=((outs[("fp8", "tensor_cores")].float()
                                                      - outs[("fp8", "default")].float()).norm() / ref.norm()).item(),
               fp8_layouts_rel_diff=((outs[("fp8", "default")].float()
                                      - outs[("fp8_token_major_v", "default")].float()).norm() / ref.norm()).item())
    if probe:  # bf16 at its tile (64 rows, 2 stages), fp8 (transposed V) at 128 rows and 3 stages
        for name, cfg in (("bf16", replace(DECODE, block_n=64, num_stages=2)),
                          ("fp8", replace(DECODE, block_n=128, num_stages=3))):
            kc, vc = caches[name][:2]
            nbytes = 2 * tokens * hkv * d * kc.element_size()
            for splits in (1, 3, 6):
                ms = graph_ms(read_probe(kc, vc, pt, lengths, splits, cfg))
                rows.append(dict(kv=name, path="read_probe", config=f"splits={splits}", us=ms * 1e3,
                                 bw_frac=nbytes / (ms / 1e3) / bw))
                log(f"{name} read probe, {splits} splits: {ms * 1e3:.1f} us, {rows[-1]['bw_frac']:.0%} of copy bw")
    if sweep:
        kc, vc = caches["fp8"][:2]
        nbytes = 2 * tokens * hkv * d
        res["sweep"] = []
        for mma, (bn, warps, stages), pf in SWEEP_VARIANTS:
            cfg = replace(DECODE, block_n=bn, num_warps=warps, num_stages=stages)
            row = dict(tensor_cores=mma, block_n=bn, warps=warps, stages=stages, prefetch=pf)
            for splits in SWEEP_SPLITS:
                label = f"sweep {'tc' if mma else 'cvt'} bn{bn} w{warps} s{stages} pf{pf} sp{splits}"
                try:
                    fn, out = fused_at_splits(q, kc, vc, pt, lengths, scale, cfg, splits, ks, vs, mma, pf)
                    kernel = fn()
                    ms = graph_ms(fn)
                except Exception as e:  # a configuration the compiler or the GPU refuses: recorded, sweep goes on
                    res["sweep"].append(dict(row, splits=splits, error=str(e)[:200]))
                    log(f"{label}: {str(e)[:120]}")
                    break
                res["sweep"].append(dict(row, splits=splits, us=ms * 1e3, bw_frac=nbytes / (ms / 1e3) / bw,
                                         regs=getattr(kernel, "n_regs", None), spills=getattr(kernel, "n_spills", None),
                                         shared=getattr(getattr(kernel, "metadata", None), "shared", None),
                                         rel_err=((out.float() - ref).norm() / ref.norm()).item()))
                log(f"{label}: {ms * 1e3:.1f} us ({nbytes / (ms / 1e3) / bw:.0%}), "
                    f"{res['sweep'][-1]['regs']} regs, {res['sweep'][-1]['shared']} B shared")
    return res


def kernel(a: argparse.Namespace) -> dict:
    bw = copy_bandwidth()
    res = dict(hbm_copy_TBps=bw / 1e12, page_size=a.page_size)
    for n, dims in KERNEL_SHAPES.items():
        res[n] = kernel_shape(*dims, bw, page=a.page_size, sweep=a.sweep, probe=a.probe)
        torch.cuda.empty_cache()
        if os.environ.get("OUT"):  # as it goes: a run stopped at its time limit keeps the shapes done
            Path(os.environ["OUT"], "kv_fp8_kernel.partial.json").write_text(json.dumps(res, indent=1))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("capacity", "accuracy", "kernel"))
    ap.add_argument("--config", default="qwen3_8b")
    ap.add_argument("--seq-len", type=int, default=32768)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--sweep", action="store_true",
                    help="kernel: also sweep the fp8 fused kernels' tiles x prefetch distance x splits")
    ap.add_argument("--probe", action="store_true", help="kernel: also time a kernel that only reads the pages")
    ap.add_argument("--page-size", type=int, default=16, help="kernel: tokens per page (16, 32, 64)")
    a = ap.parse_args()
    if a.page_size not in (16, 32, 64):
        ap.error(f"--page-size must be 16, 32 or 64, got {a.page_size}")
    if not torch.cuda.is_available():
        sys.exit("kv_fp8.py needs a CUDA GPU")
    res = dict(capacity=capacity, accuracy=accuracy, kernel=kernel)[a.what](a)
    res["device"] = torch.cuda.get_device_name()
    print(json.dumps(res, indent=1))
    if os.environ.get("OUT"):
        name = f"kv_fp8_{a.what}{'' if a.what == 'kernel' else '_' + a.config}.json"
        Path(os.environ["OUT"], name).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
