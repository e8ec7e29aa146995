"""End to end: ``LLM(..., sparse=SparseConfig(...))`` generates; with a budget covering everything it is dense."""
from __future__ import annotations

import pytest
import torch
from checkpoints import make_checkpoint

from litesys import LLM, SamplingParams
from litesys.attention.sparse import SparseConfig

PROMPT_LENS = [9, 30, 57]
NEW = 10


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("sp") / "m", "qwen3", num_hidden_layers=2, head_dim=16,
                           with_tokenizer=False)


def generate(ckpt, sparse: SparseConfig | None, page_size: int = 4) -> list[list[int]]:
    llm = LLM(str(ckpt), device="cpu", dtype=torch.float32, max_seq_len=128, page_size=page_size, sparse=sparse)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 1000, (n,), generator=g).tolist() for n in PROMPT_LENS]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_new_tokens=NEW, ignore_eos=True))
    return [o.token_ids for o in outs]


@pytest.fixture(scope="module")
def dense(ckpt):
    return generate(ckpt, None)


@pytest.mark.parametrize("cfg", [
    SparseConfig(quest_topk_blocks=64, quest_block_size=4, attn_layer_skip=[]),
    SparseConfig(attn_topk=128, attn_local=8, attn_layer_skip=[]),
    SparseConfig(attn_block_topk=32, attn_block_size=4, attn_local=8, attn_layer_skip=[]),
    SparseConfig(attn_custom="local_pages", attn_local=128, attn_layer_skip=[]),
], ids=["quest", "topk", "block_topk", "local_pages"])
def test_full_budget_equals_dense(ckpt, dense, cfg: SparseConfig) -> None:
    assert generate(ckpt, cfg) == dense


@pytest.mark.parametrize("cfg", [
    SparseConfig(quest_topk_blocks=2, quest_block_size=4, attn_local=4),
    SparseConfig(attn_local=8, attn_layer_skip=[]),
    SparseConfig(attn_random_nsample=8, attn_local=8),
    SparseConfig(attn_nsample=8, attn_local=8),
    SparseConfig(attn_custom="local_pages", attn_local=4, attn_layer_skip=[]),
], ids=["quest", "local", "random_nsample", "oracle_sample", "local_pages"])
def test_small_budget_generates(ckpt, dense, cfg: SparseConfig) -> None:
    out = generate(ckpt, cfg)
    assert [len(t) for t in out] == [NEW] * len(PROMPT_LENS)
    if cfg.method in ("local", "local_pages"):  # the sink and window are smaller than every sequence: changed
        assert out != dense
    else:  # the 9-token prompt (19 tokens at the end) fits these budgets: that sequence stays dense
        assert out[0] == dense[0]
