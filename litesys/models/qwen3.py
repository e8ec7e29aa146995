"""Qwen3 executor (dense): per-head q/k RMSNorm, ``head_dim`` from the config, tied or untied lm_head.

Single device, plain tensors, readable top to bottom: the checkpoint table (which tensors, which dimensions),
``load`` (read them, fuse q/k/v and gate/up), ``forward`` (the layer loop). The tensor-parallel variant
(``qwen3_dist.py``) overrides ``read`` to take this rank's slices and the three steps that are plain here
(``embed_tokens``, ``reduce``, ``compute_logits``) to add their collectives.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from litesys.attention.backend import Attention
from litesys.attention.meta import AttnMeta
from litesys.kernels.norm_rope import add_rms_norm, qk_norm_rope, silu_mul
from litesys.models.config import ModelConfig
from litesys.models.loader import Checkpoint, Dims, table_shapes
from litesys.models.rope import rope_cos_sin

# The checkpoint table. Per model: attribute -> its checkpoint tensors. Per decoder layer: LayerWeights field ->
# the tensors fused into it (concatenated along dim 0). Each tensor's dimensions are named by symbol (sizes:
# ``dim_sizes``): ``load`` reads by this table, RandomCheckpoint makes exactly these tensors, and the
# tensor-parallel variant cuts the symbols it splits ("q", "kv", "inter", "vocab").
MODEL: dict[str, dict[str, Dims]] = {
    "embed": {"model.embed_tokens.weight": ("vocab", "hidden")},
    "norm": {"model.norm.weight": ("hidden",)},
    "lm_head": {"lm_head.weight": ("vocab", "hidden")},
}
LAYER: dict[str, dict[str, Dims]] = {  # in load order (also the order random weights are drawn in)
    "qkv_bias": {"self_attn.q_proj.bias": ("q",), "self_attn.k_proj.bias": ("kv",), "self_attn.v_proj.bias": ("kv",)},
    "ln1": {"input_layernorm.weight": ("hidden",)},
    "qkv": {"self_attn.q_proj.weight": ("q", "hidden"), "self_attn.k_proj.weight": ("kv", "hidden"),
            "self_attn.v_proj.weight": ("kv", "hidden")},
    "q_norm": {"self_attn.q_norm.weight": ("head_dim",)},
    "k_norm": {"self_attn.k_norm.weight": ("head_dim",)},
    "o": {"self_attn.o_proj.weight": ("hidden", "q")},
    "o_bias": {"self_attn.o_proj.bias": ("hidden",)},
    "ln2": {"post_attention_layernorm.weight": ("hidden",)},
    "gate_up": {"mlp.gate_proj.weight": ("inter", "hidden"), "mlp.up_proj.weight": ("inter", "hidden")},
    "down": {"mlp.down_proj.weight": ("hidden", "inter")},
}


@dataclass
class LayerWeights:
    ln1: torch.Tensor  # [H]
    qkv: torch.Tensor  # [(hq + 2 hkv) * D, H] fused at load
    o: torch.Tensor  # [H, hq * D]
    ln2: torch.Tensor
    gate_up: torch.Tensor  # [2 * I, H] fused at load
    down: torch.Tensor  # [H, I]
    qkv_bias: torch.Tensor | None = None
    q_norm: torch.Tensor | None = None  # [D]
    k_norm: torch.Tensor | None = None
    o_bias: torch.Tensor | None = None  # [H], added after o_proj (Qwen3 with attention_bias=True)


class Qwen3ForCausalLM:
    qkv_bias = False  # q/k/v bias even without attention_bias (Qwen2)
    o_bias = True  # o_proj has a bias when the config says attention_bias (as transformers; Qwen2: never)
    qk_norm = True
    # every projection goes through this (deterministic mode: kernels.gemm_invariant.invariant_linear)
    linear = staticmethod(F.linear)

    def __init__(self, cfg: ModelConfig, device: torch.device | str, dtype: torch.dtype, max_seq_len: int):
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.head_dim = cfg.head_dim
        self.q_heads, self.kv_heads = (0, cfg.num_heads), (0, cfg.num_kv_heads)  # [start, stop) of the heads held
        self.rope = rope_cos_sin(cfg.head_dim, cfg.rope, cfg.max_position_embeddings, max_seq_len, self.device)
        self.layers: list[LayerWeights] = []

    @property
    def num_q_heads(self) -> int:
        return self.q_heads[1] - self.q_heads[0]

    @property
    def num_kv_heads(self) -> int:
        return self.kv_heads[1] - self.kv_heads[0]

    # ---- the checkpoint table ------------------------------------------------------------------------
    def dim_sizes(self) -> dict[str, int]:
        c = self.cfg
        return {"hidden": c.hidden_size, "head_dim": c.head_dim, "q": c.num_heads * c.head_dim,
                "kv": c.num_kv_heads * c.head_dim, "inter": c.intermediate_size, "vocab": c.vocab_size}

    def model_table(self) -> dict[str, dict[str, Dims]]:
        return {k: v for k, v in MODEL.items() if k != "lm_head" or not self.cfg.tie_word_embeddings}

    def layer_table(self, i: int) -> dict[str, dict[str, Dims]]:
        """Layer ``i``'s weights, names relative to ``model.layers.{i}.``: only those this model has."""
        skip = set()
        if not (self.qkv_bias or self.cfg.attention_bias):
            skip.add("qkv_bias")
        if not (self.o_bias and self.cfg.attention_bias):
            skip.add("o_bias")
        if not self.qk_norm:
            skip |= {"q_norm", "k_norm"}
        return {field: names for field, names in LAYER.items() if field not in skip}

    def checkpoint_table(self) -> dict[str, Dims]:
        """Every tensor ``load`` reads, by full checkpoint name."""
        table = {n: d for names in self.model_table().values() for n, d in names.items()}
        for i in range(self.cfg.num_layers):
            p = f"model.layers.{i}."
            table.update({p + n: d for names in self.layer_table(i).values() for n, d in names.items()})
        return table

    def checkpoint_shapes(self) -> dict[str, list[int]]:
        """The whole checkpoint's shapes (what ``RandomCheckpoint`` makes)."""
        return table_shapes(self.checkpoint_table(), self.dim_sizes())

    # ---- loading -------------------------------------------------------------------------------------
    def read(self, ckpt: Checkpoint, name: str, dims: Dims) -> torch.Tensor:
        """One checkpoint tensor as stored (the tensor-parallel variant reads only this rank's slice)."""
        return ckpt.get(name)

    def fuse(self, ckpt: Checkpoint, tensors: dict[str, Dims]) -> torch.Tensor:
        """The tensors of one table entry, read, concatenated along dim 0, on the device in the model dtype."""
        parts = [self.read(ckpt, name, dims) for name, dims in tensors.items()]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).to(self.device, self.dtype).contiguous()

    def load(self, ckpt: Checkpoint) -> None:
        top = self.model_table()
        self.embed = self.fuse(ckpt, top["embed"])
        tied = "lm_head" not in top or "lm_head.weight" not in ckpt
        self.lm_head = self.embed if tied else self.fuse(ckpt, top["lm_head"])
        self.norm = self.fuse(ckpt, top["norm"])
        self.layers = [LayerWeights(**self.load_layer(ckpt, i)) for i in range(self.cfg.num_layers)]

    def load_layer(self, ckpt: Checkpoint, i: int) -> dict[str, torch.Tensor]:
        p = f"model.layers.{i}."
        return {field: self.fuse(ckpt, {p + n: d for n, d in names.items()})
                for field, names in self.layer_table(i).items()}

    # ---- forward -------------------------------------------------------------------------------------
    def forward(self, ids: torch.Tensor, positions: torch.Tensor, meta: AttnMeta, attn: Attention) -> torch.Tensor:
        """ids, positions: [T] (a step's new tokens, packed) -> final hidden states [T, H]."""
        T, D, eps = ids.shape[0], self.head_dim, self.cfg.rms_norm_eps
        nq, nkv = self.num_q_heads, self.num_kv_heads
        h = self.embed_tokens(ids)
        res = None  # residual stream; each add is fused into the following RMSNorm
        for i, w in enumerate(self.layers):
            x, res = add_rms_norm(h, res, w.ln1, eps)
            qkv = self.linear(x, w.qkv, w.qkv_bias)
            pages = attn.fused_write(i, qkv, meta)  # decode on the GPU: the norm+RoPE launch stores K/V too
            q, k, v = qk_norm_rope(qkv, w.q_norm, w.k_norm, self.rope, positions, nq, nkv, eps, pages)
            o = attn(i, q, k, v, meta, written=pages is not None)
            h = self.reduce(self.linear(o.reshape(T, nq * D), w.o))
            if w.o_bias is not None:  # after the reduce: added once, not once per rank
                h = h + w.o_bias
            x, res = add_rms_norm(h, res, w.ln2, eps)
            h = self.mlp(i, x, w)
        return add_rms_norm(h, res, self.norm, eps)[0]

    def mlp(self, i: int, x: torch.Tensor, w: LayerWeights) -> torch.Tensor:
        return self.reduce(self.linear(silu_mul(self.linear(x, w.gate_up)), w.down))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embed)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The output of a projection whose input features are split over ranks: complete on one device (the
        tensor-parallel variant sums the ranks' partial outputs here)."""
        return x

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, H] -> logits [B, vocab] in the model dtype (the sampler upcasts only the candidates it keeps: a
        full fp32 copy would cost a vocabulary-sized pass per step)."""
        return self.linear(hidden, self.lm_head)
