"""The ``@triton.jit`` building blocks the kernels share: the dot, the online-softmax step, a paged K/V block, split
bounds, partial/final stores, fp8 scales, programmatic-dependent-launch waits, a GPU-scope fence."""
from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")  # the CPU interpreter (no inline PTX there)


@triton.jit
def mma(a, b, DOT_PREC: tl.constexpr):
    """tl.dot with fp32 accumulation; "upcast" (interpreter only) multiplies the same values in fp32."""
    if DOT_PREC == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=DOT_PREC)


@triton.jit
def pdl_wait(PDL: tl.constexpr):
    """Block until the previous kernel of the stream has finished and its writes are visible (PDL launches)."""
    if PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def pdl_launch_dependents(PDL: tl.constexpr):
    """Let the next (PDL-launched) kernel start its programs: they will wait in ``pdl_wait`` for this one."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def split_bounds(length, split, num_splits, BLOCK_N: tl.constexpr, SPLIT_TOKENS: tl.constexpr):
    """[start, end) of one of ``num_splits`` near-equal, whole-block pieces of a sequence; per-split tokens.
    ``SPLIT_TOKENS > 0``: pieces of that many tokens, whatever ``num_splits`` (the batch) is."""
    if SPLIT_TOKENS > 0:
        per = length * 0 + SPLIT_TOKENS
    else:
        per = tl.cdiv(tl.cdiv(length, num_splits), BLOCK_N) * BLOCK_N
    start = split * per
    return start, tl.minimum(start + per, length), per


@triton.jit
def load_q_group(q_ptr, b, kvh, stride_qb, stride_qh, G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr):
    """q [G_PAD, D] of KV head kvh's query heads kvh*G .. kvh*G+G-1 (zero rows past G)."""
    offs_g = tl.arange(0, G_PAD)
    heads = kvh * G + offs_g
    return tl.load(q_ptr + b * stride_qb + heads[:, None] * stride_qh + tl.arange(0, D)[None, :],
                   mask=(offs_g < G)[:, None], other=0.0)


@triton.jit
def softmax_state(G_PAD: tl.constexpr, D: tl.constexpr):
    """Empty online-softmax state (running max, denominator, weighted sum) for G_PAD query heads."""
    return (tl.full([G_PAD], float("-inf"), tl.float32), tl.zeros([G_PAD], tl.float32),
            tl.zeros([G_PAD, D], tl.float32))


@triton.jit
def online_softmax_step(acc, m, den, s, v, DOT_PREC: tl.constexpr):
    """Fold one block into the running (acc [G, D], max m [G], sum den [G]) state.

    ``s`` [G, N] are log2-domain scores (-inf = masked), ``v`` [N, D]. A row whose scores are all -inf so
    far keeps m = -inf, den = 0, acc = 0 (the "safe" max avoids -inf - -inf = NaN).
    """
    m_new = tl.maximum(m, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    den = den * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, DOT_PREC)
    return acc, m_new, den


@triton.jit
def attend_paged_block(acc, m, den, q, k_ptr, v_ptr, page, slot, valid, kvh, stride_kp, stride_ks, stride_kh,
                       stride_vp, stride_vs, stride_vh, stride_vd, qk_scale, D: tl.constexpr, DOT_PREC: tl.constexpr,
                       V_T: tl.constexpr, VEC: tl.constexpr):
    """Fold one block of paged K/V rows (physical ``page`` int64, ``slot`` in the page, ``valid`` [N]) of KV head
    ``kvh`` into the online-softmax state of the group's queries ``q`` [G_PAD, D]; invalid rows are never read,
    except with transposed V pages (``V_T``, see ``paged_v_tile``): then ``page`` must be a page of the pool for
    every row (0 where the page table is masked), K is read unmasked too (its scores are replaced by -inf: 4
    programs per SM instead of 3 on the H200, 128 registers) and V as ``paged_v_tile`` says.

    fp8 K/V are converted to q's dtype (exact) in registers; the caller folds the K scale into ``qk_scale`` and
    applies the V scale to the output (both are per KV head, one per program). Same-dtype casts are no-ops."""
    offs_d = tl.arange(0, D)
    k_ptrs = k_ptr + (page * stride_kp + slot * stride_ks + kvh * stride_kh)[:, None] + offs_d[None, :]
    if V_T:  # both tiles issued before the first dot (H200 registers: 142 -> 121 with Qwen3-0.6B's 2 heads a group)
        k = tl.load(k_ptrs).to(q.dtype)
        v = paged_v_tile(v_ptr, page, slot, valid, kvh, stride_vp, stride_vs, stride_vh, stride_vd, q.dtype, D, V_T,
                         VEC)
    else:
        k = tl.load(k_ptrs, mask=valid[:, None], other=0.0).to(q.dtype)
    s = mma(q, tl.trans(k), DOT_PREC) * qk_scale
    s = tl.where(valid[None, :], s, float("-inf"))
    if not V_T:
        v = paged_v_tile(v_ptr, page, slot, valid, kvh, stride_vp, stride_vs, stride_vh, stride_vd, q.dtype, D, V_T,
                         VEC)
    return online_softmax_step(acc, m, den, s, v, DOT_PREC)


@triton.jit
def prefetch_l2(ptrs):
    """Ask L2 for the 128-byte lines at ``ptrs`` (``prefetch.global.L2``: no registers or shared memory held, no
    wait); a no-op under the CPU interpreter."""
    if not INTERPRET:
        tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                                  is_pure=False, pack=1)


@triton.jit
def gpu_fence():
    """``fence.acq_rel.gpu`` by every thread of the program: its earlier stores are visible GPU-wide before its
    later ones (and, after an acquire, later loads see what others released); a no-op under the CPU interpreter."""
    if not INTERPRET:
        tl.inline_asm_elementwise("fence.acq_rel.gpu; mov.u32 $0, 0;", "=r", [], dtype=tl.int32, is_pure=False,
                                  pack=1)


@triton.jit
def prefetch_paged_block(k_ptr, v_ptr, pt_row, n0, end, kvh, stride_kp, stride_ks, stride_kh, stride_vp, stride_vs,
                         stride_vh, PAGE: tl.constexpr, BLOCK_N: tl.constexpr, D: tl.constexpr, V_T: tl.constexpr):
    """L2 prefetch of the K and V bytes of the paged block at rows ``n0 ..`` (those below ``end``; page 0 past it):
    one line per K row (a 128-byte fp8 row of D 128) and, with transposed V, lines spread over each page's
    contiguous ``D x PAGE`` bytes of V^T (one per slot, D bytes apart). Shared memory caps how many bytes a
    program's pipelined loads keep in flight; prefetched lines are not counted against it."""
    pos = n0 + tl.arange(0, BLOCK_N)
    page = tl.load(pt_row + pos // PAGE, mask=pos < end, other=0).to(tl.int64)
    slot = pos % PAGE
    prefetch_l2(k_ptr + page * stride_kp + slot * stride_ks + kvh * stride_kh)
    if V_T:
        prefetch_l2(v_ptr + page * stride_vp + kvh * stride_vh + slot * D)
    else:
        prefetch_l2(v_ptr + page * stride_vp + slot * stride_vs + kvh * stride_vh)


@triton.jit
def paged_v_tile(v_ptr, page, slot, valid, kvh, stride_vp, stride_vs, stride_vh, stride_vd, dtype: tl.constexpr,
                 D: tl.constexpr, V_T: tl.constexpr, VEC: tl.constexpr, RAW: tl.constexpr = False):
    """V rows [N, D] of a paged block (``page``/``slot``/``valid`` [N] as in ``attend_paged_block``) as ``dtype``,
    ready for P·V. Every V reader of the paged cache goes through here (decode, softmax·V, Quest, paged prefill).

    Two page layouts (``common.v_layout`` tells them apart from the strides; docs/kv_fp8.md):
    - token-major ``[page, slot, Hkv, D]`` (bf16 pages): rows past ``valid`` masked to zero, never read.
    - transposed ``[page, Hkv, D, slot]`` (``V_T``, fp8 pages: ``stride_vs`` 1): P·V contracts along the slots,
      now contiguous bytes, so the fp8 tile goes to shared memory as loaded (16-byte copies of ``VEC`` slots)
      and is converted after, with no fp16 staging. Whole runs of ``VEC`` slots are read, so invalid rows are
      read too (their page is 0 where the page table is masked): their scores are -inf, weight 0, and the
      NaN-dropping max against -448 (a no-op on e4m3 values) keeps garbage bytes from turning 0 x NaN into NaN.
    - ``RAW`` (transposed pages, ``blocks_fp8``): the stored V^T tile [D, N] as it is, for the e4m3 tensor cores
      (no NaN guard: the product multiplies the bytes themselves).
    """
    offs_d = tl.arange(0, D)
    if V_T:
        offs = (page * stride_vp + slot * stride_vs + kvh * stride_vh)[None, :] + offs_d[:, None] * stride_vd
        offs = tl.max_contiguous(tl.multiple_of(offs, [1, VEC]), [1, VEC])  # [D, N]: VEC slots of one page
        if RAW:
            return tl.load(v_ptr + offs)
        else:
            vt = tl.load(v_ptr + offs).to(dtype)
            return tl.trans(tl.maximum(vt, tl.full([1, 1], -448.0, dtype)))
    else:
        v = tl.load(v_ptr + (page * stride_vp + slot * stride_vs + kvh * stride_vh)[:, None] + offs_d[None, :],
                    mask=valid[:, None], other=0.0).to(dtype)
        return fp8_v_staged(v, valid, v_ptr.dtype.element_ty)


@triton.jit
def fp8_v_staged(v, valid, CACHE_DTYPE: tl.constexpr):
    """fp8 V tile [N, D], already converted: times its row mask (no-op on values; bf16 caches skip it). The product
    has an operand that is not a load, so Triton keeps the conversion before V's shared-memory staging instead of
    moving it after: P·V reads V transposed, which fp8 can only do a byte at a time (H200, 32 x 8K: 233 -> 208 us)."""
    if CACHE_DTYPE == tl.float8e4nv:
        return v * valid[:, None].to(v.dtype)
    else:
        return v


@triton.jit
def fp8_scales(ks_ptr, vs_ptr, kvh, FP8: tl.constexpr):
    """(K scale, V scale) of KV head ``kvh`` for an fp8 cache; (1, 1) otherwise (ks_ptr/vs_ptr then unread)."""
    if FP8:
        return tl.load(ks_ptr + kvh), tl.load(vs_ptr + kvh)
    else:
        return 1.0, 1.0


@triton.jit
def store_partial(po_ptr, lse_ptr, acc, m, den, b, kvh, split, stride_pb, stride_ph, stride_ps, stride_lb, stride_lh,
                  G: tl.constexpr, G_PAD: tl.constexpr, D: tl.constexpr):
    """Write one split's normalized output [G, D] and log2-sum-exp [G] for query heads kvh*G .. kvh*G+G-1."""
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    heads = kvh * G + offs_g
    g_mask = offs_g < G
    den_safe = tl.where(den > 0, den, 1.0)
    out = acc / den_safe[:, None]
    lse = tl.where(den > 0, m + tl.log2(den_safe), float("-inf"))
    po = po_ptr + b * stride_pb + heads[:, None] * stride_ph + split * stride_ps + offs_d[None, :]
    tl.store(po, out, mask=g_mask[:, None])
    tl.store(lse_ptr + b * stride_lb + heads * stride_lh + split, lse, mask=g_mask)


@triton.jit
def store_final(out_ptr, acc, den, b, kvh, stride_ob, stride_oh, G: tl.constexpr, G_PAD: tl.constexpr,
                D: tl.constexpr):
    """Single-split case: write the normalized output [G, D] straight to ``out`` (zeros for an empty row)."""
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, D)
    out = acc / tl.where(den > 0, den, 1.0)[:, None]
    ptrs = out_ptr + b * stride_ob + (kvh * G + offs_g)[:, None] * stride_oh + offs_d[None, :]
    tl.store(ptrs, out.to(out_ptr.dtype.element_ty), mask=(offs_g < G)[:, None])


@triton.jit
def store_split(out_ptr, po_ptr, lse_ptr, acc, m, den, v_scale, b, kvh, split, start, length, stride_ob, stride_oh,
                stride_pb, stride_ph, stride_ps, stride_lb, stride_lh, G: tl.constexpr, G_PAD: tl.constexpr,
                D: tl.constexpr, FP8: tl.constexpr, DIRECT: tl.constexpr):
    """A split-KV program's store: V's fp8 scale once on the output, then ``out`` directly (one split) or this
    split's partial + lse (a split that starts past the row's length writes nothing: the merge skips it; the
    merge is ``decode_merge.fold_merge`` after this, or its own kernel)."""
    if FP8:
        acc = acc * v_scale
    if DIRECT:
        store_final(out_ptr, acc, den, b, kvh, stride_ob, stride_oh, G, G_PAD, D)
    elif start < length:
        store_partial(po_ptr, lse_ptr, acc, m, den, b, kvh, split, stride_pb, stride_ph, stride_ps,
                      stride_lb, stride_lh, G, G_PAD, D)
