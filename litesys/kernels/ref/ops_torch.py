"""Plain-PyTorch attention over the paged KV cache: the CPU path and the reference every kernel is tested against.

KV layout (one layer): ``k_cache``/``v_cache`` are ``[num_pages, page_size, num_kv_heads, head_dim]``.
Query head ``h`` reads KV head ``h // (num_q_heads // num_kv_heads)`` (GQA).

FP8 caches: ``k_scale``/``v_scale`` [Hkv] fp32 are given and the gathered rows are dequantised (``x8 * scale``,
fp32) before the same math; outputs are then in ``q``'s dtype (``out_dtype`` for ``paged_softmax_v``).
"""
from __future__ import annotations

import torch

from litesys.kernels.common import cdiv


def gather_kv(cache: torch.Tensor, page_table: torch.Tensor, max_len: int,
              scale: torch.Tensor | None = None) -> torch.Tensor:
    """[B, max_len, Hkv, D] view of each sequence's cache (entries past its length are garbage); with ``scale``
    (fp8 cache) the dequantised fp32 rows."""
    page_size = cache.shape[1]
    n_pages = cdiv(max_len, page_size)
    pages = page_table[:, :n_pages].long()  # [B, n_pages]
    kv = cache[pages]  # [B, n_pages, page, Hkv, D]
    b = kv.shape[0]
    kv = kv.reshape(b, n_pages * page_size, *cache.shape[2:])[:, :max_len]
    return kv if scale is None else kv.float() * scale[:, None]


def paged_decode_logits(
    q: torch.Tensor, k_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
    scale: float, max_len: int, k_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Raw attention logits ``q·k * scale`` as fp32 ``[B, Hq, max_len]``, ``-inf`` at positions >= length."""
    b, hq, d = q.shape
    hkv = k_cache.shape[2]
    k = gather_kv(k_cache, page_table, max_len, k_scale).float()  # [B, L, Hkv, D]
    qg = q.float().view(b, hkv, hq // hkv, d)
    logits = torch.einsum("bkgd,blkd->bkgl", qg, k).reshape(b, hq, max_len) * scale
    pos = torch.arange(max_len, device=q.device)
    return logits.masked_fill(pos[None, None, :] >= lengths[:, None, None], float("-inf"))


def paged_softmax_v(
    logits: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
    v_scale: torch.Tensor | None = None, out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """softmax(logits)·V -> ``[B, Hq, D]`` in the cache dtype (``out_dtype`` if given). Masked (-inf) positions
    get zero weight."""
    b, hq, max_len = logits.shape
    hkv, d = v_cache.shape[2], v_cache.shape[3]
    v = gather_kv(v_cache, page_table, max_len, v_scale).float()  # [B, L, Hkv, D]
    p = torch.softmax(logits.float(), dim=-1).view(b, hkv, hq // hkv, max_len)
    out = torch.einsum("bkgl,blkd->bkgd", p, v).reshape(b, hq, d)
    return out.to(out_dtype or v_cache.dtype)


def paged_decode_fused(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
    lengths: torch.Tensor, scale: float, max_len: int | None = None,
    k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None, order: torch.Tensor | None = None,
) -> torch.Tensor:
    """Decode attention without a processor (on CPU simply the two stages; ``order``, a launch order, is unused)."""
    if max_len is None:
        max_len = int(lengths.max())
    logits = paged_decode_logits(q, k_cache, page_table, lengths, scale, max_len, k_scale)
    return paged_softmax_v(logits, v_cache, page_table, lengths, v_scale, q.dtype if v_scale is not None else None)


def prefill_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
    scale: float, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention within each packed prompt. q: [T, Hq, D]; k, v: [T, Hkv, D] -> [T, Hq, D].

    fp8 ``k``/``v`` (the values the cache holds) with their scales: dequantised to ``q``'s dtype first."""
    if k_scale is not None:
        k = (k.float() * k_scale[:, None]).to(q.dtype)
        v = (v.float() * v_scale[:, None]).to(q.dtype)
    hq, hkv = q.shape[1], k.shape[1]
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    # Prefill is once per prompt, not on the per-token hot path: a loop of SDPA calls is fine here.
    for s, e in zip(bounds[:-1], bounds[1:]):
        qs = q[s:e].transpose(0, 1)
        ks = k[s:e].transpose(0, 1).repeat_interleave(hq // hkv, dim=0)
        vs = v[s:e].transpose(0, 1).repeat_interleave(hq // hkv, dim=0)
        o = torch.nn.functional.scaled_dot_product_attention(
            qs.unsqueeze(0), ks.unsqueeze(0), vs.unsqueeze(0), is_causal=True, scale=scale)
        out[s:e] = o[0].transpose(0, 1)
    return out


def paged_prefill_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cu_seqlens: torch.Tensor,
    page_table: torch.Tensor, lengths: torch.Tensor, max_seqlen: int, scale: float,
    k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of packed chunks over their sequences' pages: chunk ``b`` (q rows ``cu[b]..cu[b+1]``) is the
    last rows of sequence ``b``'s ``lengths[b]`` positions, whose K/V (cached prefix, earlier chunks, this chunk)
    are in its pages ``page_table[b]``. q: [T, Hq, D] -> [T, Hq, D]; fp8 pages dequantised as prefill_attention."""
    hq, hkv = q.shape[1], k_cache.shape[2]
    out = torch.empty_like(q)
    bounds, lens = cu_seqlens.tolist(), lengths.tolist()
    for b, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        n, m = lens[b], e - s
        k, v = (gather_kv(c, page_table[b:b + 1], n, sc)[0].to(q.dtype) for c, sc in ((k_cache, k_scale),
                                                                                    (v_cache, v_scale)))
        ks, vs = (x.transpose(0, 1).repeat_interleave(hq // hkv, dim=0) for x in (k, v))
        causal = torch.arange(n, device=q.device)[None, :] <= torch.arange(n - m, n, device=q.device)[:, None]
        o = torch.nn.functional.scaled_dot_product_attention(
            q[s:e].transpose(0, 1).unsqueeze(0), ks.unsqueeze(0), vs.unsqueeze(0), attn_mask=causal, scale=scale)
        out[s:e] = o[0].transpose(0, 1)
    return out
