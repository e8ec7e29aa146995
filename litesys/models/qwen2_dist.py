"""Tensor-parallel Qwen2 / Qwen2.5: the Qwen2 executor with the Qwen3 stack's ``TensorParallel`` mixin."""
from __future__ import annotations

from litesys.models.qwen2 import Qwen2ForCausalLM
from litesys.models.qwen3_dist import TensorParallel


class Qwen2DistForCausalLM(TensorParallel, Qwen2ForCausalLM):
    pass
