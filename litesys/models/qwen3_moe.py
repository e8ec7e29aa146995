"""Qwen3-MoE executor: the Qwen3 layer stack with sparse MoE blocks in place of the MLP where the config says.

A layer is sparse unless it is in ``mlp_only_layers`` or ``(i + 1) % decoder_sparse_step != 0`` (as
transformers). Sparse layers keep their experts stacked -- ``gate_up`` [E, 2I, H] (gate rows then up rows)
and ``down`` [E, H, I] in the layer's LayerWeights -- and the router [E, H] in ``self.routers[i]``.
Tensor parallel: every rank holds all experts with a slice of each expert's intermediate dim and the full
router (routing is computed redundantly, identically on every rank); one all-reduce after the block.

Expert statistics for the benchmarks' memory floor (``track_experts``, or LITESYS_MOE_STATS=1 before the model
is built): decode steps count the distinct experts each sparse layer routes to, on the device (no sync, so
captured decode graphs keep counting); ``moe_weight_bytes_per_step`` turns that into routed bytes per step.
"""
from __future__ import annotations

import os

import torch

from litesys.attention.backend import Attention
from litesys.attention.meta import AttnMeta
from litesys.models.config import ModelConfig
from litesys.models.layers import Dist
from litesys.models.loader import Checkpoint
from litesys.models.moe import moe_experts, route
from litesys.models.qwen3 import LayerWeights, Qwen3ForCausalLM


def num_experts(raw: dict) -> int:
    # transformers 5 writes num_local_experts; hub configs (and 4.x) num_experts
    return int(raw.get("num_experts", raw.get("num_local_experts", 0)) or 0)


def sparse_layers(cfg: ModelConfig) -> list[bool]:
    """Per layer: MoE block (True) or dense MLP, exactly as transformers' Qwen3MoeDecoderLayer decides."""
    step = int(cfg.raw.get("decoder_sparse_step", 1) or 1)
    dense = set(cfg.raw.get("mlp_only_layers") or [])
    return [i not in dense and num_experts(cfg.raw) > 0 and (i + 1) % step == 0 for i in range(cfg.num_layers)]


class Qwen3MoeForCausalLM(Qwen3ForCausalLM):
    track_experts = os.environ.get("LITESYS_MOE_STATS") == "1"

    def __init__(self, cfg: ModelConfig, device: torch.device | str, dtype: torch.dtype, max_seq_len: int,
                 dist: Dist | None = None):
        super().__init__(cfg, device, dtype, max_seq_len, dist)
        raw = cfg.raw
        self.num_experts = num_experts(raw)
        self.top_k = int(raw.get("num_experts_per_tok", 1))
        self.norm_topk_prob = bool(raw.get("norm_topk_prob", False))
        self.moe_inter = int(raw.get("moe_intermediate_size", 0))
        self.sparse = sparse_layers(cfg)
        self.routers: dict[int, torch.Tensor] = {}
        self._count = False  # this forward counts routed experts (decode steps with tracking on)
        self.expert_hits = torch.zeros(cfg.num_layers, dtype=torch.int64, device=self.device)
        self.decode_steps = torch.zeros((), dtype=torch.int64, device=self.device)

    def load_mlp(self, ckpt: Checkpoint, i: int, inter: tuple[int, int]) -> dict:
        if not self.sparse[i]:
            return super().load_mlp(ckpt, i, inter)
        m = f"model.layers.{i}.mlp."
        self.routers[i] = ckpt.get(m + "gate.weight").to(self.device, self.dtype)
        s, e = self.dist.split(self.moe_inter, "moe_intermediate_size")
        if m + "experts.gate_up_proj" in ckpt:  # stacked (transformers 5 save_pretrained(save_original_format=False))
            return self._load_stacked(ckpt, m + "experts.", s, e)
        E, H, n = self.num_experts, self.cfg.hidden_size, e - s
        # Fill preallocated stacks expert by expert: never two copies of a layer's experts in memory.
        gate_up = torch.empty(E, 2 * n, H, dtype=self.dtype, device=self.device)
        down = torch.empty(E, H, n, dtype=self.dtype, device=self.device)
        for x in range(E):
            p = f"{m}experts.{x}."
            gate_up[x, :n].copy_(ckpt.get(p + "gate_proj.weight", 0, s, e))
            gate_up[x, n:].copy_(ckpt.get(p + "up_proj.weight", 0, s, e))
            down[x].copy_(ckpt.get(p + "down_proj.weight", 1, s, e))
        return dict(gate_up=gate_up, down=down)

    def _load_stacked(self, ckpt: Checkpoint, p: str, s: int, e: int) -> dict:
        n, dt, dev = self.moe_inter, self.dtype, self.device
        gate_up = torch.cat([ckpt.get(p + "gate_up_proj", 1, s, e), ckpt.get(p + "gate_up_proj", 1, n + s, n + e)],
                            dim=1)
        return dict(gate_up=gate_up.to(dev, dt).contiguous(), down=ckpt.get(p + "down_proj", 2, s, e).to(dev, dt))

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, meta: AttnMeta, attn: Attention) -> torch.Tensor:
        self._count = self.track_experts and not meta.is_prefill
        if self._count:
            self.decode_steps += 1
        return super().forward(ids, positions, meta, attn)

    def mlp(self, i: int, x: torch.Tensor, w: LayerWeights) -> torch.Tensor:
        if not self.sparse[i]:
            return super().mlp(i, x, w)
        weights, ids = route(x, self.routers[i], self.top_k, self.norm_topk_prob)
        if self._count:
            hit = torch.zeros(self.num_experts, dtype=torch.int64, device=x.device).index_fill_(0, ids.reshape(-1), 1)
            self.expert_hits[i] += hit.sum()
        return self.dist.all_reduce(moe_experts(x, w.gate_up, w.down, weights, ids))

    # ---- benchmark accounting ------------------------------------------------------------------------
    def moe_stacked_tensors(self) -> list[torch.Tensor]:
        """The stacked expert weights (a memory floor counts only the routed part of them)."""
        return [t for i, w in enumerate(self.layers) if self.sparse[i] for t in (w.gate_up, w.down)]

    def reset_expert_stats(self) -> None:
        self.expert_hits.zero_()
        self.decode_steps.zero_()

    def moe_weight_bytes_per_step(self) -> float:
        """Bytes a decode step reads for the MoE blocks: routers, plus the experts routed to (mean over the
        tracked decode steps; every expert when nothing was tracked)."""
        routers = sum(r.numel() * r.element_size() for r in self.routers.values())
        stacks = self.moe_stacked_tensors()
        if not stacks:
            return float(routers)
        per_expert = sum(t[0].numel() * t.element_size() for t in stacks[:2])  # one expert's gate_up + down
        steps = int(self.decode_steps.item())
        if steps == 0:
            return float(routers + sum(t.numel() * t.element_size() for t in stacks))
        return routers + int(self.expert_hits.sum().item()) / steps * per_expert
