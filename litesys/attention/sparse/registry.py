"""Sparse methods by name, and ``build``, which turns a ``SparseConfig`` into the one method attention runs.

Adding a method = one file with ``from_config(cfg, shape, backend)`` + one line here. ``from_config`` returns a
logits processor (a callable ``(logits [B, Hq, L] fp32, lengths [B], layer, meta) -> logits``, run on every layer
outside ``attn_layer_skip``) or a ``SparseMethod`` (e.g. a ``PageSelector``; it handles the layer skip itself).
See ``docs/sparse.md``. Methods outside the package can call ``register(name, from_config)`` instead.
"""
from __future__ import annotations

from collections.abc import Callable

from litesys.attention.sparse import (
    block_topk,
    local,
    local_pages,
    oracle_sample,
    oracle_topp,
    quest,
    random_nsample,
    random_select,
    stride,
    threshold,
    topk,
)
from litesys.attention.sparse.base import DenseMethod, ProcessorMethod, SparseMethod
from litesys.attention.sparse.common import AttnShape

METHODS: dict[str, Callable] = {
    "local": local.from_config,
    "topk": topk.from_config,
    "block_topk": block_topk.from_config,
    "stride": stride.from_config,
    "random_select": random_select.from_config,
    "random_nsample": random_nsample.from_config,
    "oracle_sample": oracle_sample.from_config,
    "oracle_topp": oracle_topp.from_config,
    "quest": quest.from_config,
    "threshold": threshold.from_config,  # the "write your own" processor example
    "local_pages": local_pages.from_config,  # the "write your own" page-selector example
}


def register(name: str, from_config: Callable) -> None:
    """Add a method at run time (e.g. from a research script); then use ``SparseConfig(attn_custom=name)``."""
    if name in METHODS and METHODS[name] is not from_config:
        raise ValueError(f"sparse method {name!r} is already registered; pick another name")
    METHODS[name] = from_config


def get(name: str) -> Callable:
    if name not in METHODS:
        raise ValueError(f"unknown sparse method {name!r}; registered: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def build(cfg, shape: AttnShape | None, backend: str = "auto") -> SparseMethod:
    """The method for ``Attention``: ``DenseMethod`` when ``cfg`` (a ``SparseConfig``) is None or names no method.

    ``shape``: this rank's layers and heads (under tensor parallelism their place among the model's heads:
    ``litesys.distributed.sparse_heads``; None is fine without a method); ``backend``: the ``attention_backend``
    ("auto", "torch", "triton"), which every processor and selector follows."""
    if cfg is None or cfg.method is None:
        return DenseMethod()
    n = shape.num_layers
    bad = [x for x in cfg.attn_layer_skip if x >= n]
    if bad:
        raise ValueError(f"--attn_layer_skip {bad} is past the model's {n} layers (0..{n - 1})")
    made = get(cfg.method)(cfg, shape, backend)
    if isinstance(made, SparseMethod):
        return made
    layers = [layer for layer in range(n) if layer not in set(cfg.attn_layer_skip)]
    return ProcessorMethod({layer: [made] for layer in layers}) if layers else DenseMethod()
