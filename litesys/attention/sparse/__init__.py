"""Sparse attention: one ``SparseMethod`` per run (``base``), made by ``build`` from a ``SparseConfig``; methods by
name in ``registry`` (logits processors and page selectors, one file each)."""
from litesys.attention.sparse.config import SparseConfig
from litesys.attention.sparse.registry import build, register

__all__ = ["SparseConfig", "build", "register"]
