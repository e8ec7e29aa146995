"""Stage 1 of the raw-logits path's softmax·V: one program per (sequence, KV head, split).

Same split structure, partial format and merge as ``decode_split`` (``decode_merge``: folded into the last split
program, or its own kernel), but the scores come from the processed fp32 logits instead of q·k. Logits may be
-inf anywhere (processors mask positions); positions at or past the length are never read, matching their -inf
contract.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.blocks import (
    fp8_scales,
    online_softmax_step,
    paged_v_tile,
    softmax_state,
    split_bounds,
    store_split,
)
from litesys.kernels.common import v_layout
from litesys.kernels.decode_merge import fold_merge, merge_lanes


@triton.jit
def _softmax_v_split_kernel(
    logit_ptr, v_ptr, pt_ptr, len_ptr, po_ptr, lse_ptr,
    stride_xb, stride_xh, stride_xl,
    stride_vp, stride_vs, stride_vh, stride_vd,
    stride_ptb,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh, num_splits,
    out_ptr, stride_ob, stride_oh,
    max_len, vs_ptr, cnt_ptr,
    G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr, PAGE: tl.constexpr,
    BLOCK_N: tl.constexpr, DOT_PREC: tl.constexpr, DIRECT: tl.constexpr, FP8: tl.constexpr, F16: tl.constexpr,
    SPLIT_TOKENS: tl.constexpr, V_T: tl.constexpr, VEC: tl.constexpr, FOLD: tl.constexpr, S_BLOCK: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    length = tl.load(len_ptr + b)
    # same splits as the merge sees (from the length); a logits row narrower than the length is read up to
    # its width only (such a split then stores an empty partial: lse -inf)
    start, end, _ = split_bounds(length, split, num_splits, BLOCK_N, SPLIT_TOKENS)
    end = tl.minimum(end, max_len)
    offs_g = tl.arange(0, G_PAD)
    offs_n = tl.arange(0, BLOCK_N)
    g_mask = offs_g < G
    rows = logit_ptr + b * stride_xb + (kvh * G + offs_g)[:, None] * stride_xh
    m, den, acc = softmax_state(G_PAD, D)
    _, v_scale = fp8_scales(vs_ptr, vs_ptr, kvh, FP8)
    pt_row = pt_ptr + b * stride_ptb
    for n0 in range(start, end, BLOCK_N):  # empty for splits past the length
        pos = n0 + offs_n
        valid = pos < end
        s = tl.load(rows + pos[None, :] * stride_xl, mask=g_mask[:, None] & valid[None, :],
                    other=float("-inf")) * 1.4426950408889634  # log2(e): scores in the log2 domain
        page = tl.load(pt_row + pos // PAGE, mask=valid, other=0).to(tl.int64)
        # fp8: exact fp8 -> fp16 (16-bit models) or fp32 in registers; V's scale multiplies the output below
        v = paged_v_tile(v_ptr, page, pos % PAGE, valid, kvh, stride_vp, stride_vs, stride_vh, stride_vd,
                         (tl.float16 if F16 else tl.float32) if FP8 else v_ptr.dtype.element_ty, D, V_T, VEC)
        acc, m, den = online_softmax_step(acc, m, den, s, v, DOT_PREC)
    store_split(out_ptr, po_ptr, lse_ptr, acc, m, den, v_scale, b, kvh, split, start, length, stride_ob, stride_oh,
                stride_pb, stride_ph, stride_ps, stride_lb, stride_lh, G, G_PAD, D, FP8, DIRECT)
    if FOLD:
        fold_merge(cnt_ptr, po_ptr, lse_ptr, out_ptr, b, kvh, length, num_splits, stride_pb, stride_ph, stride_ps,
                   stride_lb, stride_lh, stride_ob, stride_oh, G, D, BLOCK_N, SPLIT_TOKENS, S_BLOCK)


def softmax_v_split(logits: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
                    partial: torch.Tensor | None, lse: torch.Tensor | None, out: torch.Tensor, block_n: int,
                    group_pad: int, dot_prec: str, num_warps: int, num_stages: int,
                    v_scale: torch.Tensor | None = None, f16: bool = False, split_tokens: int = 0,
                    counter: torch.Tensor | None = None) -> None:
    """Same outputs as ``decode_split`` (partials, or ``out`` directly when ``partial`` is None; with ``counter``
    the merged ``out``), with the scores read from fp32 ``logits`` [B, Hq, L]. fp8 caches: ``v_scale`` [Hkv] fp32,
    ``f16``: V tiles to fp16 (else fp32)."""
    b, hq, max_len = logits.shape
    hkv, d = v_cache.shape[2], v_cache.shape[3]
    direct = partial is None
    po, ls = (out, out) if direct else (partial, lse)
    n_splits = 1 if direct else partial.shape[2]
    fold = counter is not None and not direct
    v_strides, v_t, vec = v_layout(v_cache, block_n)
    _softmax_v_split_kernel[(b, hkv, n_splits)](
        logits, v_cache, page_table, lengths, po, ls,
        logits.stride(0), logits.stride(1), logits.stride(2),
        *v_strides,
        page_table.stride(0),
        *((0, 0, 0, 0, 0) if direct else (partial.stride(0), partial.stride(1), partial.stride(2),
                                          lse.stride(0), lse.stride(1))), n_splits,
        out, out.stride(0), out.stride(1),
        max_len, lengths if v_scale is None else v_scale, lengths if counter is None else counter,
        G=hq // hkv, G_PAD=group_pad, D=d, PAGE=v_cache.shape[1], BLOCK_N=block_n,
        DOT_PREC=dot_prec, DIRECT=direct, FP8=v_scale is not None, F16=f16, SPLIT_TOKENS=split_tokens,
        V_T=v_t, VEC=vec, FOLD=fold, S_BLOCK=merge_lanes(n_splits, split_tokens) if fold else 1,
        num_warps=num_warps, num_stages=num_stages,
    )
