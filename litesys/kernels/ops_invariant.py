"""GPU attention ops of deterministic mode: ``ops_triton`` with decode split into pieces of ``SPLIT_TOKENS`` tokens.

Same five functions and signatures. A sequence's decode reduction then depends on its length only, not on the
batch, the CUDA-graph bucket or the page table's width (``DecodeConfig.split_tokens``). Prefill is the varlen
kernel: each prompt's rows are reduced within that prompt alone, so packing does not change them, nor does
chunking (the paged variant folds a row's key blocks exactly as the whole prompt's prefill); a recomputed
sequence's generated positions are replayed through decode (engine/deterministic.py), not prefilled.
"""
from __future__ import annotations

import dataclasses

import torch

from litesys.kernels import decode
from litesys.kernels.launch import DECODE
from litesys.kernels.ops_triton import paged_prefill_attention, prefill_attention  # noqa: F401  (this module's interface)

SPLIT_TOKENS = 256  # a multiple of the fp8 block (128) too; 32K context = 128 splits per (sequence, KV head)
INVARIANT = dataclasses.replace(DECODE, split_tokens=SPLIT_TOKENS)


def paged_decode_logits(q: torch.Tensor, k_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
                        scale: float, max_len: int, k_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Raw logits fp32 [B, Hq, max_len] (each position's q·k is its own dot: already batch-invariant)."""
    return decode.logits(q, k_cache, page_table, lengths, scale, max_len, INVARIANT, k_scale=k_scale)


def paged_softmax_v(logits: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
                    v_scale: torch.Tensor | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """softmax(logits)·V [B, Hq, D], split in fixed pieces."""
    return decode.softmax_v(logits, v_cache, page_table, lengths, INVARIANT, v_scale=v_scale, out_dtype=out_dtype)


def paged_decode_fused(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                       lengths: torch.Tensor, scale: float, max_len: int | None = None,
                       k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
                       order: torch.Tensor | None = None) -> torch.Tensor:
    """Split-KV flash-decoding in fixed pieces; ``max_len`` is unused (``order``: as ``ops_triton``)."""
    return decode.fused(q, k_cache, v_cache, page_table, lengths, scale, INVARIANT, k_scale=k_scale, v_scale=v_scale,
                        order=order)
