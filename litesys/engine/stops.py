"""Stop checks for the whole batch at once, on the device (no per-sequence host work)."""
from __future__ import annotations

import torch

# finish codes kept on the device; names as reported to the user
RUNNING, STOP, LENGTH, REPETITION = 0, 1, 2, 3
FINISH_REASONS = {STOP: "stop", LENGTH: "length", REPETITION: "repetition"}


def repetition_hits(gen: torch.Tensor, rows: torch.Tensor, gen_len: torch.Tensor, window: int, block: int,
                    threshold: int) -> torch.Tensor:
    """Which rows repeat: the last ``window`` generated tokens contain the trailing ``block`` tokens at least
    ``threshold`` times (occurrences at any offset, overlapping ones and the trailing block itself counted).

    gen: [S, cap] generated tokens of every slot; rows: [B] the slots to check; gen_len: [B]
    -> bool [B] (False where gen_len < window). Only the window is read, never the whole buffer.
    """
    B = rows.shape[0]
    if gen.shape[1] < window:
        return torch.zeros(B, dtype=torch.bool, device=gen.device)
    start = (gen_len - window).clamp_min(0)
    cols = start.unsqueeze(1) + torch.arange(window, device=gen.device).unsqueeze(0)
    win = gen[rows.unsqueeze(1), cols.clamp(max=gen.shape[1] - 1)]  # [B, window]
    tail = win[:, window - block:]  # [B, block]
    frames = win.unfold(1, block, 1)  # [B, window - block + 1, block]
    count = (frames == tail.unsqueeze(1)).all(-1).sum(-1)
    return (count >= threshold) & (gen_len >= window)
