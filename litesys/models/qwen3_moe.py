"""Qwen3-MoE executor: the Qwen3 layer stack with sparse MoE blocks in place of the MLP where the config says.

A layer is sparse unless it is in ``mlp_only_layers`` or ``(i + 1) % decoder_sparse_step != 0`` (as
transformers). Sparse layers keep their experts stacked -- ``gate_up`` [E, 2I, H] (gate rows then up rows)
and ``down`` [E, H, I] in the layer's LayerWeights -- and the router [E, H] in ``self.routers[i]``.
Tensor parallel (``qwen3_moe_dist.py``): every rank holds all experts with a slice of each expert's
intermediate dim and the full router (routing is computed redundantly, identically on every rank); the block's
output is one ``reduce``. ``route`` is a method so that a benchmark can observe the routing
(``benchmarks/moe_stats.py``).
"""
from __future__ import annotations

import torch

from litesys.models.config import ModelConfig
from litesys.models.loader import Checkpoint, Dims
from litesys.models.moe import invariant_experts, moe_experts, route
from litesys.models.qwen3 import LayerWeights, Qwen3ForCausalLM

ROUTER: dict[str, Dims] = {"mlp.gate.weight": ("experts", "hidden")}
EXPERT: dict[str, Dims] = {"gate_proj.weight": ("moe_inter", "hidden"), "up_proj.weight": ("moe_inter", "hidden"),
                           "down_proj.weight": ("hidden", "moe_inter")}  # per expert, under mlp.experts.{x}.
# transformers 5's own layout (save_pretrained(save_original_format=False)): every expert in one tensor
STACKED: dict[str, Dims] = {"gate_up_proj": ("experts", ("moe_inter", "moe_inter"), "hidden"),
                            "down_proj": ("experts", "hidden", "moe_inter")}


def num_experts(raw: dict) -> int:
    # transformers 5 writes num_local_experts; hub configs (and 4.x) num_experts
    return int(raw.get("num_experts", raw.get("num_local_experts", 0)) or 0)


def sparse_layers(cfg: ModelConfig) -> list[bool]:
    """Per layer: MoE block (True) or dense MLP, exactly as transformers' Qwen3MoeDecoderLayer decides."""
    step = int(cfg.raw.get("decoder_sparse_step", 1) or 1)
    dense = set(cfg.raw.get("mlp_only_layers") or [])
    return [i not in dense and num_experts(cfg.raw) > 0 and (i + 1) % step == 0 for i in range(cfg.num_layers)]


class Qwen3MoeForCausalLM(Qwen3ForCausalLM):
    invariant = False  # deterministic mode (engine/deterministic.py): batch-invariant experts and routing sums
    per_slot_to_norm = True  # experts' slot sum left to the next add+RMSNorm (tensor parallel: summed before reduce)

    def __init__(self, cfg: ModelConfig, device: torch.device | str, dtype: torch.dtype, max_seq_len: int):
        super().__init__(cfg, device, dtype, max_seq_len)
        raw = cfg.raw
        self.num_experts = num_experts(raw)
        self.top_k = int(raw.get("num_experts_per_tok", 1))
        self.norm_topk_prob = bool(raw.get("norm_topk_prob", False))
        self.moe_inter = int(raw.get("moe_intermediate_size", 0))
        self.sparse = sparse_layers(cfg)
        self.routers: dict[int, torch.Tensor] = {}

    # ---- the checkpoint table ------------------------------------------------------------------------
    def dim_sizes(self) -> dict[str, int]:
        return {**super().dim_sizes(), "experts": self.num_experts, "moe_inter": self.moe_inter}

    def layer_table(self, i: int) -> dict[str, dict[str, Dims]]:
        table = super().layer_table(i)
        if self.sparse[i]:  # the experts are read apart (stacked at load); the router with the rest
            del table["gate_up"], table["down"]
            table["router"] = ROUTER
        return table

    def checkpoint_table(self) -> dict[str, Dims]:
        table = super().checkpoint_table()
        for i in range(self.cfg.num_layers):
            if self.sparse[i]:
                table.update({f"model.layers.{i}.mlp.experts.{x}.{n}": d
                              for x in range(self.num_experts) for n, d in EXPERT.items()})
        return table

    # ---- loading -------------------------------------------------------------------------------------
    def load_layer(self, ckpt: Checkpoint, i: int) -> dict[str, torch.Tensor]:
        w = super().load_layer(ckpt, i)
        if self.sparse[i]:
            self.routers[i] = w.pop("router")
            w.update(self.load_experts(ckpt, f"model.layers.{i}.mlp.experts."))
        return w

    def load_experts(self, ckpt: Checkpoint, p: str) -> dict[str, torch.Tensor]:
        dt, dev = self.dtype, self.device
        if p + "gate_up_proj" in ckpt:
            return {f: self.read(ckpt, p + n, d).to(dev, dt).contiguous()
                    for f, (n, d) in zip(("gate_up", "down"), STACKED.items())}
        gate_up = down = None
        for x in range(self.num_experts):
            g, u, d = (self.read(ckpt, f"{p}{x}.{n}", dims) for n, dims in EXPERT.items())
            if gate_up is None:  # fill preallocated stacks expert by expert: never two copies of a layer's experts
                n = g.shape[0]
                gate_up = torch.empty(self.num_experts, 2 * n, g.shape[1], dtype=dt, device=dev)
                down = torch.empty(self.num_experts, *d.shape, dtype=dt, device=dev)
            gate_up[x, :n].copy_(g)
            gate_up[x, n:].copy_(u)
            down[x].copy_(d)
        return dict(gate_up=gate_up, down=down)

    # ---- forward -------------------------------------------------------------------------------------
    def mlp(self, i: int, x: torch.Tensor, w: LayerWeights) -> torch.Tensor:
        if not self.sparse[i]:
            return super().mlp(i, x, w)
        weights, ids = self.route(i, x)
        if self.invariant:
            return self.reduce(invariant_experts(x, w.gate_up, w.down, weights, ids))
        # the k expert outputs of a token go unsummed to the next add+RMSNorm, which sums them (single device)
        return self.reduce(moe_experts(x, w.gate_up, w.down, weights, ids, per_slot=self.per_slot_to_norm))

    def route(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``i``'s routing: (weights [T, k], expert ids [T, k]); the router GEMM is ``self.linear``."""
        return route(x, self.routers[i], self.top_k, self.norm_topk_prob, self.linear, self.invariant)
