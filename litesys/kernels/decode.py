"""Host side of decode attention: workspace, split choice and kernel launches for both decode paths."""
from __future__ import annotations

import math
from dataclasses import replace

import torch

from litesys.kernels.common import (
    LOG2E,
    cdiv,
    choose_num_splits,
    dot_precision,
    fp8_compute_dtype,
    group_pad,
    num_sms,
)
from litesys.kernels.decode_logits import decode_logits
from litesys.kernels.decode_merge import decode_merge
from litesys.kernels.decode_softmax_v import softmax_v_split
from litesys.kernels.decode_split import decode_split, fp8_mma_fits, fp8_mma_group_pad
from litesys.kernels.launch import DECODE, DecodeConfig


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _compute_dtype(q: torch.Tensor, cache: torch.Tensor, scale: torch.Tensor | None) -> torch.dtype:
    """The dtype q and the K/V tiles meet in: the cache's, or fp16/fp32 for an fp8 cache (converted in registers)."""
    return cache.dtype if scale is None else fp8_compute_dtype(q.dtype)


def wave_splits(pairs: int, slots: int, max_splits: int, min_waves: int = 3) -> int:
    """Splits per (sequence, KV head) for ``pairs`` of them when the GPU runs ``slots`` programs at once: the count
    that minimises waves x work per program, ``ceil(pairs * s / slots) / s`` (a part-filled last wave costs about
    a full one), among the counts up to the first that gives ``min_waves`` waves (past that, more splits only add
    per-program and merge costs). Among equals, the fewest that give two waves or more (shorter programs even out
    ragged lengths; one wave of long programs waits for its longest), else the fewest. H200, Qwen3-8B heads: batch
    32 x 8K (256 pairs, 528 slots at 4 programs per SM) -> 4 (2 and 4 cost the same; 4 measured 181 us, 3: 208)."""
    limit = max(1, min(max_splits, cdiv(min_waves * slots, max(1, pairs))))
    costs = {s: cdiv(pairs * s, max(1, slots)) / s for s in range(1, limit + 1)}
    best = min(costs.values())
    equal = [s for s, c in costs.items() if c <= best * (1 + 1e-9)]
    return next((s for s in equal if cdiv(pairs * s, max(1, slots)) >= 2), equal[0])


def saturating_plan(pairs: int, sms: int, capacity: int, cfg: DecodeConfig) -> tuple[int, int]:
    """(splits, block_n) of the 16-bit fused decode for ``pairs`` (sequence, KV head) pairs on ``sms`` SMs with
    ``cfg.saturate_per_sm`` (launch.py): the fewest splits giving that many programs per SM (at most the table's
    blocks, ``capacity`` tokens); narrow tiles when those programs fit one wave of them but not of the wide ones."""
    limit = max(1, min(cfg.max_splits, cdiv(capacity, cfg.block_n)))
    splits = max(1, min(limit, cdiv(math.ceil(cfg.saturate_per_sm * sms), max(1, pairs))))
    programs = pairs * splits
    if cfg.narrow_block_n and cfg.resident_per_sm * sms < programs <= cfg.narrow_resident_per_sm * sms:
        return splits, cfg.narrow_block_n
    return splits, cfg.block_n


_COUNTERS: dict[torch.device, torch.Tensor] = {}


def merge_counter(device: torch.device, n: int) -> torch.Tensor:
    """The folded merge's int32 counters (``decode_merge.fold_merge``), at least ``n``: one zeroed buffer per
    device, made once and grown when a launch needs more (the kernels leave it zeroed: no memset per launch). The
    engine runs every graph bucket eagerly before capturing it, so a capture finds it large enough."""
    buf = _COUNTERS.get(device)
    if buf is None or buf.numel() < n:
        buf = _COUNTERS[device] = torch.zeros(max(n, 2 * (0 if buf is None else buf.numel())), dtype=torch.int32,
                                              device=device)
    return buf


def _workspace(batch: int, num_q_heads: int, head_dim: int, page_table: torch.Tensor, page_size: int,
               num_kv_heads: int, device: torch.device, cfg: DecodeConfig,
               resident_per_sm: int = 0, splits: int = 0) -> tuple[int, torch.Tensor | None, torch.Tensor | None]:
    """Number of splits and the partial (out, lse) buffers (None for one split: the kernel writes the output
    itself, no merge; else the merge is folded into the split launch or, ``cfg.fold_merge`` off, its own). From
    shapes only, never from the lengths. Fixed splits (``cfg.split_tokens``): enough of them for the table's
    capacity, and always through the merge (one code path whatever the batch).
    ``resident_per_sm > 0``: splits that fill whole waves of that many programs per SM (``wave_splits``);
    ``splits > 0``: that many (``saturating_plan``)."""
    capacity = max(1, page_table.shape[1] * page_size)
    if cfg.split_tokens:
        if cfg.split_tokens % cfg.block_n:
            raise ValueError(f"DecodeConfig.split_tokens ({cfg.split_tokens}) must be a multiple of block_n "
                             f"({cfg.block_n}, fp8 pages: fp8_block_n); pick a multiple")
        n_splits = cdiv(capacity, cfg.split_tokens)
    elif splits:
        if splits == 1:
            return 1, None, None
        n_splits = splits
    elif resident_per_sm:
        n_splits = wave_splits(batch * num_kv_heads, resident_per_sm * num_sms(device),
                               min(cfg.max_splits, cdiv(capacity, cfg.block_n)))
        if n_splits == 1:
            return 1, None, None
    else:
        n_splits = choose_num_splits(batch, num_kv_heads, capacity, device, cfg.programs_per_sm, cfg.max_splits,
                                     cfg.block_n)
        if n_splits == 1:
            return 1, None, None
    partial = torch.empty(batch, num_q_heads, n_splits, head_dim, dtype=torch.float32, device=device)
    lse = torch.empty(batch, num_q_heads, n_splits, dtype=torch.float32, device=device)
    return n_splits, partial, lse


def fused(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
          lengths: torch.Tensor, scale: float, cfg: DecodeConfig = DECODE, k_scale: torch.Tensor | None = None,
          v_scale: torch.Tensor | None = None, order: torch.Tensor | None = None) -> torch.Tensor:
    """Decode attention over the paged cache, one fused split launch (+ the merge): q [B, Hq, D] -> [B, Hq, D].
    ``order``: [B] int32 rows in the order their programs start (``step.longest_first``), or None (row order)."""
    b, hq, d = q.shape
    page_size, hkv = k_cache.shape[1], k_cache.shape[2]
    dtype = _compute_dtype(q, k_cache, k_scale)
    cfg = cfg if k_scale is None else cfg.for_fp8()
    out = torch.empty(b, hq, d, dtype=q.dtype if k_scale is not None else v_cache.dtype, device=q.device)
    if b == 0:
        return out
    # fp8 tensor cores for a 16-bit model (q read as it is, quantised in the kernel); an fp32 model keeps exact tiles
    fp8_mma = k_scale is not None and cfg.fp8_mma and dtype != torch.float32 and fp8_mma_fits(v_cache, cfg.block_n)
    q = _last_dim_contiguous(q)  # converted to dtype in the kernel (fp8 pages: fp16 or fp32)
    splits, resident = 0, 0 if k_scale is None else cfg.fp8_resident_per_sm  # fp8 pages: whole waves
    if k_scale is None and cfg.saturate_per_sm and not cfg.split_tokens:  # 16-bit pages: the saturating plan
        splits, block_n = saturating_plan(b * hkv, num_sms(q.device), page_table.shape[1] * page_size, cfg)
        cfg = replace(cfg, block_n=block_n)
    _, partial, lse = _workspace(b, hq, d, page_table, page_size, hkv, q.device, cfg, resident, splits)
    prefetch = 0 if k_scale is None else cfg.fp8_prefetch
    counter = merge_counter(q.device, b * hkv) if partial is not None and cfg.fold_merge else None
    decode_split(q, k_cache, v_cache, page_table, lengths, partial, lse, out, scale * LOG2E, cfg.block_n,
                 (fp8_mma_group_pad if fp8_mma else group_pad)(hq // hkv), dot_precision(dtype), cfg.num_warps,
                 cfg.num_stages, k_scale, v_scale, cfg.split_tokens, fp8_mma, prefetch, counter,
                 None if fp8_mma else dtype, order)
    if partial is not None and counter is None:
        decode_merge(partial, lse, lengths, out, cfg.block_n, cfg.merge_num_warps, cfg.split_tokens)
    return out


def logits(q: torch.Tensor, k_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor, scale: float,
           max_len: int, cfg: DecodeConfig = DECODE, k_scale: torch.Tensor | None = None) -> torch.Tensor:
    b, hq, _ = q.shape
    hkv = k_cache.shape[2]
    out = torch.empty(b, hq, max_len, dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out
    dtype = _compute_dtype(q, k_cache, k_scale)
    q = _last_dim_contiguous(q.to(dtype))
    decode_logits(q, k_cache, page_table, lengths, out, scale, cfg.logits_chunk, cfg.logits_block_n,
                  group_pad(hq // hkv), dot_precision(dtype), cfg.logits_num_warps, 1, k_scale)
    return out


def softmax_v(logits_: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
              cfg: DecodeConfig = DECODE, v_scale: torch.Tensor | None = None,
              out_dtype: torch.dtype | None = None) -> torch.Tensor:
    b, hq, _ = logits_.shape
    page_size, hkv, d = v_cache.shape[1], v_cache.shape[2], v_cache.shape[3]
    dtype = out_dtype or v_cache.dtype  # an fp8 cache needs out_dtype (the model's)
    out = torch.empty(b, hq, d, dtype=dtype, device=logits_.device)
    compute = dtype if v_scale is None else fp8_compute_dtype(dtype)
    cfg = cfg if v_scale is None else cfg.for_fp8()
    if b == 0:
        return out
    _, partial, lse = _workspace(b, hq, d, page_table, page_size, hkv, logits_.device, cfg)
    counter = merge_counter(logits_.device, b * hkv) if partial is not None and cfg.fold_merge else None
    softmax_v_split(logits_.float(), v_cache, page_table, lengths, partial, lse, out, cfg.block_n,
                    group_pad(hq // hkv), dot_precision(compute), cfg.num_warps, cfg.num_stages, v_scale,
                    compute == torch.float16, cfg.split_tokens, counter)
    if partial is not None and counter is None:
        decode_merge(partial, lse, lengths, out, cfg.block_n, cfg.merge_num_warps, cfg.split_tokens)
    return out
