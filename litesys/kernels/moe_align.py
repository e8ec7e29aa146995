"""The expert-sorted, block-aligned (token, slot) order the fused MoE kernels (``kernels/moe.py``) read, as one
Triton launch for decode-sized batches (the torch twin, ``ref/moe_align.py``, is ~12 launches: at Qwen3-30B-A3B,
48 layers, that overhead was a tenth of a 128-sequence decode step).

Grid: one program per expert. Each scans every pair id twice: a histogram (all experts' counts, so each program
knows where its padded run starts) and then its own pairs in token order (a running cumsum: stable, as the twin's
sort). The scans cost O(pairs) per program, so prefill-sized batches keep the twin's sort.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.blocks import pdl_wait
from litesys.kernels.common import next_pow2, use_pdl, use_triton
from litesys.kernels.ref.moe_align import Alignment, align_block_size_torch, padded_capacity

__all__ = ["Alignment", "align_block_size", "padded_capacity"]

KERNEL_MAX_PAIRS = 8192  # above this many (token, slot) pairs the twin's sort is faster than E scans
CHUNK = 1024  # pair ids per scan step


@triton.jit
def _align_kernel(ids_ptr, sorted_ptr, block_expert_ptr, num_padded_ptr, n, cap, num_experts,
                  BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr, CHUNK: tl.constexpr, PDL: tl.constexpr):
    e = tl.program_id(0)
    pdl_wait(PDL)  # the ids are the router's output
    offs_e = tl.arange(0, BLOCK_E)
    offs = tl.arange(0, CHUNK)
    counts = tl.zeros([BLOCK_E], tl.int32)
    for start in range(0, n, CHUNK):
        ok = start + offs < n
        ids = tl.load(ids_ptr + start + offs, mask=ok, other=0).to(tl.int32)
        counts += tl.histogram(ids, BLOCK_E, mask=ok)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    pad_end = tl.cumsum(padded, 0)
    mine = offs_e == e
    my_count = tl.sum(tl.where(mine, counts, 0))
    my_end = tl.sum(tl.where(mine, pad_end, 0))
    my_pad = tl.sum(tl.where(mine, padded, 0))
    my_start = my_end - my_pad
    used = tl.sum(padded)
    # this expert's pairs, in token order, to the front of its run
    seen = 0
    for start in range(0, n, CHUNK):
        ok = start + offs < n
        hit = (tl.load(ids_ptr + start + offs, mask=ok, other=-1) == e) & ok
        rank = seen + tl.cumsum(hit.to(tl.int32), 0) - 1
        tl.store(sorted_ptr + my_start + rank, (start + offs).to(tl.int32), mask=hit)
        seen += tl.sum(hit.to(tl.int32))
    pad = tl.arange(0, BLOCK_M)  # the run's padding rows (< BLOCK_M of them)
    tl.store(sorted_ptr + my_start + my_count + pad, n, mask=my_count + pad < my_pad)
    for b0 in range(my_start // BLOCK_M, my_end // BLOCK_M, CHUNK):
        b = b0 + offs
        tl.store(block_expert_ptr + b, e, mask=b < my_end // BLOCK_M)
    if e == num_experts - 1:  # the rows and blocks past the last run: as the twin leaves them
        tl.store(num_padded_ptr, used)
        for r0 in range(used, cap, CHUNK):
            tl.store(sorted_ptr + r0 + offs, n, mask=r0 + offs < cap)
        for b0 in range(used // BLOCK_M, cap // BLOCK_M, CHUNK):
            tl.store(block_expert_ptr + b0 + offs, num_experts - 1, mask=b0 + offs < cap // BLOCK_M)


def align_block_size(topk_ids: torch.Tensor, num_experts: int, block_m: int, backend: str = "auto") -> Alignment:
    """Sort the pairs of ``topk_ids`` [T, k] by expert (stable: token order inside an expert) and pad each
    expert's run to a multiple of ``block_m`` so that every row block of the grouped GEMM has one expert."""
    n = topk_ids.numel()
    if not use_triton(topk_ids, backend) or n > KERNEL_MAX_PAIRS:
        return align_block_size_torch(topk_ids, num_experts, block_m)
    ids = topk_ids.reshape(-1).contiguous()
    cap = padded_capacity(n, num_experts, block_m)
    sorted_ids = torch.empty(cap, dtype=torch.int32, device=ids.device)
    block_expert = torch.empty(cap // block_m, dtype=torch.int32, device=ids.device)
    num_padded = torch.empty(1, dtype=torch.int32, device=ids.device)
    pdl = use_pdl(ids.device)
    _align_kernel[(num_experts,)](ids, sorted_ids, block_expert, num_padded, n, cap, num_experts,
                                  BLOCK_M=block_m, BLOCK_E=next_pow2(num_experts), CHUNK=CHUNK, PDL=pdl, num_warps=4,
                                  launch_pdl=pdl)
    return Alignment(sorted_ids, block_expert, num_padded, block_m)
