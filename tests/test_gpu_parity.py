"""GPU parity with transformers in bf16 (run on a GPU machine: ``python -m pytest -m gpu tests/test_gpu_parity.py``).

Random Qwen3-0.6B-shaped weights: prefill logits close to transformers', and the first 32 greedy tokens identical
for at least 90% of 64 prompts (bf16 near-ties can flip a few).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from litesys import LLM, SamplingParams

CFG = Path(__file__).resolve().parents[1] / "benchmarks" / "configs" / "qwen3_0.6b.json"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from transformers import AutoConfig, AutoModelForCausalLM

    path = tmp_path_factory.mktemp("q06")
    (path / "config.json").write_text(CFG.read_text())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.bfloat16)
    with torch.no_grad():  # a wider logit spread than the 0.02 init: greedy is then decided, not a coin toss
        model.model.embed_tokens.weight.normal_(0, 0.5)
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    return path, model.cuda().eval()


@pytest.mark.gpu
def test_bf16_prefill_logits_and_greedy_agree(ckpt):
    path, hf = ckpt
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(100, 100000, (int(n),), generator=g).tolist()
               for n in torch.randint(8, 200, (64,), generator=g)]
    llm = LLM(str(path), device="cuda", dtype=torch.bfloat16, max_seq_len=512, gpu_memory_utilization=0.5)
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_new_tokens=32, ignore_eos=True,
                                                repeat_check=False))
    same = 0
    with torch.inference_mode():
        for p, o in zip(prompts, outs):
            ref = hf.generate(torch.tensor([p], device="cuda"), max_new_tokens=32, do_sample=False,
                              eos_token_id=None, pad_token_id=0)[0, len(p):].tolist()
            same += ref == o.token_ids
    print(f"greedy 32-token agreement: {same}/64")
    assert same >= 0.9 * 64


@pytest.mark.gpu
def test_bf16_prefill_logits_close(ckpt):
    path, hf = ckpt
    from litesys.attention.backend import Attention, select_ops
    from litesys.attention.kv_cache import KVCache
    from litesys.attention.meta import AttnMeta

    llm = LLM(str(path), device="cuda", dtype=torch.bfloat16, max_seq_len=512, gpu_memory_utilization=0.5)
    m, cfg = llm.model, llm.cfg
    g = torch.Generator().manual_seed(2)
    lens = [7, 100, 300]
    prompts = [torch.randint(100, 100000, (n,), generator=g) for n in lens]
    kv = KVCache(cfg.num_layers, 64, 16, cfg.num_kv_heads, cfg.head_dim, torch.bfloat16, "cuda")
    attn = Attention(kv, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.head_dim ** -0.5,
                     ops=select_ops(torch.device("cuda")))
    ids = torch.cat(prompts).cuda()
    cu = torch.tensor([0, 7, 107, 407], dtype=torch.int32, device="cuda")
    meta = AttnMeta(True, torch.arange(16, 16 + len(ids), device="cuda"), 16, cfg.num_heads, cfg.num_kv_heads,
                    cu_seqlens=cu, max_seqlen=300)
    with torch.inference_mode():
        pos = torch.cat([torch.arange(n) for n in lens]).cuda()
        ours = m.compute_logits(m.forward(ids, pos, meta, attn))
        for i, p in enumerate(prompts):
            ref = hf(p[None].cuda()).logits[0].float()
            o = ours[cu[i]:cu[i + 1]]
            rel = ((o - ref).norm() / ref.norm()).item()
            print(f"prompt {lens[i]}: rel err {rel:.2e}")
            assert rel < 2e-2
