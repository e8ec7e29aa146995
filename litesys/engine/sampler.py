"""Batched, counter-based sampling on the device (greedy, temperature, top-k, top-p, min-p: the draw for token ``t``
of seed ``s`` is a hash of ``(s, t)``), the stop checks, and ``Sampler``: params -> slot columns -> tokens -> stop
codes (docs/engine.md, "Sampling")."""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from litesys.distributed import Dist
from litesys.engine.sequence import Seq
from litesys.engine.slots import Slots
from litesys.kernels import step as step_kernels
from litesys.kernels.common import use_triton
from litesys.kernels.hash import seed_hash, uniform
from litesys.kernels.topk import TOPK_MAX, topk
from litesys.sampling_params import SamplingParams


@dataclass
class SamplingTensors:  # per-row sampling parameters on the device (rows = batch slots; named as Slots')
    temperature: torch.Tensor  # [B] fp32, 0 = greedy
    top_k: torch.Tensor  # [B] int64, 0 = off
    top_p: torch.Tensor  # [B] fp32
    min_p: torch.Tensor  # [B] fp32
    seed_hash: torch.Tensor  # [B] int64: seed_hash of the sample's seed


def filtered(vals: torch.Tensor, idx: torch.Tensor, p: SamplingTensors) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranked candidates -> (probs [B, K] with zeros for dropped, token ids [B, K]): temperature, each row's top-k,
    top-p, min-p."""
    vals = vals.float() / p.temperature.clamp_min(1e-6).unsqueeze(1)
    K = vals.shape[1]
    rank = torch.arange(K, device=vals.device).unsqueeze(0)
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


def ranked(logits: torch.Tensor, need_full_sort: bool, max_top_k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The ranked candidates of a step, [(values [B, K], token ids [B, K])], by (value desc, index asc) on the raw
    logits (temperature does not change the order): the full sort's and/or the first ``max_top_k``'s (0: none;
    the Triton top-k on the GPU, ``kernels/topk.py``). With both, a row with 1 <= top_k <= max_top_k draws from the
    second: the same ops at the same width as in a batch without a sort, so deterministic mode's fixed candidate
    count holds whatever the row's mates' top_k (``Sampler.refresh``)."""
    w = min(max_top_k, logits.shape[1])
    vals, idx = logits.sort(dim=-1, descending=True, stable=True) if need_full_sort else topk(logits, w)
    if need_full_sort and w:
        return [(vals, idx), (vals[:, :w].contiguous(), idx[:, :w].contiguous())]
    return [(vals, idx)]


def candidates(logits: torch.Tensor, p: SamplingTensors, need_full_sort: bool, max_top_k: int
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``ranked``'s sets filtered: [(probs [B, K], token ids [B, K])]."""
    return [filtered(vals, idx, p) for vals, idx in ranked(logits, need_full_sort, max_top_k)]


def draw(probs: torch.Tensor, idx: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse CDF: the candidate that uniform ``u`` [B, 1] lands on -> token ids [B]."""
    cdf = probs.cumsum(-1)
    pick = (cdf <= u * cdf[:, -1:]).sum(-1, keepdim=True).clamp(max=probs.shape[1] - 1)
    # never land on a dropped (zero-mass) candidate because of rounding at the top of the cdf
    pick = torch.minimum(pick, (probs > 0).sum(-1, keepdim=True) - 1)
    return idx.gather(1, pick).squeeze(1)


def sample(logits: torch.Tensor, p: SamplingTensors, steps: torch.Tensor, all_greedy: bool,
           need_full_sort: bool, max_top_k: int, backend: str = "auto") -> torch.Tensor:
    """Next token per row: [B] int64. ``steps``: index of the token being drawn within each sequence. Greedy rows
    take a set's first candidate (ranked by value desc, index asc: argmax's first maximum, without its pass)."""
    if all_greedy:  # the first maximum; on the GPU the top-k kernel's first candidate, the sampled rows' ranking
        return topk(logits, 1)[1][:, 0].contiguous() if use_triton(logits, backend) else logits.argmax(dim=-1)
    sets = ranked(logits, need_full_sort, max_top_k)
    if use_triton(logits, backend):  # a set's filters, uniform and draw in one launch (kernels/sample_draw.py)
        from litesys.kernels import sample_draw

        toks = [sample_draw.draw(v, i, p.temperature, p.top_k, p.top_p, p.min_p, p.seed_hash, steps) for v, i in sets]
    else:  # the twin
        u = uniform(p.seed_hash, steps).unsqueeze(1)
        toks = [torch.where(p.temperature == 0, i[:, 0], draw(*filtered(v, i, p), u)) for v, i in sets]
    return toks[0] if len(toks) == 1 else torch.where((p.top_k >= 1) & (p.top_k <= max_top_k), toks[1], toks[0])


# finish codes kept on the device; names as reported to the user
RUNNING, STOP, LENGTH, REPETITION = 0, 1, 2, 3
FINISH_REASONS = {STOP: "stop", LENGTH: "length", REPETITION: "repetition"}


class Sampler:
    """One step's sampling for slot rows: params -> slot columns, host flags, next tokens, stop codes. Repetition
    groups (one per distinct window/block/threshold) belong to one run: ``start_run`` forgets them."""

    def __init__(self, slots: Slots, eos_ids: list[int], max_seq_len: int, dist: Dist, deterministic: bool = False):
        # deterministic: a row with 1 <= top_k <= TOPK_MAX draws from TOPK_MAX candidates, whatever its mates' top_k
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
        top_ks = [p.top_k for p in params if p.temperature > 0]
        small = [k for k in top_ks if 1 <= k <= TOPK_MAX]  # the rest (0 = off, or large) need the full sort
        self.need_full_sort = len(small) < len(top_ks)
        # the small rows' candidate count: TOPK_MAX whatever the batch (deterministic), else the batch's largest
        # top_k; 0: every row from the full sort
        self.max_top_k = TOPK_MAX if self.deterministic else 0 if self.need_full_sort else max(small + [1])
        # all ``step`` branches on besides shapes (repetition groups: ``columns`` ran first): a CUDA graph per value
        self.graph_key = self.all_greedy, self.need_full_sort, self.max_top_k, tuple(self.rep_groups)

    def step(self, logits: torch.Tensor, rows: slice) -> None:
        """Sample the next token of slots ``rows`` from ``logits`` [rows, V], append it, set their stop codes: device
        ops on views of the slot tensors only (no host read), so a decode step's CUDA graph holds all of it."""
        st = self.slots
        steps = st.gen_len[rows]
        params = SamplingTensors(*(getattr(st, f.name)[rows] for f in fields(SamplingTensors)))  # slot columns
        tok = sample(logits, params, steps, self.all_greedy, self.need_full_sort, self.max_top_k)
        # Tensor parallel: every rank goes on with tp-rank 0's tokens, so scheduling can never diverge (docs/tp.md)
        tok = self.dist.broadcast_first(tok)
        # append, lengths and stop codes (EOS, length, repetition): one launch on the GPU (kernels/step.py)
        step_kernels.commit(tok, st.generated[rows], steps, st.last_token[rows], st.finish_code[rows], st.max_gen[rows],
                            st.ignore_eos[rows], st.rep_group[rows], self.eos, tuple(self.rep_groups),
                            (RUNNING, STOP, LENGTH, REPETITION))

    def _rep_group(self, p: SamplingParams) -> int:
        key = (p.repeat_check_window, p.repeat_block_size, p.repeat_threshold)
        if p.repeat_check and key not in self.rep_groups:
            self.rep_groups.append(key)
        return self.rep_groups.index(key) if p.repeat_check else -1
