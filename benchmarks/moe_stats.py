"""Routed-expert accounting for the benchmarks' MoE memory floor, kept out of the model.

A decode step reads only the experts its batch routes to. ``ExpertStats.install()`` -- called before the
``LLM`` is built, so that its CUDA graphs are captured with the counting in them -- wraps the Qwen3-MoE
executor's ``forward`` and ``route``: decode steps count, per sparse layer, the distinct experts routed to, on the
device (no host sync: captured graphs keep counting). ``ExpertStats.of(model)`` then gives that model's
counters, ``weight_bytes_per_step()`` turns them into routers + mean routed expert bytes per step.
The counting itself is a few small kernels per MoE layer and step: a timed run sets ``enabled = False`` (and
captures its graphs after that), taking its counts from an identical run before it (benchmarks/throughput.py).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from litesys.models.qwen3_moe import Qwen3MoeForCausalLM


class ExpertStats:
    def __init__(self, model: Qwen3MoeForCausalLM):
        self.model = model
        self.counting = False  # this forward is a decode step: count its routed experts
        self.enabled = True  # off: count nothing (graphs captured while off hold no counting kernels)
        self.expert_hits = torch.zeros(model.cfg.num_layers, dtype=torch.int64, device=model.device)
        self.decode_steps = torch.zeros((), dtype=torch.int64, device=model.device)

    @staticmethod
    def install(cls: type = Qwen3MoeForCausalLM) -> Callable[[], None]:
        """Count in every ``cls`` model built from now on; returns the function that stops it (for tests)."""
        load, forward, route = cls.load, cls.forward, cls.route

        def load_counted(self, ckpt):
            load(self, ckpt)
            self.expert_stats = ExpertStats(self)

        def forward_counted(self, ids, positions, meta, attn):
            stats = self.expert_stats
            stats.counting = stats.enabled and not meta.is_prefill
            if stats.counting:
                stats.decode_steps += 1
            return forward(self, ids, positions, meta, attn)

        def route_counted(self, i, x):
            weights, ids = route(self, i, x)
            stats = self.expert_stats
            if stats.counting:
                hit = torch.zeros(self.num_experts, dtype=torch.int64, device=x.device)
                stats.expert_hits[i] += hit.index_fill_(0, ids.reshape(-1), 1).sum()
            return weights, ids

        cls.load, cls.forward, cls.route = load_counted, forward_counted, route_counted

        def uninstall() -> None:
            cls.load, cls.forward, cls.route = load, forward, route
        return uninstall

    @staticmethod
    def of(model) -> ExpertStats | None:
        """The counters of ``model`` (None: not an MoE model, or built before ``install``)."""
        return getattr(model, "expert_stats", None)

    def stacked_tensors(self) -> list[torch.Tensor]:
        """The stacked expert weights (a memory floor counts only the routed part of them)."""
        m = self.model
        return [t for i, w in enumerate(m.layers) if m.sparse[i] for t in (w.gate_up, w.down)]

    def reset(self) -> None:
        self.expert_hits.zero_()
        self.decode_steps.zero_()

    def weight_bytes_per_step(self) -> float:
        """Bytes a decode step reads for the MoE blocks: routers, plus the experts routed to (mean over the
        counted decode steps; every expert when nothing was counted)."""
        routers = sum(r.numel() * r.element_size() for r in self.model.routers.values())
        stacks = self.stacked_tensors()
        if not stacks:
            return float(routers)
        per_expert = sum(t[0].numel() * t.element_size() for t in stacks[:2])  # one expert's gate_up + down
        steps = int(self.decode_steps.item())
        if steps == 0:
            return float(routers + sum(t.numel() * t.element_size() for t in stacks))
        return routers + int(self.expert_hits.sum().item()) / steps * per_expert
