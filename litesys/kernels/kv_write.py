"""KV write: store new tokens' K and V in their page slots, one launch per layer for K and V together.

bf16/fp16/fp32 pages: a plain copy (torch would launch one ``index_copy_`` each for K and V). fp8 pages: quantise
with the per-KV-head scales in registers (the torch chain would be ~10 small kernels per layer inside every
decode graph), same arithmetic as ``kv_fp8.quantize``: correctly rounded ``x / scale``, clamp to +-448, round to
nearest even (NaN -> 0); a negative slot (padding) is skipped. The e4m3 bytes are encoded with integer ops rather
than a cast: the CPU interpreter's fp32 -> fp8 cast truncates (and mishandles subnormals), and this way the CPU
tests check the very code the GPU runs. Pages of any strides: fp8 V pages are transposed (docs/kv_fp8.md).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.blocks import pdl_wait
from litesys.kernels.common import FP8_MAX, use_pdl


@triton.jit
def e4m3_bits(y):
    """fp32 ``y`` in [-448, 448] -> its float8_e4m3fn byte, rounded to nearest even."""
    bits = y.to(tl.int32, bitcast=True)
    sign = (bits >> 31) & 1
    a_bits = bits & 0x7FFFFFFF
    # normal results: keep 3 of fp32's 23 mantissa bits (ties to even; a carry bumps the exponent), rebias 127 -> 7
    normal = ((a_bits + 0x7FFFF + ((a_bits >> 20) & 1)) >> 20) - ((127 - 7) << 3)
    # below 2^-6 (e4m3 subnormals): the code is |y| / 2^-9 rounded to an integer (adding 2^23 rounds to even)
    a = a_bits.to(tl.float32, bitcast=True)
    sub = ((a * 512.0 + 8388608.0) - 8388608.0).to(tl.int32)
    code = tl.where(a >= 0.015625, normal, sub)
    return (code | (sign << 7)).to(tl.uint8)


@triton.jit
def e4m3_quantize(x, scale, MAX: tl.constexpr):
    """fp32 ``x`` -> the e4m3 bytes of ``x / scale`` as ``kv_fp8.quantize`` stores them: correctly rounded, clamped
    to +-MAX, NaN -> 0 (pages never hold NaN bytes)."""
    y = tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -MAX), MAX)
    return e4m3_bits(tl.where(x == x, y, 0.0))


@triton.jit
def _quantize_store(x_ptr, c_ptr, scale, page, slot, t, h, stride_xt, stride_xh, stride_cp, stride_cs, stride_ch,
                    stride_cd, D: tl.constexpr, MAX: tl.constexpr):
    offs_d = tl.arange(0, D)
    x = tl.load(x_ptr + t * stride_xt + h * stride_xh + offs_d).to(tl.float32)
    tl.store(c_ptr + page * stride_cp + slot * stride_cs + h * stride_ch + offs_d * stride_cd,
             e4m3_quantize(x, scale, MAX))


@triton.jit
def _store(x_ptr, c_ptr, page, slot, t, h, stride_xt, stride_xh, stride_cp, stride_cs, stride_ch, stride_cd,
           D: tl.constexpr):
    offs_d = tl.arange(0, D)
    x = tl.load(x_ptr + t * stride_xt + h * stride_xh + offs_d)
    tl.store(c_ptr + page * stride_cp + slot * stride_cs + h * stride_ch + offs_d * stride_cd,
             x.to(c_ptr.dtype.element_ty))


@triton.jit
def _kv_write_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, ks_ptr, vs_ptr, slot_ptr,
                     stride_kt, stride_kh, stride_vt, stride_vh,
                     stride_kcp, stride_kcs, stride_kch, stride_kcd, stride_vcp, stride_vcs, stride_vch, stride_vcd,
                     PAGE: tl.constexpr, D: tl.constexpr, MAX: tl.constexpr, FP8: tl.constexpr,
                     PDL: tl.constexpr):
    t = tl.program_id(0)
    h = tl.program_id(1)
    flat = tl.load(slot_ptr + t).to(tl.int64)  # slots predate the previous kernel (K's RoPE): read before the wait
    pdl_wait(PDL)
    if flat >= 0:
        page, slot = flat // PAGE, flat % PAGE
        if FP8:
            _quantize_store(k_ptr, kc_ptr, tl.load(ks_ptr + h), page, slot, t, h, stride_kt, stride_kh, stride_kcp,
                            stride_kcs, stride_kch, stride_kcd, D, MAX)
            _quantize_store(v_ptr, vc_ptr, tl.load(vs_ptr + h), page, slot, t, h, stride_vt, stride_vh, stride_vcp,
                            stride_vcs, stride_vch, stride_vcd, D, MAX)
        else:
            _store(k_ptr, kc_ptr, page, slot, t, h, stride_kt, stride_kh, stride_kcp, stride_kcs, stride_kch,
                   stride_kcd, D)
            _store(v_ptr, vc_ptr, page, slot, t, h, stride_vt, stride_vh, stride_vcp, stride_vcs, stride_vch,
                   stride_vcd, D)


def write(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
          slot_mapping: torch.Tensor, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None) -> None:
    """k/v [T, Hkv, D] (any float dtype, last dim a power of two) -> pages [P, page, Hkv, D] (any strides: fp8 V
    pages are ``common.transposed_pages``) at flat slots ``page * page_size + slot``; a negative slot is skipped.
    With ``k_scale``/``v_scale`` [Hkv] the pages are fp8 and K/V are quantised (``kv_fp8.quantize``), else they are
    stored cast to the pages' dtype (as ``x.to(cache.dtype)``)."""
    t, hkv, d = k.shape
    if t == 0:
        return
    k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (k, v))
    fp8 = k_scale is not None
    pdl = use_pdl(k.device)  # launched while the kernel that wrote k drains (one launch latency per layer)
    kc, vc = (k_cache.view(torch.uint8), v_cache.view(torch.uint8)) if fp8 else (k_cache, v_cache)  # e4m3 bytes
    _kv_write_kernel[(t, hkv)](
        k, v, kc, vc, k_scale if fp8 else slot_mapping, v_scale if fp8 else slot_mapping, slot_mapping,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), *kc.stride(), *vc.stride(),
        PAGE=k_cache.shape[1], D=d, MAX=FP8_MAX, FP8=fp8, PDL=pdl, num_warps=1, launch_pdl=pdl,
    )

