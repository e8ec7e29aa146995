"""Llama executor (Llama 2, 3.x): the Qwen3 layer stack without the per-head q/k RMSNorm.

What differs from Qwen3 and where it is handled: no ``q_norm``/``k_norm`` (``qk_norm = False``); q/k/v/o biases
only with ``attention_bias`` (as Qwen3); tied embeddings, ``head_dim``, GQA and the RoPE type (``rope.py``, which
also knows Llama 3.1's ``llama3`` scaling) come from the config as for every model. This file plus one line in
``registry.py`` is the whole of adding it (README "Adding a model").
"""
from __future__ import annotations

import torch

from litesys.models.config import ModelConfig
from litesys.models.qwen3 import Qwen3ForCausalLM


class LlamaForCausalLM(Qwen3ForCausalLM):
    qk_norm = False

    def __init__(self, cfg: ModelConfig, device: torch.device | str, dtype: torch.dtype, max_seq_len: int):
        if cfg.raw.get("mlp_bias"):
            raise ValueError("config.json sets mlp_bias=true (biases on gate/up/down_proj), which the llama executor "
                             "does not load; use a checkpoint without MLP biases")
        super().__init__(cfg, device, dtype, max_seq_len)
