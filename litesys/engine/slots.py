"""Per-slot decode state on the device: running sequences occupy slots ``0 .. B-1`` (kept compact), which a decode
step (and its CUDA graph) reads directly; new ones arrive with one packed host->device copy (``place``)."""
from __future__ import annotations

import numpy as np
import torch

# the per-slot scalars ``place`` writes, in the packed copy's column order (floats travel as their int32 bits)
SCALARS = ("seq_len", "last_token", "gen_len", "max_gen", "finish_code", "rep_group", "ignore_eos", "temperature",
           "top_k", "top_p", "min_p", "seed")
_FLOATS = ("temperature", "top_p", "min_p")


class Slots:
    def __init__(self, max_slots: int, max_pages: int, gen_capacity: int, device: torch.device):
        S, dev = max_slots, device
        i32, i64 = dict(dtype=torch.int32, device=dev), dict(dtype=torch.int64, device=dev)
        self.page_table = torch.zeros(S, max_pages, **i32)
        self.seq_len = torch.zeros(S, **i64)  # tokens already in the KV cache (= position of the next one)
        self.last_token = torch.zeros(S, **i64)  # the next decode step's input
        self.generated = torch.zeros(S, gen_capacity, **i32)  # generated tokens
        self.gen_len = torch.zeros(S, **i64)
        self.max_gen = torch.ones(S, **i64)
        self.finish_code = torch.zeros(S, dtype=torch.int8, device=dev)  # sampler.RUNNING/STOP/LENGTH/REPETITION
        self.ignore_eos = torch.zeros(S, dtype=torch.bool, device=dev)
        self.temperature = torch.zeros(S, dtype=torch.float32, device=dev)
        self.top_k = torch.zeros(S, **i64)
        self.top_p = torch.ones(S, dtype=torch.float32, device=dev)
        self.min_p = torch.zeros(S, dtype=torch.float32, device=dev)
        self.seed = torch.zeros(S, **i64)
        self.rep_group = torch.full((S,), -1, **i64)  # index into the sampler's repetition groups, -1 = off
        self.seq_len_host = np.zeros(S, dtype=np.int64)  # host mirror of seq_len: page growth without a device read
        self.max_slots, self.device = S, dev

    def tensors(self) -> list[torch.Tensor]:
        return [self.page_table, self.generated, *(getattr(self, n) for n in SCALARS)]

    def reset(self) -> None:
        """Every slot empty (in place: captured CUDA graphs keep reading these tensors; ``place`` fills a slot)."""
        for t in self.tensors():
            t.zero_()
        self.seq_len_host[:] = 0

    def place(self, b0: int, columns: dict[str, list], pages: list[list[int]], generated: list[list[int]]) -> None:
        """Fill slots ``b0 ..`` with new sequences: ``columns`` (every name of SCALARS, one value per sequence),
        their pages and already generated tokens, in one host->device copy (pinned on CUDA: asynchronous)."""
        n, C, P, W = len(pages), len(SCALARS), self.page_table.shape[1], max(map(len, generated))
        packed = torch.zeros(n, C + P + W, dtype=torch.int64)
        for j, name in enumerate(SCALARS):
            floats = name in _FLOATS
            packed[:, j] = torch.tensor(columns[name], dtype=torch.float32 if floats else torch.int64).view(
                torch.int32 if floats else torch.int64)
        for i, (pl, toks) in enumerate(zip(pages, generated)):
            packed[i, C:C + len(pl)] = torch.tensor(pl, dtype=torch.int64)
            packed[i, C + P:C + P + len(toks)] = torch.tensor(toks, dtype=torch.int64)
        if self.device.type == "cuda":
            packed = packed.pin_memory()  # the caching host allocator keeps it alive until the copy has run
        dev = packed.to(self.device, non_blocking=True)
        rows = slice(b0, b0 + n)
        for j, name in enumerate(SCALARS):
            t = getattr(self, name)
            t[rows] = dev[:, j].to(torch.int32).view(torch.float32) if name in _FLOATS else dev[:, j].to(t.dtype)
        self.page_table[rows] = dev[:, C:C + P].to(torch.int32)
        if W:
            self.generated[rows, :W] = dev[:, C + P:].to(torch.int32)
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
            for t in self.tensors():
                t[:n] = t[src]
            self.seq_len_host[:n] = self.seq_len_host[keep]
        if old_count > n:  # freed rows are CUDA-graph padding now: point them at the scratch page
            self.page_table[n:old_count] = 0
            self.seq_len[n:old_count] = 0
            self.seq_len_host[n:old_count] = 0
