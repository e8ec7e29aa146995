"""Qwen2 / Qwen2.5 executor: the Qwen3 layer stack with q/k/v bias and no per-head q/k norm."""
from __future__ import annotations

from litesys.models.qwen3 import Qwen3ForCausalLM


class Qwen2ForCausalLM(Qwen3ForCausalLM):
    qkv_bias = True
    o_bias = False  # transformers' Qwen2 o_proj never has a bias
    qk_norm = False
