"""Tensor-parallel Llama: the Llama executor with the Qwen3 stack's ``TensorParallel`` mixin."""
from __future__ import annotations

from litesys.models.llama import LlamaForCausalLM
from litesys.models.qwen3_dist import TensorParallel


class LlamaDistForCausalLM(TensorParallel, LlamaForCausalLM):
    pass
