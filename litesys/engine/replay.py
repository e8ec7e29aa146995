"""Recompute fallback for sparse attention: re-run a preempted sequence's decode steps, teacher-forced, through
the method's decode (one row per generated position, its own length and sequence id), so every row sees the
cache its original step saw (docs/engine.md, "Preemption")."""
from __future__ import annotations

import dataclasses

import torch

from litesys.attention.meta import AttnMeta

LOGIT_BYTES = 256 << 20  # raw-logits buffer [rows, Hq, len] fp32 of one chunk


class _WholeWrites:
    """The method seen by a replay chunk: its writes are many tokens of one sequence, so per-page state is refreshed
    as a prefill does (once per page), not once per row (rows of one page would race)."""

    def __init__(self, method):
        self.inner = method

    def on_write(self, layer: int, kv, k_new: torch.Tensor, meta: AttnMeta) -> None:
        self.inner.on_write(layer, kv, k_new, dataclasses.replace(meta, is_prefill=True))

    def decode(self, *args) -> torch.Tensor:
        return self.inner.decode(*args)


@torch.inference_mode()
def replay(model, attn, page_row: torch.Tensor, start: int, tokens: list[int], seq_id: int) -> torch.Tensor:
    """Decode ``tokens`` at positions ``start ..`` of the sequence in ``page_row`` [max_pages] through the decode path
    of ``attn`` (overwriting the prefill's K/V) -> the last row's logits [1, vocab]."""
    dev, ps = page_row.device, attn.kv.page_size
    n = len(tokens)
    rows = max(1, min(n, LOGIT_BYTES // (4 * attn.num_q_heads * (start + n))))
    ids = torch.tensor(tokens, dtype=torch.int64, device=dev)
    saved, attn.method = attn.method, _WholeWrites(attn.method)
    try:
        for a in range(0, n, rows):
            b = min(n, a + rows)
            pos = torch.arange(start + a, start + b, device=dev)
            table = page_row.unsqueeze(0).expand(b - a, -1)
            slots = page_row[pos // ps].long() * ps + pos % ps
            meta = AttnMeta(False, slots, ps, attn.num_q_heads, attn.num_kv_heads, page_table=table,
                            lengths=(pos + 1).int(), max_len=start + b,
                            seq_ids=torch.full((b - a,), seq_id, dtype=torch.int64, device=dev))
            hidden = model.forward(ids[a:b], pos, meta, attn)
    finally:
        attn.method = saved
    return model.compute_logits(hidden[-1:])
