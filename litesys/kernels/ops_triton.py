"""GPU attention ops: the five functions of ``ops_torch`` with the same signatures, backed by Triton kernels.

FP8 caches pass ``k_scale``/``v_scale`` [Hkv] fp32 (per layer); K/V are dequantised in registers.

Decode calls are CUDA-graph safe: grids and workspaces depend only on tensor shapes (batch, heads, the page
table's width), never on per-step lengths, and nothing synchronizes with the host.
"""
from __future__ import annotations

import torch

from litesys.kernels import decode
from litesys.kernels.common import LOG2E, dot_precision, fp8_compute_dtype
from litesys.kernels.launch import prefill_config
from litesys.kernels.prefill import prefill


def paged_decode_logits(
    q: torch.Tensor, k_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
    scale: float, max_len: int, k_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Raw attention logits ``q·k * scale`` as fp32 ``[B, Hq, max_len]``, ``-inf`` at positions >= length."""
    return decode.logits(q, k_cache, page_table, lengths, scale, max_len, k_scale=k_scale)


def paged_softmax_v(
    logits: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
    v_scale: torch.Tensor | None = None, out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """softmax(logits)·V -> ``[B, Hq, D]`` in the cache dtype (``out_dtype`` if given); positions >= length are
    not read."""
    return decode.softmax_v(logits, v_cache, page_table, lengths, v_scale=v_scale, out_dtype=out_dtype)


def paged_decode_fused(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
    lengths: torch.Tensor, scale: float, max_len: int | None = None,
    k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None, order: torch.Tensor | None = None,
) -> torch.Tensor:
    """Split-KV flash-decoding; ``max_len`` is unused (the grid follows the page table's capacity); ``order``: the
    rows in the order their programs start (``AttnMeta.order``)."""
    return decode.fused(q, k_cache, v_cache, page_table, lengths, scale, k_scale=k_scale, v_scale=v_scale,
                        order=order)


def prefill_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
    scale: float, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention within each packed prompt. q: [T, Hq, D]; k, v: [T, Hkv, D] -> [T, Hq, D]; fp8 k/v with
    their scales are dequantised in registers."""
    out = torch.empty_like(q)
    if q.shape[0] == 0:
        return out
    if max_seqlen <= 0:  # unknown: one host sync (prefill is not graph-captured)
        max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    if k_scale is None:
        k, v = k.to(q.dtype), v.to(q.dtype)
    else:  # fp8 k/v meet q in fp16 (16-bit models) or fp32; out stays in the model dtype
        q = q.to(fp8_compute_dtype(q.dtype))
    cfg = prefill_config(q.shape[2], q.dtype)
    prefill(q, k, v, cu_seqlens, max_seqlen, out, scale * LOG2E, cfg.block_m, cfg.block_n, dot_precision(q.dtype),
            cfg.num_warps, cfg.num_stages, k_scale, v_scale)
    return out


def paged_prefill_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cu_seqlens: torch.Tensor,
    page_table: torch.Tensor, lengths: torch.Tensor, max_seqlen: int, scale: float,
    k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of packed chunks over their sequences' pages (chunk ``b``: the last rows of its
    ``lengths[b]`` positions, its K/V already written) -> [T, Hq, D]; the varlen kernel's rows bit for bit."""
    out = torch.empty_like(q)
    if q.shape[0] == 0:
        return out
    q = q if q.stride(-1) == 1 else q.contiguous()
    if k_scale is not None:  # as prefill_attention: fp8 pages meet q in fp16 (16-bit models) or fp32
        q = q.to(fp8_compute_dtype(q.dtype))
    cfg = prefill_config(q.shape[2], q.dtype)
    prefill(q, k_cache, v_cache, cu_seqlens, max_seqlen, out, scale * LOG2E, cfg.block_m, cfg.block_n,
            dot_precision(q.dtype), cfg.num_warps, cfg.num_stages, k_scale, v_scale, page_table, lengths)
    return out
