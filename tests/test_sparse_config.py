"""SparseConfig: flags -> method, one-line validation errors, CLI round trip, registering a new method."""
from __future__ import annotations

import argparse

import pytest
import torch

from litesys.attention.sparse import SparseConfig, add_cli_args, build, from_args, register
from litesys.attention.sparse.registry import PROCESSORS


def parse(*argv: str) -> SparseConfig | None:
    parser = argparse.ArgumentParser()
    add_cli_args(parser)
    return from_args(parser.parse_args(list(argv)))


@pytest.mark.parametrize("kwargs,message", [
    (dict(attn_topk=8, attn_block_topk=2, attn_local=4), "exclusive"),
    (dict(attn_topk=8, quest_topk_blocks=4), "exclusive"),
    (dict(attn_topk=8), "needs --attn_local"),
    (dict(attn_topk=0, attn_local=4), "attn_topk must be an integer >= 1"),
    (dict(attn_local=-1), "attn_local must be an integer >= 0"),
    (dict(attn_stride=4, attn_local=4), "needs --attn_block_topk"),
    (dict(attn_oracle_topp=1.5, attn_local=4), r"in \(0, 1\]"),
    (dict(attn_custom="nope", attn_local=4), "unknown sparse method 'nope'"),
    (dict(quest_block_size=16), "needs --quest_topk_blocks"),
    (dict(attn_local=4, attn_layer_skip=[-1]), "layer indices >= 0"),
])
def test_validation_errors_are_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        SparseConfig(**kwargs)
    assert "\n" not in str(e.value)


def test_build_checks_model_shape() -> None:
    with pytest.raises(ValueError, match="past the model's 2 layers"):
        build(SparseConfig(attn_local=4, attn_layer_skip=[5]), 2, 4, 2, 16)
    with pytest.raises(ValueError, match="must equal the KV page size 16"):
        build(SparseConfig(quest_topk_blocks=4, quest_block_size=32), 2, 4, 2, 16)


def test_cli_round_trip() -> None:
    assert parse() is None  # no sparse flag: dense
    cfg = parse("--attn_block_topk", "8", "--attn_block_size", "32", "--attn_stride", "16", "--attn_local", "64",
                "--attn_layer_skip", "0", "1")
    assert cfg.method == "stride" and cfg.attn_block_size == 32 and cfg.attn_layer_skip == [0, 1]
    assert cfg == SparseConfig(**cfg.to_dict())  # metadata round trip
    assert parse("--attn_local", "4", "--attn_layer_skip").attn_layer_skip == []  # every layer sparse
    cfg = parse("--quest_topk_blocks", "32")
    assert cfg.method == "quest" and cfg.quest_page_size == 16
    cfg = parse("--attn_custom", "threshold", "--attn_custom_arg", "tau=2.5", "--attn_local", "8")
    assert cfg.method == "threshold" and cfg.attn_custom_args == {"tau": 2.5}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse("--attn_custom", "threshold", "--attn_custom_arg", "tau", "--attn_local", "8")


def test_register_a_new_method() -> None:
    class KeepEven:  # a toy method: drop odd positions
        def __call__(self, logits, lengths, layer, meta):
            return logits.masked_fill(torch.arange(logits.shape[-1]) % 2 == 1, float("-inf"))

    register("keep_even_test", lambda cfg, heads: KeepEven())
    try:
        procs, _ = build(SparseConfig(attn_custom="keep_even_test", attn_local=0), 2, 4, 2, 16)
        out = procs[1][0](torch.zeros(1, 4, 6), torch.tensor([6]), 1, None)
        assert torch.isinf(out[..., 1::2]).all() and (out[..., ::2] == 0).all()
        with pytest.raises(ValueError, match="already registered"):
            register("topk", lambda cfg, heads: KeepEven())
    finally:
        PROCESSORS.pop("keep_even_test")
