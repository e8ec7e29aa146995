"""The expert-sorted, block-aligned (token, slot) order the fused MoE kernels read, in PyTorch: the format's
definition and the twin of the Triton kernel in ``kernels/moe_align.py`` (also its path for prefill-sized batches).

On the device, no host sync, shapes fixed by the token count: a decode step that calls it can be graph-captured.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from litesys.kernels.common import cdiv


@dataclass
class Alignment:
    """The (token, slot) pairs ``p = t * k + j`` grouped by expert, each group padded to ``block_m`` rows.

    sorted_ids [cap]: pair index per row; padding rows hold ``num_pairs`` (out of range, masked in the kernel).
    block_expert [cap // block_m]: the expert of each row block (blocks past ``num_padded`` are never read).
    num_padded [1]: rows in use; the kernel grid covers ``cap`` rows and the unused blocks exit at once.
    """

    sorted_ids: torch.Tensor
    block_expert: torch.Tensor
    num_padded: torch.Tensor
    block_m: int

    @property
    def num_blocks(self) -> int:
        return self.block_expert.shape[0]


def padded_capacity(num_pairs: int, num_experts: int, block_m: int) -> int:
    """Rows the padded order can need: at most min(pairs, experts) groups, each padded by < block_m rows."""
    cap = num_pairs + min(num_pairs, num_experts) * (block_m - 1)
    return cdiv(cap, block_m) * block_m


def align_block_size_torch(topk_ids: torch.Tensor, num_experts: int, block_m: int) -> Alignment:
    """Sort the pairs of ``topk_ids`` [T, k] by expert (stable: token order inside an expert) and pad each
    expert's run to a multiple of ``block_m`` so that every row block of the grouped GEMM has one expert."""
    flat = topk_ids.reshape(-1)
    n, dev = flat.numel(), flat.device
    counts = torch.zeros(num_experts, dtype=torch.int64, device=dev)
    counts.scatter_add_(0, flat, torch.ones_like(flat))  # bincount would sync to size its output
    padded = cdiv(counts, block_m) * block_m
    pad_end = torch.cumsum(padded, 0)  # end row of each expert's padded run
    pad_start = pad_end - padded
    cnt_start = torch.cumsum(counts, 0) - counts  # where each expert's pairs start in the unpadded sort
    experts, order = torch.sort(flat, stable=True)
    rank = torch.arange(n, device=dev) - cnt_start[experts]  # position inside the expert's run
    cap = padded_capacity(n, num_experts, block_m)
    sorted_ids = torch.full((cap,), n, dtype=torch.int32, device=dev)
    sorted_ids[pad_start[experts] + rank] = order.to(torch.int32)
    block_rows = torch.arange(0, cap, block_m, device=dev)
    # the expert whose padded run holds each block's first row; clamp for blocks past the end (unused)
    block_expert = torch.searchsorted(pad_end, block_rows, right=True).clamp_(max=num_experts - 1)
    return Alignment(sorted_ids, block_expert.to(torch.int32), pad_end[-1:].to(torch.int32), block_m)
