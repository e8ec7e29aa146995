"""Recompute fallback for sparse attention: re-run a preempted sequence's decode steps, teacher-forced.

A dense prefill of prompt + generated tokens would give the generated positions K/V from dense attention in the
deeper layers, not from the sparse method that produced them. Here the generated positions go through the
decode path again (raw logits -> the layer's processors -> softmax·V, or the selector), each as one decode row
with its own length, its sequence id and its position: the selections of the original steps (the random
methods' noise is a function of exactly these), in chunks of rows of one sequence. Within a chunk, layer ``l``
writes every row's K/V before any row attends, and row ``p`` attends only to positions ``<= p``, so each row
sees exactly the cache its original step saw.
"""
from __future__ import annotations

import dataclasses

import torch

from litesys.attention.meta import AttnMeta

LOGIT_BYTES = 256 << 20  # raw-logits buffer [rows, Hq, len] fp32 of one chunk


class _WholeWrites:
    """The selector seen by a replay chunk: its writes are many tokens of one sequence, so per-page state is
    refreshed as a prefill refreshes it (once per page, from its last written entry) rather than once per row,
    where rows of the same page would race."""

    def __init__(self, selector):
        self.inner = selector

    def on_write(self, layer: int, kv, k_new: torch.Tensor, meta: AttnMeta) -> None:
        self.inner.on_write(layer, kv, k_new, dataclasses.replace(meta, is_prefill=True))

    def active(self, layer: int) -> bool:
        return self.inner.active(layer)

    def decode(self, *args, **kwargs):
        return self.inner.decode(*args, **kwargs)


@torch.inference_mode()
def replay(model, attn, page_row: torch.Tensor, start: int, tokens: list[int], seq_id: int) -> torch.Tensor:
    """Decode ``tokens`` at positions ``start ..`` (their K/V overwrite whatever the prefill wrote) through the
    decode path of ``attn``; ``page_row`` [max_pages] int32 holds the sequence's pages. -> the last row's logits
    [1, vocab] (the next token's)."""
    dev, ps = page_row.device, attn.kv.page_size
    n = len(tokens)
    rows = max(1, min(n, LOGIT_BYTES // (4 * attn.num_q_heads * (start + n))))
    ids = torch.tensor(tokens, dtype=torch.int64, device=dev)
    saved, attn.selector = attn.selector, _WholeWrites(attn.selector) if attn.selector is not None else None
    try:
        for a in range(0, n, rows):
            b = min(n, a + rows)
            pos = torch.arange(start + a, start + b, device=dev)
            table = page_row.unsqueeze(0).expand(b - a, -1)
            slots = page_row[pos // ps].long() * ps + pos % ps
            meta = AttnMeta(False, slots, ps, attn.num_q_heads, attn.num_kv_heads, page_table=table,
                            lengths=(pos + 1).int(), max_len=start + b,
                            extra={"seq_ids": torch.full((b - a,), seq_id, dtype=torch.int64, device=dev)})
            hidden = model.forward(ids[a:b], pos, meta, attn)
    finally:
        attn.selector = saved
    return model.compute_logits(hidden[-1:])
