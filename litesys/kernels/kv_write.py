"""FP8 KV write: quantise new tokens' K and V with their per-KV-head scales and store them in their slots.

One launch per layer for K and V together (the torch chain would be ~10 small kernels per layer inside every
decode graph). Same arithmetic as ``kv_fp8.quantize``: correctly rounded ``x / scale``, clamp to +-448, round to
nearest even; a negative slot (padding) is skipped. The e4m3 bytes are encoded with integer ops rather than a cast:
the CPU interpreter's fp32 -> fp8 cast truncates (and mishandles subnormals), and this way the CPU tests check the
very code the GPU runs.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litesys.kernels.common import FP8_MAX


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
def _quantize_store(x_ptr, c_ptr, scale, slot, t, h, stride_xt, stride_xh, stride_cs, stride_ch,
                    D: tl.constexpr, MAX: tl.constexpr):
    offs_d = tl.arange(0, D)
    x = tl.load(x_ptr + t * stride_xt + h * stride_xh + offs_d).to(tl.float32)
    y = tl.minimum(tl.maximum(tl.math.div_rn(x, scale), -MAX), MAX)
    tl.store(c_ptr + slot * stride_cs + h * stride_ch + offs_d, e4m3_bits(y))


@triton.jit
def _kv_write_fp8_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, ks_ptr, vs_ptr, slot_ptr,
                         stride_kt, stride_kh, stride_vt, stride_vh, stride_cs, stride_ch,
                         D: tl.constexpr, MAX: tl.constexpr):
    t = tl.program_id(0)
    h = tl.program_id(1)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot >= 0:
        _quantize_store(k_ptr, kc_ptr, tl.load(ks_ptr + h), slot, t, h, stride_kt, stride_kh, stride_cs, stride_ch,
                        D, MAX)
        _quantize_store(v_ptr, vc_ptr, tl.load(vs_ptr + h), slot, t, h, stride_vt, stride_vh, stride_cs, stride_ch,
                        D, MAX)


def write_fp8(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              k_scale: torch.Tensor, v_scale: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """k/v [T, Hkv, D] (any float dtype, last dim contiguous) -> fp8 caches [P, page, Hkv, D] at flat slots."""
    t, hkv, d = k.shape
    if t == 0:
        return
    k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (k, v))
    # one flat slot axis: a layer's cache is contiguous [P, page, Hkv, D]
    kc, vc = k_cache.view(torch.uint8).view(-1, hkv, d), v_cache.view(torch.uint8).view(-1, hkv, d)
    _kv_write_fp8_kernel[(t, hkv)](
        k, v, kc, vc, k_scale, v_scale, slot_mapping,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1), kc.stride(0), kc.stride(1),
        D=d, MAX=FP8_MAX, num_warps=1,
    )
