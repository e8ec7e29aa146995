"""Qwen3-MoE on a GPU (fused Triton kernels, CUDA-graph decode) vs transformers on the same GPU.

    python -m pytest -m gpu tests/test_qwen3_moe_gpu.py

fp32: the kernels compute in IEEE fp32, so logits agree to ~1e-5 and greedy tokens match; bf16: logits close and
most greedy continuations identical (bf16 rounding can flip an expert choice or a near-tie token).
"""
from __future__ import annotations

import pytest
import torch
from checkpoints import load_hf, make_checkpoint

from litesys import LLM, SamplingParams
from litesys.attention.backend import Attention, select_ops
from litesys.attention.kv_cache import KVCache
from litesys.attention.meta import AttnMeta

DEVICE = "cuda"
# big enough for several row blocks per expert at prefill and the pair path at small decode buckets
SHAPE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             num_hidden_layers=4, num_experts=16, num_experts_per_tok=4, moe_intermediate_size=128,
             norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[2])
GREEDY = SamplingParams(temperature=0, max_new_tokens=32, ignore_eos=True, repeat_check=False)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("moe_gpu"), "qwen3_moe", with_tokenizer=False, **SHAPE)


def _prompts(n: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, 150, (n,), generator=g).tolist()
    return [torch.randint(100, 100000, (k,), generator=g).tolist() for k in lens]


def _prefill_rel_errs(llm: LLM, hf, prompts: list[list[int]]) -> list[float]:
    m, cfg, dt = llm.model, llm.cfg, llm.dtype
    lens = [len(p) for p in prompts]
    kv = KVCache(cfg.num_layers, 64, 16, m.num_kv_heads, cfg.head_dim, dt, DEVICE)
    attn = Attention(kv, m.num_q_heads, m.num_kv_heads, cfg.head_dim, cfg.head_dim ** -0.5,
                     ops=select_ops(torch.device(DEVICE)))
    ids = torch.tensor([t for p in prompts for t in p], device=DEVICE)
    cu = [0] + torch.tensor(lens).cumsum(0).tolist()
    meta = AttnMeta(True, torch.arange(16, 16 + len(ids), device=DEVICE), 16, m.num_q_heads, m.num_kv_heads,
                    cu_seqlens=torch.tensor(cu, dtype=torch.int32, device=DEVICE), max_seqlen=max(lens))
    errs = []
    with torch.inference_mode():
        pos = torch.cat([torch.arange(n) for n in lens]).to(DEVICE)
        ours = m.compute_logits(m.forward(ids, pos, meta, attn))
        for i, p in enumerate(prompts):
            ref = hf(torch.tensor([p], device=DEVICE)).logits[0].float()
            errs.append(((ours[cu[i]:cu[i + 1]] - ref).norm() / ref.norm()).item())
    return errs


def _agreement(llm: LLM, hf, prompts: list[list[int]]) -> int:
    outs = llm.generate(prompts, GREEDY)
    same = 0
    with torch.inference_mode():
        for p, o in zip(prompts, outs):
            ref = hf.generate(torch.tensor([p], device=DEVICE), max_new_tokens=32, do_sample=False,
                              eos_token_id=None, pad_token_id=0)[0, len(p):].tolist()
            same += ref == o.token_ids
    return same


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_moe_gpu_matches_transformers(ckpt, dtype):
    hf = load_hf(ckpt).to(device=DEVICE, dtype=dtype)
    llm = LLM(str(ckpt), device=DEVICE, dtype=dtype, max_seq_len=256, max_num_seqs=32, gpu_memory_utilization=0.3)
    errs = _prefill_rel_errs(llm, hf, _prompts(3, seed=2) + [torch.randint(100, 100000, (250,)).tolist()])
    prompts = _prompts(24)
    same = _agreement(llm, hf, prompts)
    print(f"{dtype}: prefill rel errs {[f'{e:.1e}' for e in errs]}, greedy agreement {same}/{len(prompts)}")
    if dtype == torch.float32:
        assert max(errs) < 1e-4 and same >= len(prompts) - 1
    else:
        assert max(errs) < 2e-2 and same >= 0.75 * len(prompts)


def _sampled_among(llm: LLM, targets, own, n_others: int, seed: int) -> list[list[int]]:
    """The targets' tokens when run among ``n_others`` random requests of mixed sampling (top_k 5/20/0/50)."""
    g = torch.Generator().manual_seed(seed)
    others = _prompts(n_others, seed)
    mates = [SamplingParams(temperature=[0.0, 0.6, 1.0][i % 3], top_k=[5, 20, 0, 50][i % 4], top_p=0.9,
                            max_new_tokens=int(torch.randint(8, 96, (1,), generator=g)), ignore_eos=True,
                            repeat_check=False, seed=i) for i in range(n_others)]
    at = torch.randperm(n_others + len(targets), generator=g)[:len(targets)].tolist()
    prompts, params = list(others), list(mates)
    for pos, (t, p) in sorted(zip(at, zip(targets, own))):
        prompts.insert(pos, t)
        params.insert(pos, p)
    outs = llm.generate(prompts, params)
    index = {id(p): i for i, p in enumerate(prompts)}
    return [outs[index[id(t)]].token_ids for t in targets]


@pytest.mark.gpu
def test_deterministic_moe_bf16_cuda_graphs_is_batch_invariant(ckpt):
    """deterministic=True, bf16, CUDA graphs: 4 sampled requests (T = 0.8, 128 tokens) give the same tokens alone,
    among 6 and 63 random others (mixed temperatures and top_k), and in a KV pool small enough to preempt (swapped,
    and recomputed)."""
    kw = dict(device=DEVICE, dtype=torch.bfloat16, max_seq_len=512, max_num_seqs=64, cuda_graphs=True,
              deterministic=True, gpu_memory_utilization=0.3)
    llm = LLM(str(ckpt), **kw)
    assert llm.model.invariant
    targets = _prompts(4, seed=7)
    own = [SamplingParams(temperature=0.8, top_k=[20, 0, 5, 50][i], top_p=0.95, max_new_tokens=128, ignore_eos=True,
                          repeat_check=False, seed=100 + i) for i in range(4)]
    alone = [llm.generate([t], [p])[0].token_ids for t, p in zip(targets, own)]
    assert _sampled_among(llm, targets, own, 6, 1) == alone
    assert _sampled_among(llm, targets, own, 63, 2) == alone
    for swap_gb in (4.0, 0.0):  # preempted sequences swapped, then recomputed (replayed through decode)
        small = LLM(str(ckpt), **kw, num_kv_pages=160, swap_space_gb=swap_gb)
        assert _sampled_among(small, targets, own, 63, 2) == alone, f"swap_space_gb={swap_gb}"
        assert small.engine.stats["preemptions"] > 0
        small.close()
