"""Sparse attention: logits processors (one file per method, see ``registry``) and Quest page selection."""
from litesys.attention.sparse.config import SparseConfig, add_cli_args, build, from_args
from litesys.attention.sparse.registry import register

__all__ = ["SparseConfig", "add_cli_args", "build", "from_args", "register"]
