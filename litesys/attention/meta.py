"""Per-step attention metadata shared by the executors, the KV manager, kernels and sparse methods."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttnMeta:
    """Everything attention needs for one forward step: ``T`` new tokens, token-major (decode: ``T == B``, one per
    sequence; prefill: the ``B`` prompts or chunks packed back to back, ``cu_seqlens``)."""

    is_prefill: bool
    slot_mapping: torch.Tensor  # [T] int64: flat KV slot (page * page_size + offset) of each new token
    page_size: int
    num_q_heads: int = 0
    num_kv_heads: int = 0
    # decode (and a prefill of chunks that start past position 0: their K/V are read from the pages)
    page_table: torch.Tensor | None = None  # [B, max_pages] int32, row b = pages of sequence b in order
    lengths: torch.Tensor | None = None  # [B] int32: tokens in the KV cache incl. the new ones
    max_len: int = 0  # host-side upper bound of ``lengths`` (width of the raw-logits tensor)
    # [B] int32 rows longest first (kernels.step.longest_first), the order the dense decode kernel starts its
    # programs in (the longest run first, the short ones fill the last wave); None: row order. Results are the same
    order: torch.Tensor | None = None
    # prefill
    cu_seqlens: torch.Tensor | None = None  # [B+1] int32 prefix sums of prompt lengths
    max_seqlen: int = 0
    # [B] int64 per-sequence id (the sample's seed): the random sparse methods' noise is a function of it
    seq_ids: torch.Tensor | None = None

    @property
    def group_size(self) -> int:
        return self.num_q_heads // self.num_kv_heads
