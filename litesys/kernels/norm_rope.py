"""Fused elementwise steps of a decoder layer (add+RMSNorm, q/k norm+RoPE, SiLU·mul): one Triton kernel each on
the GPU, the twins of ``kernels/ref/norm_rope.py`` elsewhere (a small model's decode step would otherwise be
dozens of tiny elementwise launches per layer)."""
from __future__ import annotations

from typing import NamedTuple

import torch

from litesys.kernels.common import FP8_MAX, cdiv, next_pow2, use_triton
from litesys.kernels.ref import norm_rope as ref

try:
    import triton
    import triton.language as tl

    from litesys.kernels.kv_write import e4m3_quantize
except ImportError:  # pragma: no cover - CPU installs without triton
    triton = None


# ---- residual add + RMSNorm ------------------------------------------------------------------------------
def add_rms_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(x + residual) * weight, x + residual); ``residual=None`` means no add. A 3-D ``x`` [S, T, H] (any
    strides but the last) holds parts of the layer output: x is their sum in fp32, part 0 first, rounded to the
    model dtype (MoE: a token's k expert outputs, ``fused_moe(per_slot=True)``: no separate reduction launch)."""
    if not use_triton(x):
        if x.dim() == 3:
            x = ref.sum_parts(x).to(weight.dtype)
        return ref.add_rms_norm(x, residual, weight, eps)
    return add_rms_norm_triton(x, residual, weight, eps)


def add_rms_norm_triton(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    parts = x.shape[0] if x.dim() == 3 else 0
    if x.stride(-1) != 1:
        x = x.contiguous()
    T, H = x.shape[-2:]
    dt = weight.dtype if parts else x.dtype
    out = torch.empty(T, H, dtype=dt, device=x.device)
    res_out = torch.empty_like(out) if residual is not None or parts else x
    _add_rms_norm_kernel[(T,)](x, residual if residual is not None else x, res_out, weight, out, H,
                               x.stride(0) if parts else 0, x.stride(-2), eps, PARTS=parts,
                               HAS_RES=residual is not None, BLOCK=next_pow2(H), num_warps=4)
    return out, res_out


# ---- q/k RMSNorm + RoPE ----------------------------------------------------------------------------------
def qk_norm_rope(qkv: torch.Tensor, q_norm: torch.Tensor | None, k_norm: torch.Tensor | None,
                 rope: torch.Tensor, positions: torch.Tensor, nq: int, nkv: int, eps: float,
                 pages: KVPages | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split fused qkv [T, (nq+2nkv)·D] into q, k (per-head RMSNorm if given, then RoPE) and v. ``pages``: also
    store k and v in the KV pages at their slots, as ``kv_write.write`` does (Triton only: the same launch;
    ``fuses_kv_write`` says when)."""
    if not use_triton(qkv):
        if pages is not None:
            raise ValueError("qk_norm_rope(pages=...) runs on Triton only: check fuses_kv_write first")
        return ref.qk_norm_rope(qkv, q_norm, k_norm, rope, positions, nq, nkv, eps)
    return qk_norm_rope_triton(qkv, q_norm, k_norm, rope, positions, nq, nkv, eps, pages)


class KVPages(NamedTuple):
    """Where ``qk_norm_rope`` also writes K and V: a layer's pages [P, page, Hkv, D] (any strides), flat slots [T]
    (negative: skipped) and, for fp8 pages, the per-KV-head scales [Hkv]."""
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    slot_mapping: torch.Tensor
    k_scale: torch.Tensor | None = None
    v_scale: torch.Tensor | None = None


def fuses_kv_write(qkv: torch.Tensor, head_dim: int) -> bool:
    """Whether ``qk_norm_rope`` can store K/V itself: Triton data and a power-of-two head dim (its tiles)."""
    return use_triton(qkv) and head_dim & (head_dim - 1) == 0


def qk_norm_rope_triton(qkv: torch.Tensor, q_norm: torch.Tensor | None, k_norm: torch.Tensor | None,
                        rope: torch.Tensor, positions: torch.Tensor, nq: int, nkv: int, eps: float,
                        pages: KVPages | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    T, D = qkv.shape[0], rope.shape[-1]
    q = torch.empty(T, nq, D, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty(T, nkv, D, dtype=qkv.dtype, device=qkv.device)
    has_norm = q_norm is not None
    heads = nq + nkv + (nkv if pages is not None else 0)  # with pages: V's heads too (copied to the pages)
    hb = min(8, next_pow2(heads))
    write = pages is not None
    fp8 = write and pages.k_scale is not None
    if write:  # fp8 pages: their e4m3 bytes (kv_write's encoding)
        kc, vc = (pages.k_cache.view(torch.uint8), pages.v_cache.view(torch.uint8)) if fp8 else pages[:2]
        cache = (kc, vc, pages.slot_mapping, pages.k_scale if fp8 else rope, pages.v_scale if fp8 else rope,
                 *kc.stride(), *vc.stride())
    else:
        cache = (qkv, qkv, positions, rope, rope) + (0,) * 8
    _qk_norm_rope_kernel[(T, cdiv(heads, hb))](
        qkv, q, k, q_norm if has_norm else qkv, k_norm if has_norm else qkv, rope, positions, qkv.stride(0), nq, nkv,
        eps, *cache, D=D, HB=hb, HAS_NORM=has_norm, WRITE=write, FP8=fp8, PAGE=pages.k_cache.shape[1] if write else 1,
        MAX=FP8_MAX, num_warps=4)
    v = qkv[:, (nq + nkv) * D:].view(T, nkv, D)
    return q, k, v


# ---- SiLU(gate) * up -------------------------------------------------------------------------------------
def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up of [T, 2I] (gate columns first) -> [T, I]."""
    if not use_triton(gate_up) or gate_up.dim() != 2:
        return ref.silu_mul(gate_up)
    return silu_mul_triton(gate_up)


def silu_mul_triton(gate_up: torch.Tensor) -> torch.Tensor:
    T, I2 = gate_up.shape
    out = torch.empty(T, I2 // 2, dtype=gate_up.dtype, device=gate_up.device)
    BLOCK = 1024
    _silu_mul_kernel[(T, cdiv(I2 // 2, BLOCK))](gate_up, out, I2 // 2, BLOCK=BLOCK, num_warps=4)
    return out


if triton is not None:

    @triton.jit
    def _add_rms_norm_kernel(x_ptr, r_ptr, r_out_ptr, w_ptr, out_ptr, H, stride_part, stride_row, eps,
                             PARTS: tl.constexpr, HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        m = cols < H
        src = x_ptr + row.to(tl.int64) * stride_row + cols
        if PARTS:  # x = the parts' sum in fp32, part 0 first (as ref.sum_parts), rounded to the model dtype
            acc = tl.load(src, mask=m, other=0.0).to(tl.float32)
            for s in tl.static_range(1, PARTS):
                acc += tl.load(src + s * stride_part, mask=m, other=0.0).to(tl.float32)
            x = acc.to(out_ptr.dtype.element_ty)
        else:
            x = tl.load(src, mask=m, other=0.0)
        if HAS_RES:
            # round the sum to the model dtype first, as the unfused residual add does
            x = (x.to(tl.float32) + tl.load(r_ptr + row * H + cols, mask=m, other=0.0).to(tl.float32)).to(x.dtype)
        if HAS_RES or PARTS:
            tl.store(r_out_ptr + row * H + cols, x, mask=m)
        xf = x.to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / H + eps)
        y = (xf * inv).to(x.dtype)
        w = tl.load(w_ptr + cols, mask=m, other=0.0)
        tl.store(out_ptr + row * H + cols, (y.to(tl.float32) * w.to(tl.float32)).to(x.dtype), mask=m)

    @triton.jit
    def _page_store(c_ptr, page, slot, kvh, y, half, stride_p, stride_s, stride_h, stride_d, ok, scale,
                    D: tl.constexpr, FP8: tl.constexpr, MAX: tl.constexpr):
        """Half-rows ``y`` [HB, D/2] (fp32; columns ``half``) of KV heads ``kvh`` into their page slots."""
        base = page * stride_p + slot * stride_s + kvh.to(tl.int64) * stride_h
        dst = c_ptr + base[:, None] + half[None, :] * stride_d
        if FP8:  # kv_write's quantisation and e4m3 bytes
            tl.store(dst, e4m3_quantize(y, scale[:, None], MAX), mask=ok[:, None])
        else:
            tl.store(dst, y.to(c_ptr.dtype.element_ty), mask=ok[:, None])

    @triton.jit
    def _qk_norm_rope_kernel(qkv_ptr, q_ptr, k_ptr, qn_ptr, kn_ptr, rope_ptr, pos_ptr, stride_t, nq, nkv, eps,
                             kc_ptr, vc_ptr, slot_ptr, ks_ptr, vs_ptr, s_kp, s_ks, s_kh, s_kd, s_vp, s_vs, s_vh, s_vd,
                             D: tl.constexpr, HB: tl.constexpr, HAS_NORM: tl.constexpr, WRITE: tl.constexpr,
                             FP8: tl.constexpr, PAGE: tl.constexpr, MAX: tl.constexpr):
        # HB heads of one token per program (q heads first, then k; WRITE: then v): a [HB, D/2] tile per half
        # instead of one one-warp program per head (Qwen3-0.6B at 256 tokens: 6,144 programs, ~1.5 waves of
        # latency-bound loads). WRITE: k and v also go to their page slots (no separate K/V write launch)
        t = tl.program_id(0)
        h = tl.program_id(1) * HB + tl.arange(0, HB)
        ok = h < nq + nkv + (nkv if WRITE else 0)
        is_q = h < nq
        is_v = h >= nq + nkv
        half = tl.arange(0, D // 2)
        src = qkv_ptr + t * stride_t + h[:, None] * D + half[None, :]
        x1 = tl.load(src, mask=ok[:, None], other=0.0).to(tl.float32)
        x2 = tl.load(src + D // 2, mask=ok[:, None], other=0.0).to(tl.float32)
        dt = qkv_ptr.dtype.element_ty
        if HAS_NORM:
            inv = 1.0 / tl.sqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / D + eps)
            w1 = tl.where(is_q[:, None], tl.load(qn_ptr + half)[None, :], tl.load(kn_ptr + half)[None, :])
            w2 = tl.where(is_q[:, None], tl.load(qn_ptr + D // 2 + half)[None, :],
                          tl.load(kn_ptr + D // 2 + half)[None, :])
            n1 = ((x1 * inv[:, None]).to(dt).to(tl.float32) * w1.to(tl.float32)).to(dt).to(tl.float32)
            n2 = ((x2 * inv[:, None]).to(dt).to(tl.float32) * w2.to(tl.float32)).to(dt).to(tl.float32)
            x1, x2 = tl.where(is_v[:, None], x1, n1), tl.where(is_v[:, None], x2, n2)
        pos = tl.load(pos_ptr + t).to(tl.int64)
        c = tl.load(rope_ptr + pos * 2 * D + half).to(dt).to(tl.float32)[None, :]
        s = tl.load(rope_ptr + pos * 2 * D + D + half).to(dt).to(tl.float32)[None, :]
        o1 = tl.where(is_v[:, None], x1, x1 * c - x2 * s).to(dt)  # v: as it is
        o2 = tl.where(is_v[:, None], x2, x2 * c + x1 * s).to(dt)
        row = tl.where(is_q, q_ptr + (t * nq + h) * D, k_ptr + (t * nkv + (h - nq)) * D)
        dst = row[:, None] + half[None, :]
        qk = ok & ~is_v
        tl.store(dst, o1, mask=qk[:, None])
        tl.store(dst + D // 2, o2, mask=qk[:, None])
        if WRITE:
            flat = tl.load(slot_ptr + t).to(tl.int64)
            page, slot = flat // PAGE, flat % PAGE
            kvh = tl.where(is_v, h - nq - nkv, h - nq)
            for part in tl.static_range(2):  # K heads to K pages, V heads to V pages
                # the slot test as a vector (the CPU interpreter mishandles a bool scalar in a vector mask)
                on = ok & (~is_q) & (is_v if part == 1 else ~is_v) & ((flat + h * 0) >= 0)
                c_ptr = vc_ptr if part == 1 else kc_ptr
                sp, ss, sh, sd = (s_vp, s_vs, s_vh, s_vd) if part == 1 else (s_kp, s_ks, s_kh, s_kd)
                scale = tl.load((vs_ptr if part == 1 else ks_ptr) + kvh, mask=on, other=1.0) if FP8 else 1.0
                _page_store(c_ptr, page, slot, kvh, o1.to(tl.float32), half, sp, ss, sh, sd, on, scale, D, FP8, MAX)
                _page_store(c_ptr, page, slot, kvh, o2.to(tl.float32), half + D // 2, sp, ss, sh, sd, on, scale, D,
                            FP8, MAX)

    @triton.jit
    def _silu_mul_kernel(x_ptr, out_ptr, inter, BLOCK: tl.constexpr):
        t = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        m = cols < inter
        g = tl.load(x_ptr + t * 2 * inter + cols, mask=m, other=0.0).to(tl.float32)
        u = tl.load(x_ptr + t * 2 * inter + inter + cols, mask=m, other=0.0)
        s = (g / (1.0 + tl.exp(-g))).to(u.dtype)
        tl.store(out_ptr + t * inter + cols, (s.to(tl.float32) * u.to(tl.float32)).to(u.dtype), mask=m)
