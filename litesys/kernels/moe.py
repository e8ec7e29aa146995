"""Fused MoE experts in Triton: a grouped GEMM over the expert-sorted (token, slot) pairs (``moe_align.py``), gate_up
+ SiLU·mul then down + routing weight, or one row block per pair for decode-sized batches ("pair mode", no sort).

Twin: ``ref/moe.py``; design: docs/moe.md."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from litesys.kernels.blocks import mma, pdl_wait
from litesys.kernels.common import cdiv, dot_precision, use_pdl
from litesys.kernels.moe_align import Alignment, align_block_size
from litesys.kernels.ref.moe import sum_slots


@dataclass(frozen=True)
class MoeKernelConfig:
    block_m: int = 64
    block_n: int = 64
    block_k: int = 64
    num_warps: int = 4
    num_stages: int = 3
    pair_mode: bool = False  # one row block per (token, slot) pair, no sort


def pick_config(num_pairs: int, num_experts: int, dtype: torch.dtype, pair_max: int = 32) -> MoeKernelConfig:
    """Tile sizes from the pair count only (a fixed choice per batch size keeps CUDA-graph replays valid).

    ``pair_max``: up to this many pairs the sort-free pair mode runs (decode: tokens * top_k small).
    """
    if dtype == torch.float32:  # fp32 (CPU interpreter tests): smaller tiles keep registers sane
        return MoeKernelConfig(16, 32, 32, 4, 2, pair_mode=num_pairs <= pair_max)
    if num_pairs <= pair_max:
        return MoeKernelConfig(16, 64, 128, 4, 4, pair_mode=True)
    per_expert = num_pairs / num_experts
    if per_expert <= 16:
        return MoeKernelConfig(16, 64, 128, 4, 4)
    if per_expert <= 64:
        return MoeKernelConfig(32, 64, 128, 4, 4)
    return MoeKernelConfig(64, 128, 64, 8, 4)


def invariant_config(dtype: torch.dtype) -> MoeKernelConfig:
    """Deterministic mode: one tile shape per dtype, never chosen from the pair count, and always the sorted
    grouped GEMM: a row's products and K steps are then the same whoever shares its expert's row blocks."""
    if dtype == torch.float32:
        return MoeKernelConfig(16, 32, 32, 4, 2)
    return MoeKernelConfig(16, 64, 128, 4, 4)


@triton.jit
def _row_block(pid_m, sorted_ids_ptr, block_expert_ptr, num_padded_ptr, topk_ids_ptr, num_pairs,
               BLOCK_M: tl.constexpr, PAIR_MODE: tl.constexpr):
    """(pair index per row, row mask, expert, block in use) of row block ``pid_m``."""
    offs = tl.arange(0, BLOCK_M)
    if PAIR_MODE:
        pair = tl.where(offs == 0, pid_m, num_pairs)
        expert = tl.load(topk_ids_ptr + pid_m).to(tl.int64)
        active = pid_m < num_pairs
    else:
        pair = tl.load(sorted_ids_ptr + pid_m * BLOCK_M + offs)
        expert = tl.load(block_expert_ptr + pid_m).to(tl.int64)
        active = pid_m * BLOCK_M < tl.load(num_padded_ptr)
    return pair, pair < num_pairs, expert, active


@triton.jit
def _gate_up_kernel(
    x_ptr, w_ptr, out_ptr, sorted_ids_ptr, block_expert_ptr, num_padded_ptr, topk_ids_ptr,
    num_pairs, K, N,
    stride_xt, stride_we, stride_wn, stride_ot,
    TOP_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    EVEN_K: tl.constexpr, PAIR_MODE: tl.constexpr, DOT_PREC: tl.constexpr, PDL: tl.constexpr,
):
    """out[pair, n] = silu(x[tok] · w[e, n]) * (x[tok] · w[e, N + n]) for this block's pairs (w: [E, 2N, K])."""
    pid_n = tl.program_id(0)  # fastest: a block's column tiles run together and share its rows in L2
    pid_m = tl.program_id(1)
    pdl_wait(PDL)  # the alignment (or the router's ids) is the previous kernel's output
    pair, row_ok, expert, active = _row_block(pid_m, sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
                                              topk_ids_ptr, num_pairs, BLOCK_M, PAIR_MODE)
    if active:
        tok = (pair // TOP_K).to(tl.int64)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        n_ok = offs_n < N
        a_ptrs = x_ptr + tok[:, None] * stride_xt + offs_k[None, :]
        g_ptrs = w_ptr + expert * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
        u_ptrs = g_ptrs + N * stride_wn
        acc_g = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        acc_u = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            if EVEN_K:
                a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
                g = tl.load(g_ptrs, mask=n_ok[None, :], other=0.0)
                u = tl.load(u_ptrs, mask=n_ok[None, :], other=0.0)
            else:
                k_ok = offs_k < K - k0
                a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                g = tl.load(g_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
                u = tl.load(u_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc_g = acc_g + mma(a, g, DOT_PREC)
            acc_u = acc_u + mma(a, u, DOT_PREC)
            a_ptrs += BLOCK_K
            g_ptrs += BLOCK_K
            u_ptrs += BLOCK_K
        act = acc_g / (1.0 + tl.exp(-acc_g)) * acc_u
        o_ptrs = out_ptr + pair[:, None].to(tl.int64) * stride_ot + offs_n[None, :]
        tl.store(o_ptrs, act.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _down_kernel(
    a_ptr, w_ptr, out_ptr, topk_w_ptr, sorted_ids_ptr, block_expert_ptr, num_padded_ptr, topk_ids_ptr,
    num_pairs, K, N,
    stride_at, stride_we, stride_wn, stride_ot,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    EVEN_K: tl.constexpr, PAIR_MODE: tl.constexpr, DOT_PREC: tl.constexpr, PDL: tl.constexpr,
):
    """out[pair, n] = topk_w[pair] * (a[pair] · w[e, n]) for this block's pairs (w: [E, N, K])."""
    pid_n = tl.program_id(0)  # fastest: a block's column tiles run together and share its rows in L2
    pid_m = tl.program_id(1)
    pdl_wait(PDL)  # a is the previous kernel's output
    pair, row_ok, expert, active = _row_block(pid_m, sorted_ids_ptr, block_expert_ptr, num_padded_ptr,
                                              topk_ids_ptr, num_pairs, BLOCK_M, PAIR_MODE)
    if active:
        rows = pair.to(tl.int64)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_k = tl.arange(0, BLOCK_K)
        n_ok = offs_n < N
        a_ptrs = a_ptr + rows[:, None] * stride_at + offs_k[None, :]
        w_ptrs = w_ptr + expert * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            if EVEN_K:
                a = tl.load(a_ptrs, mask=row_ok[:, None], other=0.0)
                w = tl.load(w_ptrs, mask=n_ok[None, :], other=0.0)
            else:
                k_ok = offs_k < K - k0
                a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                w = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = acc + mma(a, w, DOT_PREC)
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        scale = tl.load(topk_w_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
        acc = acc * scale[:, None]
        o_ptrs = out_ptr + rows[:, None] * stride_ot + offs_n[None, :]
        tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


def fused_moe(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, config: MoeKernelConfig | None = None,
              align: Alignment | None = None, invariant: bool = False, per_slot: bool = False) -> torch.Tensor:
    """Same contract as ``moe_reference``: x [T, H], w13 [E, 2I, H], w2 [E, H, I], topk_* [T, k] -> [T, H].
    ``invariant`` (deterministic mode): ``invariant_config`` tiles and the slot sum in a fixed order.
    ``per_slot``: the k weighted expert outputs unsummed, a [k, T, H] view, for ``add_rms_norm`` to sum (in slot
    order, as ``sum_slots``): one reduction launch and one copy fewer per layer (30B-A3B decode: ~8 us together)."""
    T, H = x.shape
    E, two_i, _ = w13.shape
    inter, top_k = two_i // 2, topk_ids.shape[1]
    n_pairs = T * top_k
    cfg = config or (invariant_config(x.dtype) if invariant else pick_config(n_pairs, E, x.dtype))
    assert x.stride(1) == 1 and w13.stride(2) == 1 and w2.stride(2) == 1, "rows must be contiguous"
    ids = topk_ids.reshape(-1)
    if not ids.is_contiguous():
        ids = ids.contiguous()
    if cfg.pair_mode:
        sorted_ids = block_expert = num_padded = ids  # unused in pair mode (any tensor will do)
        m_blocks = n_pairs
    else:
        align = align or align_block_size(topk_ids, E, cfg.block_m)
        assert align.block_m == cfg.block_m
        sorted_ids, block_expert, num_padded = align.sorted_ids, align.block_expert, align.num_padded
        m_blocks = align.num_blocks
    assert m_blocks < 65536, "grid axis 1 limit: use a larger block_m for this many tokens"
    prec = dot_precision(x.dtype)
    pdl = use_pdl(x.device)  # each launched while the kernel before it drains (route -> align -> gate_up -> down)
    bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
    act = torch.empty(n_pairs, inter, dtype=x.dtype, device=x.device)
    _gate_up_kernel[(cdiv(inter, bn), m_blocks)](
        x, w13, act, sorted_ids, block_expert, num_padded, ids,
        n_pairs, H, inter, x.stride(0), w13.stride(0), w13.stride(1), act.stride(0),
        TOP_K=top_k, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, EVEN_K=H % bk == 0, PAIR_MODE=cfg.pair_mode,
        DOT_PREC=prec, PDL=pdl, num_warps=cfg.num_warps, num_stages=cfg.num_stages, launch_pdl=pdl,
    )
    per_pair = torch.empty(n_pairs, H, dtype=x.dtype, device=x.device)
    w = topk_weights.reshape(-1)
    _down_kernel[(cdiv(H, bn), m_blocks)](
        act, w2, per_pair, w if w.is_contiguous() else w.contiguous(), sorted_ids, block_expert, num_padded, ids,
        n_pairs, inter, H, act.stride(0), w2.stride(0), w2.stride(1), per_pair.stride(0),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, EVEN_K=inter % bk == 0, PAIR_MODE=cfg.pair_mode,
        DOT_PREC=prec, PDL=pdl, num_warps=cfg.num_warps, num_stages=cfg.num_stages, launch_pdl=pdl,
    )
    if top_k == 1:
        return per_pair
    if per_slot:
        return per_pair.view(T, top_k, H).transpose(0, 1)
    if invariant:
        return sum_slots(per_pair.view(T, top_k, H)).to(x.dtype)
    return per_pair.view(T, top_k, H).sum(dim=1, dtype=torch.float32).to(x.dtype)
