"""Batched, counter-based sampling on the device (greedy, temperature, top-k, top-p, min-p: the draw for token ``t``
of seed ``s`` is a hash of ``(s, t)``), the stop checks, and ``Sampler``: params -> slot columns -> tokens -> stop
codes (docs/engine.md, "Sampling")."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from litesys.distributed import Dist
from litesys.engine.config import TOPK_CHUNK_FACTOR, TOPK_CHUNKS
from litesys.engine.sequence import Seq
from litesys.engine.slots import Slots
from litesys.kernels.hash import hash_to_uniform, lowbias32
from litesys.sampling_params import SamplingParams


def seed_hash(seeds: torch.Tensor) -> torch.Tensor:
    """The step-independent half of the draw's hash (int64 [B]): a slot keeps it, so a step hashes only its counter."""
    return lowbias32(lowbias32(seeds ^ 0x9E3779B9) ^ (seeds >> 32))


def uniform(hashed: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Deterministic U[0, 1) per row from (seed, step); hashed: ``seed_hash(seeds)`` int64 [B], steps: int [B]."""
    return hash_to_uniform(lowbias32(hashed ^ steps.long()))


@dataclass
class SamplingTensors:  # per-row sampling parameters on the device (rows = batch slots; named as Slots')
    temperature: torch.Tensor  # [B] fp32, 0 = greedy
    top_k: torch.Tensor  # [B] int64, 0 = off
    top_p: torch.Tensor  # [B] fp32
    min_p: torch.Tensor  # [B] fp32
    seed_hash: torch.Tensor  # [B] int64: seed_hash of the sample's seed


def topk(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise top-k, sorted descending; on the GPU the top-k of C chunks first, then of the C·k (far faster)."""
    B, V = x.shape
    chunks = next((c for c in TOPK_CHUNKS if V % c == 0 and V // c >= TOPK_CHUNK_FACTOR * k), 0)
    if not x.is_cuda or chunks == 0:
        return x.topk(k, dim=-1)
    v, i = x.view(B, chunks, V // chunks).topk(k, dim=-1)  # [B, C, k]
    i = i + (torch.arange(chunks, device=x.device) * (V // chunks)).view(1, chunks, 1)
    v2, j = v.reshape(B, chunks * k).topk(k, dim=-1)
    return v2, i.reshape(B, chunks * k).gather(1, j)


def candidates(logits: torch.Tensor, p: SamplingTensors, need_full_sort: bool, max_top_k: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Filtered candidates sorted by probability: (probs [B, K] with zeros for dropped, token ids [B, K])."""
    # order candidates on the raw logits (temperature does not change the order), then scale only those
    vals, idx = logits.sort(dim=-1, descending=True) if need_full_sort else topk(logits, max_top_k)
    vals = vals.float() / p.temperature.clamp_min(1e-6).unsqueeze(1)
    K = vals.shape[1]
    rank = torch.arange(K, device=logits.device).unsqueeze(0)
    k = torch.where(p.top_k > 0, p.top_k, K).clamp(max=K).unsqueeze(1)
    vals = vals.masked_fill(rank >= k, float("-inf"))
    probs = torch.softmax(vals, dim=-1)
    # top-p: keep the smallest prefix whose mass reaches top_p (a token stays if the mass before it is < top_p)
    before = probs.cumsum(-1) - probs
    keep = before < p.top_p.unsqueeze(1)
    # min-p: relative to the most likely token (invariant to the renormalisations above)
    keep &= probs >= p.min_p.unsqueeze(1) * probs[:, :1]
    keep[:, 0] = True
    probs = probs * keep  # normalised by a scan: a sum's kernel may split a row over blocks by the batch's size
    return probs / probs.cumsum(-1)[:, -1:], idx


def sample(logits: torch.Tensor, p: SamplingTensors, steps: torch.Tensor, all_greedy: bool,
           need_full_sort: bool, max_top_k: int) -> torch.Tensor:
    """Next token per row: [B] int64. ``steps``: index of the token being drawn within each sequence."""
    greedy = logits.argmax(dim=-1)
    if all_greedy:
        return greedy
    probs, idx = candidates(logits, p, need_full_sort, max_top_k)
    cdf = probs.cumsum(-1)
    u = uniform(p.seed_hash, steps).unsqueeze(1) * cdf[:, -1:]
    pick = (cdf <= u).sum(-1, keepdim=True).clamp(max=probs.shape[1] - 1)
    # never land on a dropped (zero-mass) candidate because of rounding at the top of the cdf
    pick = torch.minimum(pick, (probs > 0).sum(-1, keepdim=True) - 1)
    tok = idx.gather(1, pick).squeeze(1)
    return torch.where(p.temperature == 0, greedy, tok)


# finish codes kept on the device; names as reported to the user
RUNNING, STOP, LENGTH, REPETITION = 0, 1, 2, 3
FINISH_REASONS = {STOP: "stop", LENGTH: "length", REPETITION: "repetition"}


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


class Sampler:
    """One step's sampling for slot rows: params -> slot columns, host flags, next tokens, stop codes. Repetition
    groups (one per distinct window/block/threshold) belong to one run: ``start_run`` forgets them."""

    def __init__(self, slots: Slots, eos_ids: list[int], max_seq_len: int, dist: Dist, deterministic: bool = False):
        # deterministic: a sampled row's candidates are the whole sorted vocabulary, whatever its batch-mates' top_k
        self.slots, self.max_seq_len, self.dist, self.deterministic = slots, max_seq_len, dist, deterministic
        self.eos = torch.tensor(eos_ids or [-1], dtype=torch.int64, device=slots.device)
        self.start_run()

    def start_run(self) -> None:
        self.rep_groups: list[tuple[int, int, int]] = []  # (window, block, threshold) per group, this run only
        self.refresh([])

    def columns(self, seqs: list[Seq]) -> dict[str, list]:
        """The sampling and stop columns of new sequences' slots (``Slots.place``)."""
        ps = [s.req.params for s in seqs]
        return dict(max_gen=[min(s.req.params.max_new_tokens, self.max_seq_len - len(s.req.prompt)) for s in seqs],
                    rep_group=[self._rep_group(p) for p in ps], ignore_eos=[p.ignore_eos for p in ps],
                    temperature=[p.temperature for p in ps], top_k=[max(p.top_k, 0) for p in ps],
                    top_p=[p.top_p for p in ps], min_p=[p.min_p for p in ps], seed=[s.seed for s in seqs],
                    seed_hash=seed_hash(torch.tensor([s.seed for s in seqs], dtype=torch.int64)).tolist())

    def refresh(self, params: list[SamplingParams]) -> None:
        """Host flags of the running batch: they pick the sampling path without reading the device."""
        self.all_greedy = all(p.temperature == 0 for p in params)
        sampling = [p for p in params if p.temperature > 0]
        self.need_full_sort = self.deterministic or any(p.top_k <= 0 for p in sampling)
        self.max_top_k = 1 if self.need_full_sort else max([p.top_k for p in sampling] + [1])  # 1: one graph key
        # all ``step`` branches on besides shapes (repetition groups: ``columns`` ran first): a CUDA graph per value
        self.graph_key = self.all_greedy, self.need_full_sort, self.max_top_k, tuple(self.rep_groups)

    def step(self, logits: torch.Tensor, rows: slice) -> None:
        """Sample the next token of slots ``rows`` from ``logits`` [rows, V], append it, set their stop codes: device
        ops on views of the slot tensors only (no host read), so a decode step's CUDA graph holds all of it."""
        st = self.slots
        steps, live = st.gen_len[rows], st.finish_code[rows] == RUNNING
        params = SamplingTensors(*(getattr(st, f.name)[rows] for f in fields(SamplingTensors)))  # slot columns
        tok = sample(logits, params, steps, self.all_greedy, self.need_full_sort, self.max_top_k)
        # Tensor parallel: every rank goes on with tp-rank 0's tokens, so scheduling can never diverge (docs/tp.md)
        tok = self.dist.broadcast_first(tok)
        gen = st.generated[rows]
        # a finished row (not yet collected) writes just past its end and keeps its length and code
        gen.scatter_(1, steps.clamp(max=gen.shape[1] - 1).unsqueeze(1), tok.int().unsqueeze(1))
        steps += live  # in place: gen_len of the live rows
        st.last_token[rows] = tok
        is_eos = (tok.unsqueeze(1) == self.eos).any(1) & (st.ignore_eos[rows] == 0)  # isin may sync (sort path)
        code = torch.where(is_eos, STOP, torch.where(steps >= st.max_gen[rows], LENGTH, RUNNING))
        for g, (window, block, thr) in enumerate(self.rep_groups):
            hit = repetition_hits(gen, steps, window, block, thr) & (st.rep_group[rows] == g)
            code = torch.where((code == RUNNING) & hit, REPETITION, code)
        st.finish_code[rows] = torch.where(live, code, st.finish_code[rows])

    def _rep_group(self, p: SamplingParams) -> int:
        key = (p.repeat_check_window, p.repeat_block_size, p.repeat_threshold)
        if p.repeat_check and key not in self.rep_groups:
            self.rep_groups.append(key)
        return self.rep_groups.index(key) if p.repeat_check else -1
