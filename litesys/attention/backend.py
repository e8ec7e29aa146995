"""The attention layer the executors call: writes K/V into pages, then prefill or the sparse method's decode.

Prefill is always dense. Decode is the method's (``attention/sparse/base.py``): dense fused, raw logits ->
processors -> softmax·V, or page selection. The stage functions come from an ops module: ``ops_torch`` (CPU,
reference) or the Triton kernels (GPU); both expose the same five functions.
"""
from __future__ import annotations

from types import ModuleType

import torch

from litesys.attention.kv_cache import KVCache
from litesys.attention.meta import AttnMeta
from litesys.attention.sparse.base import DenseMethod, SparseMethod
from litesys.kernels.common import use_triton
from litesys.kernels.norm_rope import KVPages, fuses_kv_write
from litesys.kernels.ref import ops_torch


def select_ops(device: torch.device, backend: str = "auto") -> ModuleType:
    """``torch`` on CPU; ``triton`` kernels on CUDA (falls back to torch when Triton is unavailable)."""
    if not use_triton(device, backend):
        return ops_torch
    from litesys.kernels import ops_triton  # Triton only where it can run

    return ops_triton


class Attention:
    def __init__(self, kv: KVCache, num_q_heads: int, num_kv_heads: int, head_dim: int, scale: float,
                 ops: ModuleType = ops_torch, method: SparseMethod | None = None):
        self.kv, self.ops = kv, ops
        self.num_q_heads, self.num_kv_heads, self.head_dim, self.scale = num_q_heads, num_kv_heads, head_dim, scale
        self.method = method or DenseMethod()  # the decode attention (sparse.build)

    def fused_write(self, layer: int, qkv: torch.Tensor, meta: AttnMeta) -> KVPages | None:
        """Where the q/k norm+RoPE launch can store a decode step's new K/V itself (``norm_rope.KVPages``; one
        launch fewer per layer, as ``KVCache.write`` stores them), else None (prefill: fp8 scales may still be
        calibrated; CPU: the torch twins)."""
        if meta.is_prefill or not fuses_kv_write(qkv, self.head_dim):
            return None
        return KVPages(self.kv.k[layer], self.kv.v[layer], meta.slot_mapping, *self.kv.scales(layer))

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttnMeta,
                 written: bool = False) -> torch.Tensor:
        """q: [T, Hq, D], k/v: [T, Hkv, D] for the step's new tokens -> [T, Hq, D]; ``written``: K/V are in the
        pages already (``fused_write``).

        An fp8 cache: every read dequantises with the layer's (K, V) scales (None, None otherwise), and prefill
        attends to the quantised K/V it stores, so a prompt sees the values its later decode steps read."""
        kv = self.kv
        k_new = k
        if meta.is_prefill and kv.fp8:
            kv.calibrate(layer, k, v)  # the first prefill through this layer fixes its scales (unless given)
            k, v = kv.quantize(layer, k, v)
            kv.write_quantized(layer, k, v, meta.slot_mapping)
        elif not written:
            kv.write(layer, k, v, meta.slot_mapping)
        self.method.on_write(layer, kv, k_new, meta)
        if meta.is_prefill:
            ks, vs = kv.scales(layer)
            if meta.page_table is not None:  # chunks after cached pages / earlier chunks: over their pages
                return self.ops.paged_prefill_attention(q, kv.k[layer], kv.v[layer], meta.cu_seqlens, meta.page_table,
                                                        meta.lengths, meta.max_seqlen, self.scale, ks, vs)
            return self.ops.prefill_attention(q, k, v, meta.cu_seqlens, meta.max_seqlen, self.scale, ks, vs)
        return self.method.decode(layer, q, kv, meta, self.ops, self.scale)
