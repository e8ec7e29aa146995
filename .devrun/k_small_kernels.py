"""Brief K micro-benchmark (H200): the MoE router's post-GEMM ops and the K/V page write, old torch ops vs the new
one-launch kernels, each timed as 20 back-to-back calls inside one CUDA graph (as in a decode graph), plus
bit checks on the device. Writes $OUT/k_small_kernels.json."""
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from common import graph_ms  # noqa: E402

from litesys.kernels import kv_write, moe_route  # noqa: E402
from litesys.kernels.common import transposed_pages  # noqa: E402
from litesys.kernels.ref.moe_route import route_topk as route_twin  # noqa: E402

torch.manual_seed(0)
dev = "cuda"
REPS = 20


def graph_us(fn, replays: int = 20) -> float:
    return 1e3 * graph_ms(fn, replays, REPS)  # REPS back-to-back calls in one graph


def old_route(logits, k, norm, dtype):  # routing.route before brief K (after the GEMM)
    probs = torch.softmax(logits.float(), dim=-1)
    w, ids = torch.topk(probs, k, dim=-1)
    if norm:
        w = w / w.sum(dim=-1, keepdim=True)
    return w.to(dtype), ids


def router_row(T, E, K):
    logits = (torch.randn(T, E, device=dev) * 2).to(torch.bfloat16)
    w, ids = moe_route.route_topk(logits, K, True, torch.bfloat16)
    tw, tids = route_twin(logits, K, True, torch.bfloat16)
    ow, oids = old_route(logits, K, True, torch.bfloat16)
    same_set = int((ids.sort(1).values != oids.sort(1).values).any(1).sum())  # rows: ties at the k-th place
    same_vals = bool(torch.equal(logits.gather(1, ids).sort(1).values, logits.gather(1, oids).sort(1).values))
    row = {"T": T, "E": E, "k": K, "old_us": graph_us(lambda: old_route(logits, K, True, torch.bfloat16)),
           "new_us": graph_us(lambda: moe_route.route_topk(logits, K, True, torch.bfloat16)),
           "ids_equal_twin": bool(torch.equal(ids, tids)), "rows_other_set_than_torch_topk": same_set,
           "chosen_logits_equal_torch_topk": same_vals,
           "max_ulp_vs_twin": int((w.view(torch.int16).int() - tw.view(torch.int16).int()).abs().max())}
    print("router", row, flush=True)
    return row


def kv_row(name, T, pages, page):
    hkv, d = 8, 128  # Qwen3-0.6B and 8B both: 8 KV heads of 128
    kc = torch.zeros(pages, page, hkv, d, device=dev, dtype=torch.bfloat16)
    vc = torch.zeros_like(kc)
    qkv = torch.randn(T, (32 + 2 * hkv) * d, device=dev, dtype=torch.bfloat16)
    k = qkv[:, 32 * d:(32 + hkv) * d].view(T, hkv, d)
    v = qkv[:, (32 + hkv) * d:].view(T, hkv, d)
    slots = torch.randperm(pages * page - page, device=dev)[:T] + page
    slots[-2:] = 0  # two padding rows on the scratch page

    def old():
        for c, x in ((kc, k), (vc, v)):
            c.view(-1, hkv, d).index_copy_(0, slots, x.to(c.dtype))

    old()
    ref_k, ref_v = kc.clone(), vc.clone()
    kc.zero_()
    vc.zero_()
    kv_write.write(k, v, kc, vc, slots)
    same = torch.equal(kc[1:], ref_k[1:]) and torch.equal(vc[1:], ref_v[1:])  # page 0: two padding rows race
    row = {"shape": name, "T": T, "bit_identical": bool(same),
           "old_index_copy_us": graph_us(old), "new_us": graph_us(lambda: kv_write.write(k, v, kc, vc, slots))}
    k8 = torch.zeros(pages, page, hkv, d, device=dev, dtype=torch.uint8).view(torch.float8_e4m3fn)
    v8 = transposed_pages((pages, page, hkv, d), torch.float8_e4m3fn, dev)
    sc = torch.full((hkv,), 0.05, device=dev)
    row["fp8_write_us"] = graph_us(lambda: kv_write.write_fp8(k, v, k8, v8, sc, sc, slots))
    q = torch.randn(T, 32, d, device=dev, dtype=torch.bfloat16)
    row["q_to_fp16_copy_us"] = graph_us(lambda: q.to(torch.float16))
    print("kv_write", row, flush=True)
    return row


out = {"router": [router_row(*c) for c in ((128, 128, 8), (1, 128, 8), (256, 128, 8), (128, 60, 4))],
       "kv_write": [kv_row(*c) for c in (("8b_32seq", 32, 2048, 16), ("8b_128seq", 128, 4096, 16),
                                         ("0.6b_256seq", 256, 4096, 16))]}
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "k_small_kernels.json"), "w"), indent=1)
