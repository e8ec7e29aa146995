"""Qwen2 / Qwen2.5 executor: the Qwen3 layer stack with q/k/v bias and no per-head q/k norm."""
from __future__ import annotations

from litesys.models.qwen3 import Qwen3ForCausalLM


class Qwen2ForCausalLM(Qwen3ForCausalLM):
    qkv_bias = True
    qk_norm = False
