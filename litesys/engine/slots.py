"""Per-slot decode state on the device: running sequences occupy slots ``0 .. B-1`` (kept compact), which a decode
step (and its CUDA graph) reads directly; new ones arrive with one packed host->device copy (``place``)."""
from __future__ import annotations

import numpy as np
import torch

# the per-slot scalars ``place`` writes, in the packed copy's column order: integers, then floats (as their bits)
INTS = ("seq_len", "last_token", "gen_len", "max_gen", "finish_code", "rep_group", "ignore_eos", "top_k", "seed",
        "seed_hash")
FLOATS = ("temperature", "top_p", "min_p")
SCALARS = INTS + FLOATS


class Slots:
    def __init__(self, max_slots: int, max_pages: int, gen_capacity: int, device: torch.device):
        S, i32 = max_slots, dict(dtype=torch.int32, device=device)
        self.page_table = torch.zeros(S, max_pages, **i32)
        self.generated = torch.zeros(S, gen_capacity, **i32)  # generated tokens
        # a contiguous [S] row per scalar (one copy places them all): seq_len = tokens in the KV cache (the next one's
        # position), last_token = the next input, finish_code = sampler.RUNNING/..., rep_group = -1 (off) or a group
        self.ints = torch.zeros(len(INTS), S, dtype=torch.int64, device=device)
        self.floats = torch.zeros(len(FLOATS), S, dtype=torch.float32, device=device)
        for name, row in [*zip(INTS, self.ints), *zip(FLOATS, self.floats)]:
            setattr(self, name, row)
        self.seq_len_host = np.zeros(S, dtype=np.int64)  # host mirror of seq_len: page growth without a device read
        self.max_slots, self.device = S, device

    def reset(self) -> None:
        """Every slot empty (in place: captured CUDA graphs keep reading these tensors; ``place`` fills a slot)."""
        for t in (self.page_table, self.generated, self.ints, self.floats):
            t.zero_()
        self.seq_len_host[:] = 0

    def place(self, b0: int, columns: dict[str, list], pages: list[list[int]], generated: list[list[int]]) -> None:
        """Fill slots ``b0 ..`` with new sequences: ``columns`` (every name of SCALARS, one value per sequence),
        their pages and already generated tokens, in one host->device copy (pinned on CUDA: asynchronous)."""
        n, K, C, P, W = len(pages), len(INTS), len(SCALARS), self.page_table.shape[1], max(map(len, generated))
        packed = torch.zeros(n, C + P + W, dtype=torch.int64)
        packed[:, :K] = torch.tensor([columns[c] for c in INTS], dtype=torch.int64).T
        packed[:, K:C] = torch.tensor([columns[c] for c in FLOATS], dtype=torch.float32).view(torch.int32).T
        packed[:, C:C + P] = torch.tensor([pl + [0] * (P - len(pl)) for pl in pages], dtype=torch.int64)
        packed[:, C + P:] = torch.tensor([t + [0] * (W - len(t)) for t in generated], dtype=torch.int64)
        if self.device.type == "cuda":
            packed = packed.pin_memory()  # the caching host allocator keeps it alive until the copy has run
        dev = packed.to(self.device, non_blocking=True)
        rows = slice(b0, b0 + n)
        self.ints[:, rows] = dev[:, :K].T
        self.floats[:, rows] = dev[:, K:C].to(torch.int32).view(torch.float32).T
        self.page_table[rows] = dev[:, C:C + P].to(torch.int32)
        self.generated[rows, :W] = dev[:, C + P:].to(torch.int32)  # W = 0: an empty copy, no launch
        self.seq_len_host[rows] = columns["seq_len"]

    def add_pages(self, rows: np.ndarray, pages: list[int], page_size: int) -> None:
        """Append one page to each of ``rows`` (their next token starts it): one small host->device copy."""
        upd = torch.from_numpy(np.stack([rows, self.seq_len_host[rows] // page_size, pages]).astype(np.int64))
        if self.device.type == "cuda":
            upd = upd.pin_memory()
        upd = upd.to(self.device, non_blocking=True)
        self.page_table[upd[0], upd[1]] = upd[2].int()

    def compact(self, keep: list[int], old_count: int) -> None:
        """Move rows ``keep`` (in order) to ``0 .. len(keep)-1``; ``place`` rewrites every column of a reused row."""
        n = len(keep)
        if keep != list(range(n)):
            src = torch.tensor(keep, dtype=torch.int64, device=self.device)
            self.page_table[:n], self.generated[:n] = self.page_table[src], self.generated[src]
            self.ints[:, :n], self.floats[:, :n] = self.ints[:, src], self.floats[:, src]
            self.seq_len_host[:n] = self.seq_len_host[keep]
        # the freed rows n .. old_count - 1 are CUDA-graph padding now: point them at the scratch page
        self.page_table[n:old_count] = 0
        self.seq_len[n:old_count] = 0
        self.seq_len_host[n:old_count] = 0
