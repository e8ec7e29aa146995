"""On the GPU: ``del llm`` / ``close()`` / a with-block give the memory back at once (no gc.collect), a second LLM
gets the same KV pool, recovery works with CUDA graphs, and the planner refuses pools that cannot fit."""
from __future__ import annotations

import gc

import pytest
import torch
from checkpoints import make_checkpoint

from litesys import LLM, SamplingParams
from litesys.attention.kv_cache import KVCache

pytestmark = pytest.mark.gpu
MiB = 1 << 20
SLACK = 64 * MiB  # cuBLAS workspaces (kept per stream by torch) and allocator rounding; the pool is ~1 GiB
# the pool is capped at what max_num_seqs sequences of max_seq_len need: 64 x 257 pages x 64 KiB = 1 GiB
KW = dict(device="cuda", dtype=torch.bfloat16, max_seq_len=4096, max_num_seqs=64, gpu_memory_utilization=0.3)
SHAPE = dict(num_hidden_layers=4, hidden_size=512, num_attention_heads=8, num_key_value_heads=4, head_dim=64,
             intermediate_size=1024)
GREEDY = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True)
PROMPTS = [[1, 2, 3, 4, 5], [6, 7, 8], [9] * 20]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("mem") / "m", "qwen3", with_tokenizer=False, vocab_size=4096,
                           **SHAPE)


def _settle() -> int:
    x = torch.ones(64, 64, device="cuda", dtype=torch.bfloat16)
    (x @ x).float() @ x.float()  # cuBLAS handles and workspaces exist before the baseline
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated()


def test_del_gives_the_memory_back_without_gc(ckpt):
    base = _settle()
    llm = LLM(str(ckpt), **KW)
    first = [o.token_ids for o in llm.generate(PROMPTS, GREEDY)]
    pages = llm.kv.num_pages
    held = torch.cuda.memory_allocated() - base
    assert held > 512 * MiB, f"expected a KV pool of about 1 GiB, {held / MiB:.0f} MiB allocated"
    gc.disable()  # prove that reference counting alone frees it
    try:
        del llm
        left = torch.cuda.memory_allocated() - base
        assert left < SLACK, f"{left / MiB:.1f} MiB still allocated after del ({held / MiB:.0f} MiB before)"
        assert torch.cuda.memory_reserved() - base < 2 * SLACK  # handed back to the driver, not only cached
    finally:
        gc.enable()
    again = LLM(str(ckpt), **KW)  # not squeezed by the first one's leftovers
    assert again.kv.num_pages == pages
    assert [o.token_ids for o in again.generate(PROMPTS, GREEDY)] == first
    again.close()


def test_close_and_with_block_free_at_once(ckpt):
    base = _settle()
    with LLM(str(ckpt), **KW) as llm:
        llm.generate(PROMPTS, GREEDY)
        assert torch.cuda.memory_allocated() - base > 512 * MiB
    assert torch.cuda.memory_allocated() - base < SLACK
    with pytest.raises(RuntimeError, match="closed"):
        llm.generate(PROMPTS, GREEDY)


def test_recovery_with_cuda_graphs(ckpt):
    llm = LLM(str(ckpt), **KW)
    fresh = [o.token_ids for o in llm.generate(PROMPTS, GREEDY)]

    def boom(i, out):
        raise RuntimeError("callback")

    with pytest.raises(RuntimeError, match="callback"):
        llm.generate(PROMPTS, GREEDY, on_finish=boom)
    assert llm.engine.allocator.num_free == llm.kv.num_pages - 1 and not llm.engine.running
    assert [o.token_ids for o in llm.generate(PROMPTS, GREEDY)] == fresh
    llm.close()


def test_planner_refuses_what_is_not_there(ckpt):
    base = _settle()
    free, total = torch.cuda.mem_get_info()
    hog = torch.empty(int(free * 0.8), dtype=torch.uint8, device="cuda")  # memory that is not there any more
    try:
        with pytest.raises(ValueError, match="gpu_memory_utilization") as e:
            LLM(str(ckpt), **{**KW, "gpu_memory_utilization": 0.5})
        assert "\n" not in str(e.value)
    finally:
        del hog
    _settle()
    per_page = KVCache.bytes_per_page(4, 16, 4, 64, torch.bfloat16)
    with pytest.raises(ValueError, match="num_kv_pages") as e:
        LLM(str(ckpt), **KW, num_kv_pages=int(total // per_page) + 1000)
    assert "\n" not in str(e.value)
    assert torch.cuda.memory_allocated() - base < SLACK  # the refused LLMs left nothing behind
