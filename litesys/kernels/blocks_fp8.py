"""fp8 pages on fp8 tensor cores: the ``@triton.jit`` pieces of the fused decode kernel's fp8 path (``F8_MMA``).

The default fp8 kernel converts every e4m3 K/V value to fp16 in registers (one ``cvt`` per two values) and reads
fp8 pages at ~70% of the H200's copy bandwidth. Here neither tile is converted (opt-in, ``DecodeConfig.fp8_mma``;
measured with 16 query rows: no faster, docs/kv_fp8.md): both products run on the e4m3 tensor cores (Hopper
``wgmma``, which needs at least 64 rows, so the products are taken transposed: ``S^T = K q^T`` with the block's
keys as rows, ``O^T = V^T P^T`` with V's dims as rows, read as stored from the transposed pages). The other operand
of each, q and P, is given as two e4m3 terms, ``x ~ hi + lo / 16`` (``fp8_pair``: about 7 significant bits, the
error of a bf16 rounding instead of e4m3's 2^-4), side by side as 2 x G_PAD columns of one product, so the output
stays within bf16 rounding of the kernels that dequantise (tested against the same reference).
"""
from __future__ import annotations

import triton
import triton.language as tl

from litesys.kernels.blocks import INTERPRET, paged_v_tile
from litesys.kernels.kv_write import e4m3_bits


@triton.jit
def to_e4m3(x):
    """fp32 (|x| <= 448) -> e4m3, rounded to nearest even. The CPU interpreter's fp32 -> fp8 cast truncates: there
    the byte is encoded with integer ops (``kv_write.e4m3_bits``, as the GPU's ``cvt.rn.satfinite`` rounds)."""
    if INTERPRET:
        return e4m3_bits(x).to(tl.float8e4nv, bitcast=True)
    else:
        return x.to(tl.float8e4nv)


@triton.jit
def fp8_pair(x):
    """fp32 ``x`` [R, C] (|x| <= 448) as e4m3 [R, 2C]: columns 2c, 2c + 1 = hi = e4m3(x), lo = e4m3(16 (x - hi)).
    lo holds hi's rounding error to e4m3's own 2^-4, so hi + lo / 16 is x to about 2^-8 relative. (The pair is
    joined in fp32 and converted once: Triton 3.9 fails to lay out a joined fp8 dot operand.)"""
    lo = (x - to_e4m3(x).to(tl.float32)) * 16.0
    return to_e4m3(tl.reshape(tl.join(x, lo), [x.shape[0], 2 * x.shape[1]]))


@triton.jit
def fold_pair(x, G_PAD: tl.constexpr):
    """[R, 2 G_PAD] products of ``fp8_pair`` columns -> [R, G_PAD]: hi + lo / 16 (pairs sit in one thread)."""
    hi, lo = tl.split(tl.reshape(x, [x.shape[0], G_PAD, 2]))
    return hi + lo * 0.0625


@triton.jit
def load_q_pair(q_ptr, b, kvh, stride_qb, stride_qh, qk_scale, G: tl.constexpr, G_PAD: tl.constexpr,
                D: tl.constexpr):
    """The group's queries as ``fp8_pair`` columns [D, 2 G_PAD] (q^T, each row scaled to amax 448) and the
    scores' factor per query head [G_PAD]: its scale times ``qk_scale`` (padding rows: zeros, factor 1)."""
    offs_g = tl.arange(0, G_PAD)
    heads = kvh * G + offs_g
    q = tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + tl.arange(0, D)[None, :],
                mask=(offs_g < G)[:, None], other=0.0).to(tl.float32)
    amax = tl.max(tl.abs(q), 1)
    qs = tl.where(amax > 0, amax / 448.0, 1.0)
    return fp8_pair(tl.trans(q / qs[:, None])), qs * qk_scale


@triton.jit
def softmax_state_t(G_PAD: tl.constexpr, D: tl.constexpr):
    """Empty online-softmax state of the transposed products: max [G_PAD], sum [G_PAD], O^T pairs [D, 2 G_PAD]."""
    return (tl.full([G_PAD], float("-inf"), tl.float32), tl.zeros([G_PAD], tl.float32),
            tl.zeros([D, 2 * G_PAD], tl.float32))


@triton.jit
def attend_block_f8(acc, m, den, q2, qfac, k_ptr, v_ptr, page, slot, valid, kvh, stride_kp, stride_ks, stride_kh,
                    stride_vp, stride_vs, stride_vh, stride_vd, G_PAD: tl.constexpr, D: tl.constexpr,
                    VEC: tl.constexpr):
    """Fold one block of fp8 K/V rows (transposed V pages; ``page`` a page of the pool for every row, 0 where the
    table is masked) into the state of ``softmax_state_t``, on e4m3 tensor cores. Both tiles are read whole, as
    16-byte vectors, and go to the products as stored: rows past ``valid`` get score -inf (weight exactly 0), but
    their V bytes are multiplied by that 0, so a NaN byte there would poison the row; pages never hold one (writers
    map NaN to 0, the pool starts zeroed; docs/kv_fp8.md). Log2-domain scores: ``qfac`` holds qk_scale; P is scaled
    by 256 (e4m3 keeps weights down to 2^-17 of the max)."""
    offs_d = tl.arange(0, D)
    k = tl.load(k_ptr + (page * stride_kp + slot * stride_ks + kvh * stride_kh)[:, None] + offs_d[None, :])
    vt = paged_v_tile(v_ptr, page, slot, valid, kvh, stride_vp, stride_vs, stride_vh, stride_vd, tl.float8e4nv, D,
                      True, VEC, RAW=True)
    s = fold_pair(tl.dot(k, q2), G_PAD) * qfac[None, :]  # [N, G_PAD]
    s = tl.where(valid[:, None], s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 0))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_safe)
    p = tl.exp2(s - m_safe[None, :])
    den = den * alpha + tl.sum(p, 0)
    alpha2 = tl.reshape(tl.join(alpha, alpha), [2 * G_PAD])
    acc = acc * alpha2[None, :] + tl.dot(vt, fp8_pair(p * 256.0))
    return acc, m_new, den


@triton.jit
def finish_t(acc, G_PAD: tl.constexpr):
    """O^T pairs [D, 2 G_PAD] -> O [G_PAD, D] (un-normalised, P's 256 taken out)."""
    return tl.trans(fold_pair(acc, G_PAD) * (1.0 / 256.0))
