"""Batch-invariant attention in PyTorch: the CPU path of deterministic mode, twin of ``kernels/ops_invariant.py``.

The five functions of ``ops_torch`` with the same signatures. Every query row is reduced over its own keys in
blocks of ``BLOCK`` positions counted from 0, one online-softmax step per block, in the same order whatever the
batch, its longest sequence or the page table's width: blocks past a row's length change nothing (their weights
are exactly 0). Prefill runs every prompt token through the same per-row reduction as a decode step at that
position, so a recomputed sequence gets the K/V its decode steps wrote, bit for bit. Products are elementwise
multiplies and sums over a fixed last dimension (no batched GEMM whose kernel choice depends on the batch).
"""
from __future__ import annotations

import torch

from litesys.kernels.ref.ops_torch import gather_kv

BLOCK = 16  # key positions per online-softmax step


def _pad_table(page_table: torch.Tensor, n_pages: int) -> torch.Tensor:
    """The first ``n_pages`` columns, zero-padded (page ids past a length are never given weight)."""
    if page_table.shape[1] >= n_pages:
        return page_table[:, :n_pages]
    return torch.cat([page_table, page_table.new_zeros(page_table.shape[0], n_pages - page_table.shape[1])], 1)


def _gather(cache: torch.Tensor, page_table: torch.Tensor, length: int, scale: torch.Tensor | None) -> torch.Tensor:
    """[B, length, Hkv, D] fp32 rows of each sequence (``length`` a multiple of BLOCK)."""
    n_pages = -(-length // cache.shape[1])
    return gather_kv(cache, _pad_table(page_table, n_pages), length, scale).float()


def _scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """q [B, Hkv, G, D], k [B, N, Hkv, D] -> q·k * scale [B, Hkv, G, N] (elementwise product, sum over D)."""
    return (q[:, :, :, None, :] * k.permute(0, 2, 1, 3)[:, :, None]).sum(-1) * scale


def _online_softmax_v(score_block, v: torch.Tensor, lengths: torch.Tensor, b: int, hkv: int, g: int,
                      block: int) -> torch.Tensor:
    """softmax·V over ``v`` [B, L, Hkv, D] in blocks of ``block``; ``score_block(s)`` gives the block's scores
    [B, Hkv, G, block]. Positions >= length get weight 0 (and their V rows are zeroed: garbage never leaks)."""
    d, n, dev = v.shape[-1], v.shape[1], v.device
    m = torch.full((b, hkv, g), float("-inf"), device=dev)
    den = torch.zeros(b, hkv, g, device=dev)
    acc = torch.zeros(b, hkv, g, d, device=dev)
    for s in range(0, n, block):
        valid = torch.arange(s, s + block, device=dev) < lengths[:, None]  # [B, block]
        sc = score_block(s).masked_fill(~valid[:, None, None, :], float("-inf"))
        vb = v[:, s:s + block].masked_fill(~valid[:, :, None, None], 0.0).permute(0, 2, 1, 3)  # [B, Hkv, block, D]
        m_new = torch.maximum(m, sc.amax(-1))
        m_safe = torch.where(m_new == float("-inf"), 0.0, m_new)
        alpha = torch.exp(m - m_safe)
        p = torch.exp(sc - m_safe[..., None])
        den = den * alpha + p.sum(-1)
        acc = acc * alpha[..., None] + (p[..., None] * vb[:, :, None]).sum(-2)
        m = m_new
    return acc / torch.where(den > 0, den, 1.0)[..., None]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor, scale: float,
            block: int) -> torch.Tensor:
    """q [B, Hq, D]; k, v [B, L, Hkv, D] fp32 (L a multiple of block) -> [B, Hq, D] fp32."""
    b, hq, d = q.shape
    hkv = k.shape[2]
    qg = q.float().view(b, hkv, hq // hkv, d)
    out = _online_softmax_v(lambda s: _scores(qg, k[:, s:s + block], scale), v, lengths, b, hkv, hq // hkv, block)
    return out.reshape(b, hq, d)


def _padded_len(n: int, block: int) -> int:
    return max(block, -(-n // block) * block)


def paged_decode_fused(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                       lengths: torch.Tensor, scale: float, max_len: int | None = None,
                       k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
                       order: torch.Tensor | None = None, block: int = BLOCK) -> torch.Tensor:
    """Decode attention over the paged cache -> [B, Hq, D] (q's dtype for fp8 caches, else the cache's; ``order``,
    a launch order, is unused)."""
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    n = _padded_len(max_len, block)
    k = _gather(k_cache, page_table, n, k_scale)
    v = _gather(v_cache, page_table, n, v_scale)
    out = _attend(q, k, v, lengths, scale, block)
    return out.to(q.dtype if v_scale is not None else v_cache.dtype)


def paged_decode_logits(q: torch.Tensor, k_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
                        scale: float, max_len: int, k_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Raw logits ``q·k * scale`` fp32 [B, Hq, max_len], ``-inf`` at positions >= length."""
    b, hq, d = q.shape
    hkv = k_cache.shape[2]
    k = _gather(k_cache, page_table, _padded_len(max_len, 1), k_scale)
    logits = _scores(q.float().view(b, hkv, hq // hkv, d), k, scale).reshape(b, hq, max_len)
    pos = torch.arange(max_len, device=q.device)
    return logits.masked_fill(pos[None, None, :] >= lengths[:, None, None], float("-inf"))


def paged_softmax_v(logits: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor, lengths: torch.Tensor,
                    v_scale: torch.Tensor | None = None, out_dtype: torch.dtype | None = None,
                    block: int = BLOCK) -> torch.Tensor:
    """softmax(logits)·V -> [B, Hq, D] in the cache dtype (``out_dtype`` if given); -inf positions weigh 0."""
    b, hq, width = logits.shape
    hkv, d = v_cache.shape[2], v_cache.shape[3]
    n = _padded_len(width, block)
    v = _gather(v_cache, page_table, n, v_scale)
    lg = torch.full((b, hq, n), float("-inf"), device=logits.device)
    lg[:, :, :width] = logits.float()
    lg = lg.view(b, hkv, hq // hkv, n)
    out = _online_softmax_v(lambda s: lg[..., s:s + block], v, lengths, b, hkv, hq // hkv, block)
    return out.reshape(b, hq, d).to(out_dtype or v_cache.dtype)


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int,
                      scale: float, k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
                      block: int = BLOCK) -> torch.Tensor:
    """Causal attention within each packed prompt, token ``t`` reduced exactly as a decode step at position ``t``
    would (length t + 1). q: [T, Hq, D]; k, v: [T, Hkv, D] (fp8 with their scales) -> [T, Hq, D]."""
    if k_scale is not None:  # the values a decode step reads back from an fp8 cache
        k, v = k.float() * k_scale[:, None], v.float() * v_scale[:, None]
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        n = e - s
        if n == 0:
            continue
        pad = _padded_len(n, block)
        ks = k.new_zeros(pad, *k.shape[1:]).float()
        vs = v.new_zeros(pad, *v.shape[1:]).float()
        ks[:n], vs[:n] = k[s:e], v[s:e]
        # every query row sees the whole prompt (a broadcast view, no copy); its length masks the rest
        out[s:e] = _attend(q[s:e], ks.expand(n, *ks.shape), vs.expand(n, *vs.shape),
                           torch.arange(1, n + 1, device=q.device), scale, block).to(q.dtype)
    return out


def paged_prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cu_seqlens: torch.Tensor,
                            page_table: torch.Tensor, lengths: torch.Tensor, max_seqlen: int, scale: float,
                            k_scale: torch.Tensor | None = None, v_scale: torch.Tensor | None = None,
                            block: int = BLOCK) -> torch.Tensor:
    """Chunks over their sequences' pages (``ops_torch.paged_prefill_attention``), the row at position ``t`` reduced
    exactly as ``prefill_attention`` (and a decode step) reduce it: a chunked prefill is the whole one, bit for bit."""
    out = torch.empty_like(q)
    bounds, lens = cu_seqlens.tolist(), lengths.tolist()
    for b, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        n, m = lens[b], e - s
        if m == 0:
            continue
        pad = _padded_len(n, block)
        k, v = (_gather(c, page_table[b:b + 1], pad, sc)[0] for c, sc in ((k_cache, k_scale), (v_cache, v_scale)))
        out[s:e] = _attend(q[s:e], k.expand(m, *k.shape), v.expand(m, *v.shape),
                           torch.arange(n - m + 1, n + 1, device=q.device), scale, block).to(q.dtype)
    return out
