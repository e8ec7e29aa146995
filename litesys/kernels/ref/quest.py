"""Quest in plain PyTorch: the selection's static sizes, page scores, the page selection, decode over the selection.

The CPU path, and the reference the Triton kernels (``kernels/quest.py``) are tested against.
Shapes: q ``[B, Hq, D]``; caches ``[P, page, Hkv, D]``; summaries ``[P, Hkv, D]``; page_table ``[B, max_pages]``;
``sel`` ``[B, Hkv, S]`` int32 logical page indices (into the row of the page table), ``-1`` = empty slot.
"""
from __future__ import annotations

import torch

from litesys.kernels.common import cdiv


def page_counts(page_size: int, sink: int, local: int) -> tuple[int, int]:
    """(sink pages, most local pages): static sizes of the selection."""
    w = max(local, 1)
    return cdiv(sink, page_size), cdiv(w - 1, page_size) + 1


def select_pages(scores: torch.Tensor, lengths: torch.Tensor, page_size: int, topk: int, sink: int,
                 local: int) -> torch.Tensor:
    """scores [B, Hkv, NP] -> sel [B, Hkv, S] int32: selected logical pages ascending, then -1 padding.

    S = sink pages + min(topk, NP) + local pages is static (no host sync; CUDA-graph safe). Equal scores: the
    lower page first. The CPU path and the reference of ``kernels.quest.quest_select``.
    """
    b, hkv, n_pages = scores.shape
    dev = scores.device
    n_sink, n_local = page_counts(page_size, sink, local)
    lens = lengths.long()
    used = cdiv(lens, page_size)  # [B] pages in use
    first_local = (lens - max(local, 1)).clamp(min=0) // page_size
    p = torch.arange(n_pages, device=dev)
    middle = (p[None, :] >= n_sink) & (p[None, :] < first_local[:, None]) & (p[None, :] < used[:, None])
    k = min(topk, n_pages)
    # stable sort, not topk: equal scores go to the lower page, exactly as the Triton selection does
    vals, mid = scores.masked_fill(~middle[:, None, :], float("-inf")).sort(dim=-1, descending=True, stable=True)
    vals, mid = vals[..., :k], mid[..., :k]
    mid_ok = vals > float("-inf")
    sinks = torch.arange(n_sink, device=dev).expand(b, hkv, n_sink)
    sink_ok = sinks < used[:, None, None]
    locs = first_local[:, None, None] + torch.arange(n_local, device=dev)
    loc_ok = (locs >= n_sink) & (locs < used[:, None, None])
    pages = torch.cat([sinks, mid, locs.expand(b, hkv, n_local)], dim=-1)
    ok = torch.cat([sink_ok, mid_ok, loc_ok.expand(b, hkv, n_local)], dim=-1)
    big = torch.iinfo(torch.int64).max
    pages = torch.where(ok, pages, big).sort(dim=-1).values  # ascending: sequential reads, empty slots last
    return torch.where(pages == big, -1, pages).to(torch.int32)


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
    valid = torch.arange(n_pages, device=q.device)[None, :] < cdiv(lengths.long()[:, None], page_size)
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
