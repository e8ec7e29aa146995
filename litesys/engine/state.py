"""Per-slot decode state kept on the device, so a decode step needs no per-sequence host work.

Running sequences occupy slots ``0 .. B-1`` (kept compact). A decode step reads these tensors directly,
which also makes it capturable as a CUDA graph for a padded batch size: unused rows point at the scratch
page 0 and are ignored.
"""
from __future__ import annotations

import numpy as np
import torch


class SlotState:
    def __init__(self, max_slots: int, max_pages: int, gen_capacity: int, device: torch.device):
        S, dev = max_slots, device
        i32, i64 = dict(dtype=torch.int32, device=dev), dict(dtype=torch.int64, device=dev)
        self.page_table = torch.zeros(S, max_pages, **i32)
        self.seq_len = torch.zeros(S, **i64)  # tokens already in the KV cache (= position of the next one)
        self.last_token = torch.zeros(S, **i64)  # the next decode step's input
        self.gen = torch.zeros(S, gen_capacity, **i32)  # generated tokens
        self.gen_len = torch.zeros(S, **i64)
        self.max_gen = torch.ones(S, **i64)
        self.finish = torch.zeros(S, dtype=torch.int8, device=dev)  # stops.RUNNING/STOP/LENGTH/REPETITION
        self.ignore_eos = torch.zeros(S, dtype=torch.bool, device=dev)
        self.temperature = torch.zeros(S, dtype=torch.float32, device=dev)
        self.top_k = torch.zeros(S, **i64)
        self.top_p = torch.ones(S, dtype=torch.float32, device=dev)
        self.min_p = torch.zeros(S, dtype=torch.float32, device=dev)
        self.seed = torch.zeros(S, **i64)
        self.rep_group = torch.full((S,), -1, **i64)  # index into the engine's repetition settings, -1 = off
        # host mirror of seq_len: decides page allocation without reading the device
        self.seq_len_host = np.zeros(S, dtype=np.int64)
        self.max_slots = S

    def tensors(self) -> list[torch.Tensor]:
        return [self.page_table, self.seq_len, self.last_token, self.gen, self.gen_len, self.max_gen, self.finish,
                self.ignore_eos, self.temperature, self.top_k, self.top_p, self.min_p, self.seed, self.rep_group]

    def reset(self) -> None:
        """Every slot empty, as after construction (in place: captured CUDA graphs keep reading these tensors)."""
        for t in self.tensors():
            t.zero_()
        self.max_gen.fill_(1)
        self.top_p.fill_(1.0)
        self.rep_group.fill_(-1)
        self.seq_len_host[:] = 0

    def compact(self, keep: list[int], old_count: int) -> None:
        """Move rows ``keep`` (in order) to ``0 .. len(keep)-1`` and reset the rows freed after them."""
        n = len(keep)
        if keep != list(range(n)):
            src = torch.tensor(keep, dtype=torch.int64, device=self.seq_len.device)
            for t in self.tensors():
                t[:n] = t[src]
            self.seq_len_host[:n] = self.seq_len_host[keep]
        if old_count > n:
            self.page_table[n:old_count] = 0
            self.seq_len[n:old_count] = 0
            self.gen_len[n:old_count] = 0
            self.finish[n:old_count] = 0
            self.rep_group[n:old_count] = -1
            self.seq_len_host[n:old_count] = 0
