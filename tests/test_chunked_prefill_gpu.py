"""Chunked prefill on the GPU (run on a GPU machine: ``python -m pytest -m gpu tests/test_chunked_prefill_gpu.py``):
the real Triton kernels in bf16. Deterministic mode: every sequence's logits at every step, chunked (odd sizes,
mixed steps) and over cached prefixes, equal the whole prefill's bit for bit; default mode: greedy tokens agree for
at least 90% of the sequences (bf16 near-ties may flip a few); fp8 pages run chunked."""
from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from checkpoints import make_checkpoint

from litesys import LLM, SamplingParams

PS = 16
GREEDY = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True, repeat_check=False)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cpg") / "m", "qwen3", with_tokenizer=False, vocab_size=4096,
                           head_dim=128)


def prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    shared = torch.randint(0, 4096, (5 * PS,), generator=g).tolist()
    out = [torch.randint(0, 4096, (n,), generator=g).tolist() for n in (300, 17, 129, 64, 1000)]
    return out + [shared + out[1], shared + out[2]]


def logits_by_request(ckpt, budget: int, **kw) -> dict[int, list[torch.Tensor]]:
    """Each request's logits rows as the sampler saw them (CUDA graphs off: every step runs in Python)."""
    llm = LLM(str(ckpt), device="cuda", dtype=torch.bfloat16, max_seq_len=2048, page_size=PS, cuda_graphs=False,
              max_num_batched_tokens=budget, gpu_memory_utilization=0.5, **kw)
    eng, rows = llm.engine, defaultdict(list)
    step = eng.sampler.step

    def spy(logits, sl):
        for i, b in enumerate(range(sl.start, sl.stop)):
            rows[eng.running[b].req.index].append(logits[i].float().cpu())
        return step(logits, sl)
    eng.sampler.step = spy
    llm.generate(prompts(), GREEDY)
    llm.close()
    return {k: v[:GREEDY.max_new_tokens] for k, v in rows.items()}


@pytest.mark.gpu
@pytest.mark.parametrize("cache", [False, True])
def test_deterministic_chunked_logits_are_the_whole_prefill_bitwise(ckpt, cache):
    runs = [logits_by_request(ckpt, budget, deterministic=True, enable_prefix_cache=cache) for budget in (4096, 97, 16)]
    assert sorted(runs[0]) == list(range(len(prompts())))
    for other in runs[1:]:
        assert all(torch.equal(a, b) for k in runs[0] for a, b in zip(runs[0][k], other[k], strict=True))


@pytest.mark.gpu
@pytest.mark.parametrize("kv", ["auto", "fp8_e4m3"])
def test_default_mode_greedy_tokens_agree(ckpt, kv):
    def run(budget):
        llm = LLM(str(ckpt), device="cuda", dtype=torch.bfloat16, max_seq_len=2048, page_size=PS,
                  max_num_batched_tokens=budget, gpu_memory_utilization=0.5, kv_cache_dtype=kv)
        if kv != "auto":  # fixed scales: the first prefill step (a chunk or not) would calibrate them otherwise
            llm.kv.set_scales(torch.full_like(llm.kv.k_scale, 0.05), torch.full_like(llm.kv.v_scale, 0.05))
        out = [o.token_ids for o in llm.generate(prompts(), GREEDY)]
        llm.close()
        return out
    whole, chunked = run(4096), run(97)
    assert sum(a == b for a, b in zip(whole, chunked)) >= 0.9 * len(whole)
