"""Logits processors by name. Adding a method = one file with ``from_config(cfg, heads)`` + one line here.

``from_config(cfg: SparseConfig, heads: Heads) -> processor`` where a processor is a callable
``(logits [B, Hq, L] fp32, lengths [B], layer, meta) -> logits`` (see ``docs/sparse.md``). Methods outside
the package can call ``register(name, from_config)`` before building the engine instead.
"""
from __future__ import annotations

from collections.abc import Callable

from litesys.attention.sparse import (
    block_topk,
    local,
    oracle_sample,
    oracle_topp,
    random_nsample,
    random_select,
    stride,
    threshold,
    topk,
)

PROCESSORS: dict[str, Callable] = {
    "local": local.from_config,
    "topk": topk.from_config,
    "block_topk": block_topk.from_config,
    "stride": stride.from_config,
    "random_select": random_select.from_config,
    "random_nsample": random_nsample.from_config,
    "oracle_sample": oracle_sample.from_config,
    "oracle_topp": oracle_topp.from_config,
    "threshold": threshold.from_config,  # the "write your own" example
}


def register(name: str, from_config: Callable) -> None:
    """Add a method at run time (e.g. from a research script); then use ``SparseConfig(attn_custom=name)``."""
    if name in PROCESSORS and PROCESSORS[name] is not from_config:
        raise ValueError(f"sparse method {name!r} is already registered; pick another name")
    PROCESSORS[name] = from_config


def get(name: str) -> Callable:
    if name not in PROCESSORS:
        raise ValueError(f"unknown sparse method {name!r}; registered: {', '.join(sorted(PROCESSORS))}")
    return PROCESSORS[name]
