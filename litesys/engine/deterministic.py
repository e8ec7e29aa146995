"""Deterministic mode (``EngineConfig.deterministic``): a sequence's numbers do not depend on its batch.

Three switches, made by the builder (docs/reproducibility.md): the model's projections become ``invariant_linear``
(tiles independent of the number of rows; Qwen3-MoE's experts: ``models.moe.invariant_experts``); decode attention
splits the KV cache in pieces of a fixed size (``kernels/ops_invariant.py``, on CPU its twin
``kernels/ref/ops_invariant.py``); and a recomputed sequence (one preempted when the swap space is full) replays its
generated positions through decode, as sparse methods do, so its K/V are the ones its decode steps wrote.
"""
from __future__ import annotations

from types import ModuleType

import torch

from litesys.attention.backend import select_ops
from litesys.engine.config import EngineConfig
from litesys.kernels.ref import ops_invariant as ref_ops_invariant
from litesys.kernels.ref import ops_torch
from litesys.models.qwen3_moe import Qwen3MoeForCausalLM


def attention_ops(device: torch.device, config: EngineConfig) -> ModuleType:
    """The attention ops module: ``select_ops``'s, or in deterministic mode its batch-invariant counterpart."""
    ops = select_ops(device, config.attention_backend)
    if not config.deterministic:
        return ops
    if ops is ops_torch:
        return ref_ops_invariant
    from litesys.kernels import ops_invariant  # Triton only where it can run

    return ops_invariant


def apply(config: EngineConfig, model, method) -> None:
    """Switch the model's GEMMs and the method's recompute path to the batch-invariant ones (deterministic only)."""
    if not config.deterministic:
        return
    from litesys.kernels.gemm_invariant import invariant_linear  # imports triton: only in deterministic mode

    model.linear = invariant_linear  # the router too
    if isinstance(model, Qwen3MoeForCausalLM):
        model.invariant = True  # fixed-tile experts, each token's expert outputs summed in its slot order
    method.needs_replay = True  # even dense: a recomputing prefill would reduce differently from decode
