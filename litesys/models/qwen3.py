"""Qwen3 executor (dense): per-head q/k RMSNorm, ``head_dim`` from the config, tied or untied lm_head.

Plain tensors, readable top to bottom. Written for ``dist.world`` ranks; a single GPU is ``world == 1``, where
every collective is a no-op (the tensor-parallel variant in ``qwen3_dist.py`` only checks the TP shape and
replicates KV heads when there are fewer of them than ranks).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from litesys.attention.backend import Attention
from litesys.attention.meta import AttnMeta
from litesys.kernels.norm_rope import add_rms_norm, qk_norm_rope, silu_mul
from litesys.models.config import ModelConfig
from litesys.models.layers import Dist, column_parallel, embedding, row_parallel
from litesys.models.loader import Checkpoint
from litesys.models.rope import rope_cos_sin


@dataclass
class LayerWeights:
    ln1: torch.Tensor  # [H]
    qkv: torch.Tensor  # [(hq + 2 hkv) * D, H] fused at load
    qkv_bias: torch.Tensor | None
    q_norm: torch.Tensor | None  # [D]
    k_norm: torch.Tensor | None
    o: torch.Tensor  # [H, hq * D]
    o_bias: torch.Tensor | None  # [H], added once after the all-reduce (Qwen3 with attention_bias=True)
    ln2: torch.Tensor
    gate_up: torch.Tensor  # [2 * I, H] fused at load
    down: torch.Tensor  # [H, I]


class Qwen3ForCausalLM:
    qkv_bias = False  # q/k/v bias even without attention_bias (Qwen2)
    o_bias = True  # o_proj has a bias when the config says attention_bias (as transformers; Qwen2: never)
    qk_norm = True

    def __init__(self, cfg: ModelConfig, device: torch.device | str, dtype: torch.dtype, max_seq_len: int,
                 dist: Dist | None = None):
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.dist = dist or Dist()
        self.head_dim = cfg.head_dim
        self.q_heads, self.kv_heads = self.head_shards()  # [start, stop) of this rank's query / KV heads
        self.num_q_heads = self.q_heads[1] - self.q_heads[0]
        self.num_kv_heads = self.kv_heads[1] - self.kv_heads[0]
        self.rope = rope_cos_sin(cfg.head_dim, cfg.rope, cfg.max_position_embeddings, max_seq_len, self.device)
        self.layers: list[LayerWeights] = []

    def head_shards(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """All heads when ``world == 1``; the tensor-parallel variant overrides this (KV head replication)."""
        return (self.dist.split(self.cfg.num_heads, "num_attention_heads"),
                self.dist.split(self.cfg.num_kv_heads, "num_key_value_heads"))

    # ---- loading -------------------------------------------------------------------------------------
    def load(self, ckpt: Checkpoint) -> None:
        c, D, dt, dev = self.cfg, self.head_dim, self.dtype, self.device
        qs, ks = self.q_heads, self.kv_heads
        q_rows, kv_rows = (qs[0] * D, qs[1] * D), (ks[0] * D, ks[1] * D)
        inter = self.dist.split(c.intermediate_size, "intermediate_size")
        self.vocab = self.dist.split(c.vocab_size, "vocab_size")
        self.embed = ckpt.get("model.embed_tokens.weight", 0, *self.vocab).to(dev, dt)
        if c.tie_word_embeddings or "lm_head.weight" not in ckpt:
            self.lm_head = self.embed
        else:
            self.lm_head = ckpt.get("lm_head.weight", 0, *self.vocab).to(dev, dt)
        self.norm = ckpt.get("model.norm.weight").to(dev, dt)
        for i in range(c.num_layers):
            p = f"model.layers.{i}."
            a = p + "self_attn."
            qkv_names = [a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"]
            shards = [q_rows, kv_rows, kv_rows]
            bias = None
            if self.qkv_bias or a + "q_proj.bias" in ckpt:
                bias = column_parallel(ckpt, [n.replace("weight", "bias") for n in qkv_names], shards, dt, dev)
            o_bias = None
            if self.o_bias and c.attention_bias:  # replicated: every rank holds it, it is added after the reduce
                o_bias = ckpt.get(a + "o_proj.bias").to(dev, dt)
            self.layers.append(LayerWeights(
                ln1=ckpt.get(p + "input_layernorm.weight").to(dev, dt),
                qkv=column_parallel(ckpt, qkv_names, shards, dt, dev),
                qkv_bias=bias,
                q_norm=ckpt.get(a + "q_norm.weight").to(dev, dt) if self.qk_norm else None,
                k_norm=ckpt.get(a + "k_norm.weight").to(dev, dt) if self.qk_norm else None,
                o=row_parallel(ckpt, a + "o_proj.weight", q_rows, dt, dev),
                o_bias=o_bias,
                ln2=ckpt.get(p + "post_attention_layernorm.weight").to(dev, dt),
                **self.load_mlp(ckpt, i, inter),
            ))

    def load_mlp(self, ckpt: Checkpoint, i: int, inter: tuple[int, int]) -> dict:
        m = f"model.layers.{i}.mlp."
        return dict(gate_up=column_parallel(ckpt, [m + "gate_proj.weight", m + "up_proj.weight"], [inter, inter],
                                            self.dtype, self.device),
                    down=row_parallel(ckpt, m + "down_proj.weight", inter, self.dtype, self.device))

    # ---- forward -------------------------------------------------------------------------------------
    def forward(self, ids: torch.Tensor, positions: torch.Tensor, meta: AttnMeta, attn: Attention) -> torch.Tensor:
        """ids, positions: [T] (a step's new tokens, packed) -> final hidden states [T, H]."""
        T, D, eps = ids.shape[0], self.head_dim, self.cfg.rms_norm_eps
        nq, nkv = self.num_q_heads, self.num_kv_heads
        h = embedding(ids, self.embed, self.vocab[0], self.dist)
        res = None  # residual stream; each add is fused into the following RMSNorm
        for i, w in enumerate(self.layers):
            x, res = add_rms_norm(h, res, w.ln1, eps)
            qkv = F.linear(x, w.qkv, w.qkv_bias)
            q, k, v = qk_norm_rope(qkv, w.q_norm, w.k_norm, self.rope, positions, nq, nkv, eps)
            o = attn(i, q, k, v, meta)
            h = self.dist.all_reduce(F.linear(o.reshape(T, nq * D), w.o))
            if w.o_bias is not None:  # after the all-reduce: added once, not once per rank
                h = h + w.o_bias
            x, res = add_rms_norm(h, res, w.ln2, eps)
            h = self.mlp(i, x, w)
        return add_rms_norm(h, res, self.norm, eps)[0]

    def mlp(self, i: int, x: torch.Tensor, w: LayerWeights) -> torch.Tensor:
        return self.dist.all_reduce(F.linear(silu_mul(F.linear(x, w.gate_up)), w.down))

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, H] -> logits [B, vocab] in the model dtype, gathered over the vocab-parallel ranks (the sampler
        upcasts only the candidates it keeps: a full fp32 copy would cost a vocabulary-sized pass per step)."""
        return self.dist.all_gather_last(F.linear(hidden, self.lm_head))
