"""The attention layer the executors call: writes K/V into pages, then prefill or decode attention.

Decode runs in two stages when logits processors are set (raw fp32 logits -> processors -> softmax·V),
or one fused stage otherwise. The stage functions come from an ops module: ``ops_torch`` (CPU, reference)
or the Triton kernels (GPU); both expose the same four functions.
"""
from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch

from litesys.attention.kv_cache import KVCache
from litesys.attention.meta import AttnMeta
from litesys.kernels.ref import ops_torch

# processor(logits [B, Hq, L] fp32, lengths [B], layer, meta) -> logits (may modify its fresh input in place)
LogitsProcessor = Callable[[torch.Tensor, torch.Tensor, int, AttnMeta], torch.Tensor]


def select_ops(device: torch.device, backend: str = "auto") -> ModuleType:
    """``torch`` on CPU; ``triton`` kernels on CUDA (falls back to torch when Triton is unavailable)."""
    if backend == "torch" or (backend == "auto" and device.type != "cuda"):
        return ops_torch
    try:
        from litesys.kernels import ops_triton
    except ImportError as e:  # pragma: no cover - depends on the install
        if backend == "triton":
            raise ImportError(f"attention backend 'triton' needs triton installed ({e})") from e
        return ops_torch
    return ops_triton


class Attention:
    def __init__(self, kv: KVCache, num_q_heads: int, num_kv_heads: int, head_dim: int, scale: float,
                 ops: ModuleType = ops_torch, processors: dict[int, list[LogitsProcessor]] | None = None,
                 selector=None):
        self.kv, self.ops = kv, ops
        self.num_q_heads, self.num_kv_heads, self.head_dim, self.scale = num_q_heads, num_kv_heads, head_dim, scale
        # layer -> processors applied to that layer's decode logits (empty: fused path)
        self.processors = processors or {}
        # optional block selector (Quest): picks pages per step; see attention/sparse
        self.selector = selector

    def __call__(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttnMeta) -> torch.Tensor:
        """q: [T, Hq, D], k/v: [T, Hkv, D] for the step's new tokens -> [T, Hq, D].

        An fp8 cache: every read dequantises with the layer's (K, V) scales (None, None otherwise), and prefill
        attends to the quantised K/V it stores, so a prompt sees the values its later decode steps read."""
        kv = self.kv
        ks, vs = kv.scales(layer)
        k_new = k
        if meta.is_prefill and kv.fp8:
            kv.calibrate(layer, k, v)  # the first prefill through this layer fixes its scales (unless given)
            k, v = kv.quantize(layer, k, v)
            kv.write_quantized(layer, k, v, meta.slot_mapping)
        else:
            kv.write(layer, k, v, meta.slot_mapping)
        if self.selector is not None:
            self.selector.on_write(layer, kv, k_new, meta)
        if meta.is_prefill:
            return self.ops.prefill_attention(q, k, v, meta.cu_seqlens, meta.max_seqlen, self.scale, ks, vs)
        kc, vc = kv.k[layer], kv.v[layer]
        if self.selector is not None and self.selector.active(layer):
            fp8 = {} if ks is None else dict(k_scale=ks, v_scale=vs)
            return self.selector.decode(layer, q, kc, vc, meta, self.scale, self.ops, **fp8)
        procs = self.processors.get(layer)
        if not procs:
            return self.ops.paged_decode_fused(q, kc, vc, meta.page_table, meta.lengths, self.scale, meta.max_len,
                                               ks, vs)
        logits = self.ops.paged_decode_logits(q, kc, meta.page_table, meta.lengths, self.scale, meta.max_len, ks)
        for proc in procs:
            logits = proc(logits, meta.lengths, layer, meta)
        return self.ops.paged_softmax_v(logits, vc, meta.page_table, meta.lengths, vs, None if vs is None else q.dtype)
