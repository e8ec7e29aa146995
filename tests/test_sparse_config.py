"""SparseConfig: flags -> method, one-line validation errors, registering a new method (the CLI round trip:
tests/test_eval_configs.py)."""
from __future__ import annotations

import pytest
import torch

from litesys.attention.kv_cache import KVCache
from litesys.attention.sparse import SparseConfig, build, register
from litesys.attention.sparse.common import AttnShape
from litesys.attention.sparse.registry import METHODS


@pytest.mark.parametrize("kwargs,message", [
    (dict(attn_topk=8, attn_block_topk=2, attn_local=4), "exclusive"),
    (dict(attn_topk=8, quest_topk_blocks=4), "exclusive"),
    (dict(attn_topk=8), "needs --attn_local"),
    (dict(attn_topk=0, attn_local=4), "attn_topk must be an integer >= 1"),
    (dict(attn_local=-1), "attn_local must be an integer >= 0"),
    (dict(attn_stride=4, attn_local=4), "needs --attn_block_topk"),
    (dict(attn_oracle_topp=1.5, attn_local=4), r"in \(0, 1\]"),
    (dict(attn_custom="nope", attn_local=4), "unknown sparse method 'nope'"),
    (dict(attn_custom="quest", attn_local=4), "chosen with --quest_topk_blocks"),
    (dict(quest_block_size=16), "needs --quest_topk_blocks"),
    (dict(attn_local=4, attn_layer_skip=[-1]), "layer indices >= 0"),
])
def test_validation_errors_are_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        SparseConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_build_checks_model_shape() -> None:
    with pytest.raises(ValueError, match="past the model's 2 layers"):
        build(SparseConfig(attn_local=4, attn_layer_skip=[5]), AttnShape(4, 2, 2))
    quest = build(SparseConfig(quest_topk_blocks=4, quest_block_size=32), AttnShape(4, 2, 2))
    assert quest.kv_page_size() == 32  # the engine takes its page size from the method
    with pytest.raises(ValueError, match="must equal the KV page size 16"):
        quest.bind(KVCache(2, 4, 16, 2, 8, torch.float32, "cpu"))


def test_register_a_new_method() -> None:
    class KeepEven:  # a toy method: drop odd positions
        def __call__(self, logits, lengths, layer, meta):
            return logits.masked_fill(torch.arange(logits.shape[-1]) % 2 == 1, float("-inf"))

    register("keep_even_test", lambda cfg, shape, backend: KeepEven())
    try:
        method = build(SparseConfig(attn_custom="keep_even_test", attn_local=0), AttnShape(4, 2, 2))
        assert sorted(method.processors) == [1]  # layer 0 dense by default
        out = method.processors[1][0](torch.zeros(1, 4, 6), torch.tensor([6]), 1, None)
        assert torch.isinf(out[..., 1::2]).all() and (out[..., ::2] == 0).all()
        with pytest.raises(ValueError, match="already registered"):
            register("topk", lambda cfg, shape, backend: KeepEven())
    finally:
        METHODS.pop("keep_even_test")
