"""Plain-PyTorch twins of ``kernels/step.py``: the decode step's bookkeeping around the forward (the CPU path and
the reference the kernels are tested against)."""
from __future__ import annotations

import torch


def decode_meta(seq_len: torch.Tensor, page_table: torch.Tensor, page_size: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions, flat KV slots, lengths with the new token) of the rows; ``seq_len`` advances in place."""
    pos = seq_len.clone()
    page = page_table.gather(1, (pos // page_size).unsqueeze(1)).squeeze(1).long()
    seq_len += page_table[:, 0] != 0  # a CUDA graph's padding rows (only the scratch page 0) stay at 0
    return pos, page * page_size + pos % page_size, (pos + 1).int()


def longest_first(lengths: torch.Tensor) -> torch.Tensor:
    """Row indices, longest first, ties in row order (``kernels.step.longest_first``)."""
    return torch.sort(lengths, descending=True, stable=True).indices.int()


def repetition_hits(gen: torch.Tensor, gen_len: torch.Tensor, window: int, block: int, threshold: int
                    ) -> torch.Tensor:
    """Which rows repeat: their last ``window`` tokens (of gen [B, cap], gen_len [B]) hold the trailing ``block``
    at least ``threshold`` times at any offset -> bool [B] (False while gen_len < window)."""
    if gen.shape[1] < window:
        return torch.zeros(gen.shape[0], dtype=torch.bool, device=gen.device)
    start = (gen_len - window).clamp_min(0)
    cols = start.unsqueeze(1) + torch.arange(window, device=gen.device).unsqueeze(0)
    win = gen.gather(1, cols.clamp(max=gen.shape[1] - 1))  # [B, window]
    tail = win[:, window - block:]  # [B, block]
    frames = win.unfold(1, block, 1)  # [B, window - block + 1, block]
    count = (frames == tail.unsqueeze(1)).all(-1).sum(-1)
    return (count >= threshold) & (gen_len >= window)


def commit(tok: torch.Tensor, generated: torch.Tensor, gen_len: torch.Tensor, last_token: torch.Tensor,
           finish_code: torch.Tensor, max_gen: torch.Tensor, ignore_eos: torch.Tensor, rep_group: torch.Tensor,
           eos: torch.Tensor, rep_groups: tuple[tuple[int, int, int], ...], codes: tuple[int, int, int, int]) -> None:
    """The rows' new tokens into their slot state and stop codes, in place (``kernels.step.commit``)."""
    running, stop, length, repetition = codes
    live = finish_code == running
    # a finished row (not yet collected) writes just past its end and keeps its length and code
    generated.scatter_(1, gen_len.clamp(max=generated.shape[1] - 1).unsqueeze(1), tok.int().unsqueeze(1))
    gen_len += live  # in place: gen_len of the live rows
    last_token.copy_(tok)
    is_eos = (tok.unsqueeze(1) == eos).any(1) & (ignore_eos == 0)  # isin may sync (sort path)
    code = torch.where(is_eos, stop, torch.where(gen_len >= max_gen, length, running))
    for g, (window, block, thr) in enumerate(rep_groups):
        hit = repetition_hits(generated, gen_len, window, block, thr) & (rep_group == g)
        code = torch.where((code == running) & hit, repetition, code)
    finish_code.copy_(torch.where(live, code, finish_code))
