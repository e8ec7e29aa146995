"""Quest in plain PyTorch: page scores from the key summaries, and decode attention over the selected pages only.

The CPU path, and the reference the Triton kernels (``kernels/quest_triton.py``) are tested against.
Shapes: q ``[B, Hq, D]``; caches ``[P, page, Hkv, D]``; summaries ``[P, Hkv, D]``; page_table ``[B, max_pages]``;
``sel`` ``[B, Hkv, S]`` int32 logical page indices (into the row of the page table), ``-1`` = empty slot.
"""
from __future__ import annotations

import torch


def quest_scores(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, page_table: torch.Tensor,
                 lengths: torch.Tensor, page_size: int, n_pages: int) -> torch.Tensor:
    """[B, Hkv, n_pages] fp32: per KV head, the sum over its query heads of Quest's upper bound
    ``sum_d max(q_d * min_d, q_d * max_d)`` of ``q·k`` over the page's keys; ``-inf`` past each sequence's pages."""
    b, hq, d = q.shape
    hkv = kmin.shape[1]
    pages = page_table[:, :n_pages].long()
    lo, hi = kmin[pages].float(), kmax[pages].float()  # [B, n_pages, Hkv, D]
    qg = q.float().view(b, hkv, hq // hkv, 1, d)
    lo, hi = lo.permute(0, 2, 1, 3)[:, :, None], hi.permute(0, 2, 1, 3)[:, :, None]  # [B, Hkv, 1, n_pages, D]
    bound = torch.maximum(qg * lo, qg * hi).sum(dim=-1).sum(dim=2)  # [B, Hkv, n_pages]
    valid = torch.arange(n_pages, device=q.device)[None, :] < (lengths.long()[:, None] + page_size - 1) // page_size
    return bound.masked_fill(~valid[:, None, :], float("-inf"))


def quest_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, page_table: torch.Tensor,
                 lengths: torch.Tensor, sel: torch.Tensor, scale: float, k_scale: torch.Tensor | None = None,
                 v_scale: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q·K_sel * scale)·V_sel over the selected pages -> [B, Hq, D] (zeros for a row with no pages).

    fp8 caches: ``k_scale``/``v_scale`` [Hkv] fp32; the selected rows are dequantised, the output is in q's dtype."""
    b, hq, d = q.shape
    page, hkv = k_cache.shape[1], k_cache.shape[2]
    used = sel >= 0
    lp = sel.clamp(min=0).long()
    phys = page_table.long().gather(1, lp.view(b, -1)).view(lp.shape)
    phys = torch.where(used, phys, 0)  # empty slots read the scratch page 0, never another page
    head = torch.arange(hkv, device=q.device)[None, :, None]
    k = k_cache[phys, :, head].float()  # [B, Hkv, S, page, D]: only the selected pages are read
    v = v_cache[phys, :, head].float()
    if k_scale is not None:
        k = k * k_scale.view(1, hkv, 1, 1, 1)
        v = v * v_scale.view(1, hkv, 1, 1, 1)
    pos = lp[..., None] * page + torch.arange(page, device=q.device)
    tok = used[..., None] & (pos < lengths.long()[:, None, None, None])  # [B, Hkv, S, page]
    k = torch.where(tok[..., None], k, 0.0)  # where, not multiply: stale/NaN data never reaches the sums
    v = torch.where(tok[..., None], v, 0.0)
    qg = q.float().view(b, hkv, hq // hkv, d)
    logits = torch.einsum("bkgd,bkstd->bkgst", qg, k) * scale
    logits = logits.masked_fill(~tok[:, :, None], float("-inf")).flatten(3)  # [B, Hkv, G, S*page]
    p = torch.softmax(logits, dim=-1)
    p = torch.where(tok.flatten(2)[:, :, None].any(dim=-1, keepdim=True), p, 0.0)
    out = torch.einsum("bkgn,bknd->bkgd", p, v.flatten(2, 3))
    return out.reshape(b, hq, d).to(v_cache.dtype if v_scale is None else q.dtype)
