"""Launch parameters of the attention kernels (tuned on an H100 with ``benchmarks/bench_attention.py``)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class DecodeConfig:
    programs_per_sm: int = 8  # split sequences until the grid has this many (sequence, head, split) programs/SM
    max_splits: int = 64  # upper bound on splits per sequence (merge cost, workspace)
    block_n: int = 64  # KV rows per inner iteration (split kernels)
    num_warps: int = 4
    num_stages: int = 2
    logits_chunk: int = 128  # positions per program of the logits kernel
    logits_block_n: int = 64
    logits_num_warps: int = 4
    merge_num_warps: int = 4
    # several splits: True = the last split program of each (sequence, KV head) merges them in the same launch (fused
    # and softmax·V paths, ``decode_merge.fold_merge``; bit for bit the merge kernel's output) instead of a second
    # launch. Off: on the H200 it was slower at every measured shape (results/h200_decode_merge_fold.json: 1-20 us per
    # call, more with more heads per group and splits; e.g. fp8 128 x 1000 Qwen3-30B-A3B heads 56.8 vs 51.3 us): that
    # program merges its G heads one after another at the end, where the merge kernel has one program per head
    fold_merge: bool = False
    # fp8 pages: KV rows per iteration (None: block_n). Half the bytes per row, so twice the rows keep as many bytes
    # in flight (H200, batch 32 x 8K, Qwen3-8B heads: 128 rows 17% faster than 64)
    fp8_block_n: int | None = None
    # fp8 pages: pipeline stages (None: num_stages). Transposed V pages need no fp16 staging; with 3 stages the
    # compiled kernel needs fewer registers (Triton 3.6, sm_90: 121 vs 154), so 4 programs fit an SM instead of 3
    fp8_num_stages: int | None = None
    # fp8 pages, fused kernel: programs one SM holds at once (H200/H100, transposed V pages, 3 stages: 121 registers
    # x 128 threads and 41 KB of shared memory each -> 4; token-major V pages: 168 registers, 72 KB -> 3). > 0: splits
    # chosen to fill whole waves of that many (``decode.wave_splits``): at batch 32 x 8K, Qwen3-8B heads, 4 programs
    # per SM, 3 splits (1.5 waves) ran 208 us, 4 splits (1.9 waves) 181 us. 0: programs_per_sm
    fp8_resident_per_sm: int = 0
    # 16-bit pages, fused kernel, > 0 (``decode.saturating_plan``; 0: programs_per_sm): the fewest splits that give
    # this many programs per SM, enough to saturate the bandwidth; more splits only add merge and per-program work.
    # H200 sweep of (block_n, splits) at 15 shapes (results/h200_session5.json, ``bn_sweep``): at 512 (sequence, KV
    # head) pairs one split beats the two of session 4's whole-wave rule by 8-15% (Qwen3-30B-A3B 128 x 1000: 68 vs
    # 80 us), at 256 two beat five; measured saturation between 2 and 2.5 programs per SM of 64-row tiles
    saturate_per_sm: float = 0.0
    # ... and when those programs overflow one wave of block_n tiles (resident_per_sm: the compiled kernel's
    # occupancy, 103-107 registers -> 4 per SM) but fit one wave of narrow_block_n tiles (narrow_resident_per_sm:
    # 70-72 registers -> 7), the narrow tiles: 96 x 8 Qwen3-8B heads x 1500, 32 rows 142 us, 64 rows 161 (0: off)
    resident_per_sm: int = 0
    narrow_block_n: int = 0
    narrow_resident_per_sm: int = 0
    # fp8 pages, fused kernel, 16-bit models: both products on e4m3 tensor cores, q and P as two e4m3 terms
    # (``blocks_fp8``), instead of converting every K/V value to fp16 in registers. Off by default: on the H200, with
    # 16 query rows, it measured the same as the converting kernel (32 x 8K Qwen3-8B heads 178.5 vs 183.3 us, 64 x 4K
    # Qwen3-0.6B 183.5 vs 181.7 us); the 8-row group it now uses is not measured yet (docs/kv_fp8.md)
    fp8_mma: bool = False
    # fp8 pages, fused kernel: > 0 = each block first prefetches into L2 the K/V lines of the block this many blocks
    # ahead. Shared memory caps the bytes a program's pipelined loads hold in flight (Triton 3.6: one or two K/V
    # buffers), prefetches do not count against it. Not measured yet (docs/kv_fp8.md); 0: none
    fp8_prefetch: int = 0
    # > 0: pieces of this many tokens (a multiple of block_n) instead of a split count chosen from the batch, so a
    # sequence's reduction order depends on its length only (deterministic mode, docs/reproducibility.md)
    split_tokens: int = 0

    def for_fp8(self) -> DecodeConfig:
        return replace(self, block_n=self.fp8_block_n or self.block_n,
                       num_stages=self.fp8_num_stages or self.num_stages)


@dataclass(frozen=True)
class PrefillConfig:
    block_m: int = 128
    block_n: int = 64
    num_warps: int = 8
    num_stages: int = 3


DECODE = DecodeConfig(resident_per_sm=4, saturate_per_sm=2.5, narrow_block_n=32, narrow_resident_per_sm=7,
                      fp8_block_n=128, fp8_num_stages=3, fp8_resident_per_sm=4)


def prefill_config(head_dim: int, dtype: torch.dtype) -> PrefillConfig:
    # fp32 tiles are twice as large: halve them to stay inside shared memory
    if dtype == torch.float32:
        return PrefillConfig(block_m=64, block_n=32, num_warps=4, num_stages=2)
    if head_dim > 128:
        return PrefillConfig(block_m=64, block_n=32, num_warps=4, num_stages=2)
    if head_dim <= 64:
        return PrefillConfig(block_m=128, block_n=64, num_warps=4, num_stages=3)
    return PrefillConfig()
