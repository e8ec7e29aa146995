"""The generation loop: prefill steps for admitted prompts, decode steps for everything running.

Per decode step the host does O(1) Python work plus O(sequences crossing a page boundary); all per-sequence
state (lengths, page tables, sampled tokens, stop flags) lives on the device in ``SlotState``. The host reads
the device once every ``check_every`` steps to learn which sequences finished (and, in the same read, how many
tokens the others have: the progress report). Any exception inside ``run`` resets the engine to a fresh one's
state (no sequences, every page free), so the next ``run`` works and gives the same tokens.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from litesys.attention.backend import Attention
from litesys.attention.kv_cache import KVCache
from litesys.attention.meta import AttnMeta
from litesys.config import CompletionOutput
from litesys.engine import stops
from litesys.engine.progress import ProgressStats, RunCounters
from litesys.engine.replay import replay
from litesys.engine.sampler import SamplingTensors, sample
from litesys.engine.scheduler import PrefillItem, Scheduler, pages_for
from litesys.engine.sequence import Request, Seq
from litesys.engine.state import SlotState
from litesys.engine.swap import SwapSpace, paged_tensors
from litesys.models.layers import Dist


class Engine:
    def __init__(self, model, kv: KVCache, attn: Attention, *, max_slots: int, max_seq_len: int,
                 max_batched_tokens: int, eos_ids: list[int], check_every: int = 1, graphs=None,
                 swap_space_bytes: int = 0):
        self.model, self.kv, self.attn = model, kv, attn
        self.dist: Dist = getattr(model, "dist", None) or Dist()
        self.device = kv.k.device
        self.page_size = kv.page_size
        self.max_seq_len = max_seq_len
        # finished sequences may run up to check_every - 1 steps past their end before the host sees them
        self.max_pages = pages_for(max_seq_len + check_every, self.page_size)
        self.state = SlotState(max_slots, self.max_pages, max_seq_len + check_every, self.device)
        self.scheduler = Scheduler(self.page_size, max_slots, max_batched_tokens,
                                   watermark_pages=max(1, kv.num_pages // 100))
        self.alloc = kv.allocator
        self.eos = torch.tensor(eos_ids or [-1], dtype=torch.int64, device=self.device)
        self.check_every = max(1, check_every)
        self.graphs = graphs  # optional CUDA-graph runner for the decode forward
        # preempted sequences' pages go to host memory and come back as they were (swap.py); recompute if full
        self.swap = SwapSpace(paged_tensors(kv, attn.selector), swap_space_bytes, self.dist) \
            if swap_space_bytes > 0 else None
        self.running: list[Seq] = []  # running[i] occupies slot i
        self.rep_settings: list[tuple[int, int, int]] = []  # (window, block, threshold) per repetition group
        self._order = 0
        self._on_seq_done: Callable[[Seq, CompletionOutput], None] | None = None  # set only during run()
        self.counts = RunCounters(0, 0)
        self.stats = dict(prefill_steps=0, decode_steps=0, preemptions=0, generated=0)
        self._refresh_sampling_flags()

    # ---- public ---------------------------------------------------------------------------------------
    def run(self, requests: list[Request], on_seq_done: Callable[[Seq, CompletionOutput], None],
            on_progress: Callable[[ProgressStats], None] | None = None) -> None:
        """Generate every request; ``on_progress`` gets the counters at each check (no extra device reads)."""
        for r in requests:
            self._validate(r)
        self.reset()  # whatever an earlier call left behind, start from a fresh engine's state
        self.counts = RunCounters(samples=sum(r.params.n for r in requests),
                                  budget=sum(self._budget(r) * r.params.n for r in requests))
        self._on_seq_done = on_seq_done
        try:
            for r in requests:
                self.scheduler.add(r)
            self._loop(on_seq_done, on_progress)
        except BaseException:  # a callback, the tokenizer, Ctrl-C, ...: give back every slot and page
            self.reset()
            raise
        finally:
            self._on_seq_done = None  # the callback closes over the caller: holding it would make a cycle

    def reset(self) -> None:
        """Drop every running and waiting sequence and free all pages, in place (captured graphs stay valid)."""
        self.running = []
        self.scheduler.clear()
        self.alloc.reset()
        self.state.reset()
        self.rep_settings = []
        self._order = 0
        if self.swap is not None:
            self.swap.clear()
        self._refresh_sampling_flags()

    def _loop(self, on_seq_done: Callable[[Seq, CompletionOutput], None],
              on_progress: Callable[[ProgressStats], None] | None) -> None:
        pending_steps = 0
        while self.scheduler.waiting or self.running:
            admitted = self.scheduler.admit(self.alloc.num_free, len(self.running))
            if admitted:
                self._prefill(admitted)
                pending_steps = self.check_every  # check new sequences' first tokens at once
            elif self.running:
                self._decode()
                pending_steps += 1
            else:
                item = self.scheduler.waiting[0]
                raise RuntimeError(f"the KV pool ({self.kv.num_pages} pages of {self.page_size}) cannot hold a "
                                   f"prompt of {len(item.tokens)} tokens; lower max_seq_len or give the cache "
                                   "more memory (gpu_memory_utilization / num_kv_pages)")
            if pending_steps >= self.check_every or not self.scheduler.waiting and len(self.running) == 0:
                self._collect_finished(on_seq_done)
                pending_steps = 0
                if on_progress is not None:
                    on_progress(self.counts.stats(len(self.running)))

    def _budget(self, r: Request) -> int:
        """Tokens one sample of ``r`` may generate at most."""
        return min(r.params.max_new_tokens, self.max_seq_len - len(r.prompt))

    def _validate(self, r: Request) -> None:
        if len(r.prompt) == 0:
            raise ValueError(f"prompt {r.index} is empty; give at least one token")
        if len(r.prompt) >= self.max_seq_len:
            raise ValueError(f"prompt {r.index} has {len(r.prompt)} tokens, which leaves no room to generate within "
                             f"max_seq_len={self.max_seq_len}; raise max_seq_len or shorten the prompt")
        need = pages_for(self.max_seq_len, self.page_size)
        if need > self.kv.num_pages - 1:
            raise ValueError(f"the KV pool has {self.kv.num_pages - 1} pages but one sequence of max_seq_len="
                             f"{self.max_seq_len} needs {need}; lower max_seq_len or give the cache more memory")

    # ---- prefill --------------------------------------------------------------------------------------
    def _prefill(self, items: list[PrefillItem]) -> None:
        if any(it.swapped is not None for it in items):  # swapped-out sequences come back without a forward
            self._swap_in([it for it in items if it.swapped is not None])
            items = [it for it in items if it.swapped is None]
            if not items:
                return
        ps, dev = self.page_size, self.device
        lens = [len(it.tokens) for it in items]
        ids = torch.tensor([t for it in items for t in it.tokens], dtype=torch.int64)
        positions = torch.cat([torch.arange(n) for n in lens])
        page_lists = [self.alloc.alloc(pages_for(n, ps)) for n in lens]
        slots = torch.cat([torch.tensor(pl).repeat_interleave(ps)[:n] * ps + torch.arange(n) % ps
                           for pl, n in zip(page_lists, lens)])
        cu = torch.tensor([0] + list(np.cumsum(lens)), dtype=torch.int32)
        meta = AttnMeta(True, slots.to(dev), ps, self.attn.num_q_heads, self.attn.num_kv_heads,
                        cu_seqlens=cu.to(dev), max_seqlen=max(lens))
        hidden = self.model.forward(ids.to(dev), positions.to(dev), meta, self.attn)
        logits = self.model.compute_logits(hidden[(cu[1:] - 1).long().to(dev)])
        logits = self._replay_recomputed(items, page_lists, logits)
        self.stats["prefill_steps"] += 1

        # fork fresh requests into their samples; resumed sequences keep their pages
        new: list[tuple[Seq, int]] = []  # (seq, logits row)
        for row, (it, pages) in enumerate(zip(items, page_lists)):
            if it.seq is not None:
                it.seq.pages = pages
                new.append((it.seq, row))
                continue
            n_tok = len(it.tokens)
            for j in range(it.width):
                if j == 0:
                    own = pages
                else:
                    full = pages if n_tok % ps == 0 else pages[:-1]
                    self.alloc.share(full)
                    own = list(full)
                    if n_tok % ps:
                        (copy,) = self.alloc.alloc(1)
                        self.kv.copy_page(pages[-1], copy)
                        own.append(copy)
                seq = Seq(req=it.request, sample=j, order=self._order, pages=own)
                self._order += 1
                new.append((seq, row))
        self._place(new, logits, items)

    def _place(self, new: list[tuple[Seq, int]], logits: torch.Tensor, items: list[PrefillItem]) -> None:
        """Give new sequences slots, sample their next token, and run the stop checks on it."""
        st, dev = self.state, self.device
        b0 = len(self.running)
        rows = list(range(b0, b0 + len(new)))
        self.running.extend(s for s, _ in new)
        pt = torch.zeros(len(new), self.max_pages, dtype=torch.int32)
        seq_len, gen_len, max_gen, rep = [], [], [], []
        for i, (s, _) in enumerate(new):
            pt[i, :len(s.pages)] = torch.tensor(s.pages, dtype=torch.int32)
            n_ctx = len(s.req.prompt) + len(s.done_tokens) - (logits is None)  # swapped in: last token not in KV
            seq_len.append(n_ctx)
            gen_len.append(len(s.done_tokens))
            max_gen.append(min(s.max_gen, self.max_seq_len - len(s.req.prompt)))
            rep.append(self._rep_group(s.req))
        idx = torch.tensor(rows, dtype=torch.int64, device=dev)

        def put(t: torch.Tensor, vals, dtype=None) -> None:
            t[idx] = torch.tensor(vals, dtype=dtype or t.dtype).to(dev)

        st.page_table[idx] = pt.to(dev)
        put(st.seq_len, seq_len)
        st.seq_len_host[rows] = seq_len
        put(st.gen_len, gen_len)
        put(st.max_gen, max_gen)
        put(st.finish, [0] * len(new))
        put(st.rep_group, rep)
        put(st.ignore_eos, [s.req.params.ignore_eos for s, _ in new])
        put(st.temperature, [s.req.params.temperature for s, _ in new])
        put(st.top_k, [max(s.req.params.top_k, 0) for s, _ in new])
        put(st.top_p, [s.req.params.top_p for s, _ in new])
        put(st.min_p, [s.req.params.min_p for s, _ in new])
        put(st.seed, [s.seed for s, _ in new])
        for r, (s, _) in zip(rows, new):
            self.counts.preempted_tokens -= len(s.done_tokens)  # counted as live from the next check on
            if s.done_tokens:
                st.gen[r, :len(s.done_tokens)] = torch.tensor(s.done_tokens, dtype=torch.int32).to(dev)
            s.done_tokens = []
        self._refresh_sampling_flags()
        if logits is not None:
            src = torch.tensor([row for _, row in new], dtype=torch.int64, device=dev)
            self._sample_and_check(logits[src], idx)

    def _swap_in(self, items: list[PrefillItem]) -> None:
        """Swapped-out sequences back into slots: their pages copied back, their last token the next input."""
        new = []
        for it in items:
            it.seq.pages = self.alloc.alloc(it.swapped.num_pages)
            self.swap.swap_in(it.swapped, it.seq.pages)
            new.append((it.seq, -1))
        b0, st = len(self.running), self.state
        self._place(new, None, items)
        rows = torch.arange(b0, b0 + len(new), device=self.device)
        st.last_token[rows] = st.gen[rows, st.gen_len[rows] - 1].long()

    def _replay_recomputed(self, items: list[PrefillItem], page_lists: list[list[int]],
                           logits: torch.Tensor) -> torch.Tensor:
        """Sparse attention: a recomputed sequence's generated positions go through the decode path again (its
        method's selections, replay.py) instead of keeping the dense prefill's K/V; its next token's logits."""
        if not (self.attn.processors or self.attn.selector is not None):
            return logits
        for row, (it, pages) in enumerate(zip(items, page_lists)):
            if it.seq is not None and it.seq.done_tokens:
                page_row = torch.zeros(self.max_pages, dtype=torch.int32)
                page_row[:len(pages)] = torch.tensor(pages, dtype=torch.int32)
                logits[row] = replay(self.model, self.attn, page_row.to(self.device), len(it.seq.req.prompt),
                                     it.seq.done_tokens, it.seq.seed)[0]
        return logits

    # ---- decode ---------------------------------------------------------------------------------------
    def _decode(self) -> None:
        self._ensure_pages()
        B = len(self.running)
        if B == 0:
            return
        st = self.state
        max_len = int(st.seq_len_host[:B].max()) + 1
        logits = None
        if self.graphs is not None and self.graphs.can_run(B, self.attn):
            logits = self.graphs.run(self, B, max_len)
        if logits is None:
            logits = self.decode_forward(B, max_len)
        st.seq_len[:B] += 1  # every row's input token is now in the KV cache (finished rows too, harmlessly)
        st.seq_len_host[:B] += 1
        self._sample_and_check(logits[:B], torch.arange(B, device=self.device))
        self.stats["decode_steps"] += 1

    def decode_forward(self, B: int, max_len: int) -> torch.Tensor:
        """One decode forward over slots 0..B-1 reading only device state (capturable as a CUDA graph)."""
        st, ps = self.state, self.page_size
        pos = st.seq_len[:B]
        page = st.page_table[:B].gather(1, (pos // ps).unsqueeze(1)).squeeze(1).long()
        meta = AttnMeta(False, page * ps + pos % ps, ps, self.attn.num_q_heads, self.attn.num_kv_heads,
                        page_table=st.page_table[:B], lengths=(pos + 1).int(), max_len=max_len,
                        extra={"seq_ids": st.seed[:B]})  # per-sample ids for the random sparse methods
        hidden = self.model.forward(st.last_token[:B], pos, meta, self.attn)
        return self.model.compute_logits(hidden)

    def _ensure_pages(self) -> None:
        """Give a new page to each sequence whose next token starts one; preempt the newest when short."""
        ps, st = self.page_size, self.state
        collected = False
        while True:
            need = np.nonzero(st.seq_len_host[:len(self.running)] % ps == 0)[0]
            if len(need) <= self.alloc.num_free:
                break
            if not collected:  # finished-but-uncollected sequences free their pages first: never recompute one
                self._collect_finished(self._on_seq_done)
                collected = True
            else:
                self._preempt_newest()
        if len(need) == 0:
            return
        pages = self.alloc.alloc(len(need))
        cols = st.seq_len_host[need] // ps
        for b, p in zip(need.tolist(), pages):
            self.running[b].pages.append(p)
        # one small host->device copy; from pinned memory it is asynchronous, so the host keeps running ahead
        upd = torch.from_numpy(np.stack([need, cols, np.asarray(pages)]).astype(np.int64))
        if self.device.type == "cuda":
            upd = upd.pin_memory()  # the caching host allocator keeps it alive until the copy has run
        upd = upd.to(self.device, non_blocking=True)
        st.page_table[upd[0], upd[1]] = upd[2].int()

    def _preempt_newest(self) -> None:
        if len(self.running) <= 1:
            raise RuntimeError("the KV pool is too small for even one sequence; lower max_seq_len or give the "
                               "cache more memory")
        b = max(range(len(self.running)), key=lambda i: self.running[i].order)
        seq = self.running[b]
        n = int(self.state.gen_len[b])
        generated = self.state.gen[b, :n].tolist()
        swapped = self.swap.swap_out(seq.pages) if self.swap is not None else None  # None: recompute later
        self.counts.preempted_tokens += n
        self.alloc.release(seq.pages)
        seq.pages = []
        self._remove_slots([b])
        self.scheduler.requeue(seq, generated, swapped)
        self.stats["preemptions"] += 1

    # ---- sampling and stops ---------------------------------------------------------------------------
    def _refresh_sampling_flags(self) -> None:
        ps = [s.req.params for s in self.running]
        self.all_greedy = all(p.temperature == 0 for p in ps)
        sampling = [p for p in ps if p.temperature > 0]
        self.need_full_sort = any(p.top_k <= 0 for p in sampling)
        self.max_top_k = max([p.top_k for p in sampling] + [1])

    def _sample_and_check(self, logits: torch.Tensor, rows: torch.Tensor) -> None:
        st = self.state
        steps = st.gen_len[rows]
        params = SamplingTensors(st.temperature[rows], st.top_k[rows], st.top_p[rows], st.min_p[rows], st.seed[rows])
        tok = sample(logits, params, steps, self.all_greedy, self.need_full_sort, self.max_top_k)
        # Tensor parallel: every rank goes on with tp-rank 0's tokens, so scheduling can never diverge (docs/tp.md)
        tok = self.dist.broadcast_first(tok)
        live = st.finish[rows] == stops.RUNNING
        # finished rows (not yet collected) keep their state; live rows append the new token
        write_col = steps.clamp(max=st.gen.shape[1] - 1)
        old = st.gen[rows, write_col]
        st.gen[rows, write_col] = torch.where(live, tok.int(), old)
        gen_len = steps + live.long()
        st.gen_len[rows] = gen_len
        st.last_token[rows] = tok
        finish = torch.zeros_like(st.finish[rows])
        is_eos = torch.isin(tok, self.eos) & ~st.ignore_eos[rows]
        finish = torch.where(is_eos, stops.STOP, finish)
        finish = torch.where((finish == 0) & (gen_len >= st.max_gen[rows]), stops.LENGTH, finish)
        for g, (window, block, thr) in enumerate(self.rep_settings):
            hit = stops.repetition_hits(st.gen, rows, gen_len, window, block, thr) & (st.rep_group[rows] == g)
            finish = torch.where((finish == 0) & hit, stops.REPETITION, finish)
        st.finish[rows] = torch.where(live, finish.to(st.finish.dtype), st.finish[rows])
        self.stats["generated"] += int(rows.numel())

    def _rep_group(self, req: Request) -> int:
        p = req.params
        if not p.repeat_check:
            return -1
        key = (p.repeat_check_window, p.repeat_block_size, p.repeat_threshold)
        if key not in self.rep_settings:
            self.rep_settings.append(key)
        return self.rep_settings.index(key)

    # ---- finishing ------------------------------------------------------------------------------------
    def _collect_finished(self, on_seq_done: Callable[[Seq, CompletionOutput], None]) -> None:
        B, counts = len(self.running), self.counts
        if B == 0:
            counts.live_tokens = 0
            return
        st = self.state
        # the one host sync of a check: finish flags and lengths in one copy
        finish, lens = torch.stack((st.finish[:B].long(), st.gen_len[:B])).cpu()
        counts.live_tokens = int(lens[finish == 0].sum())
        done = torch.nonzero(finish).flatten().tolist()
        if not done:
            return
        for b in done:
            seq = self.running[b]
            n = int(lens[b])
            counts.finished += 1
            counts.finished_tokens += n
            counts.finished_budget += self._budget(seq.req)
            toks = st.gen[b, :n].tolist()
            code = int(finish[b])
            if code == stops.REPETITION:
                toks = toks[: max(0, n - seq.req.params.repeat_block_size)]
            self.alloc.release(seq.pages)
            seq.pages = []
            on_seq_done(seq, CompletionOutput(token_ids=toks, text="", finish_reason=stops.FINISH_REASONS[code]))
        self._remove_slots(done)

    def _remove_slots(self, rows: list[int]) -> None:
        gone = set(rows)
        keep = [i for i in range(len(self.running)) if i not in gone]
        old = len(self.running)
        self.running = [self.running[i] for i in keep]
        self.state.compact(keep, old)
        self._refresh_sampling_flags()
