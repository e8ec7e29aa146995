"""The generation loop: prefill steps for admitted prompts, decode steps for everything running. Its stages have
their own rooms: ``Scheduler``, ``Slots``, ``Sampler``, ``DecodeGraphs`` (docs/engine.md)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch

from litesys.attention.backend import Attention
from litesys.attention.kv_cache import KVCache
from litesys.attention.meta import AttnMeta
from litesys.distributed import Dist
from litesys.engine import validate
from litesys.engine.cuda_graph import DecodeGraphs
from litesys.engine.prefix_cache import CachingAllocator, cache_prompts, prefill_layout
from litesys.engine.progress import ProgressStats, RunCounters
from litesys.engine.replay import replay
from litesys.engine.sampler import FINISH_REASONS, REPETITION, RUNNING, Sampler
from litesys.engine.scheduler import PrefillItem, Scheduler
from litesys.engine.sequence import Request, Seq
from litesys.engine.slots import Slots
from litesys.engine.swap import SwapSpace, paged_tensors
from litesys.kernels import step as step_kernels
from litesys.kernels.common import cdiv
from litesys.outputs import CompletionOutput

SeqDone = Callable[[Seq, CompletionOutput], None]


class Engine:
    def __init__(self, model, kv: KVCache, attn: Attention, *, max_slots: int, max_seq_len: int,
                 max_batched_tokens: int, eos_ids: list[int], check_every: int = 1, cuda_graphs: bool = False,
                 swap_space_bytes: int = 0, prefix_cache: bool = False, deterministic: bool = False):
        self.model, self.kv, self.attn = model, kv, attn
        self.dist: Dist = getattr(model, "dist", None) or Dist()
        self.device, self.page_size, self.max_seq_len = kv.k.device, kv.page_size, max_seq_len
        self.check_every = max(1, check_every)
        # finished sequences may run up to check_every - 1 steps past their end before the host sees them
        self.max_pages = cdiv(max_seq_len + self.check_every, self.page_size)
        self.slots = Slots(max_slots, self.max_pages, max_seq_len + self.check_every, self.device)
        self.scheduler = Scheduler(self.page_size, max_slots, max_batched_tokens, kv.num_pages)
        self.allocator = kv.allocator = CachingAllocator(kv.num_pages, kv.page_size) if prefix_cache else kv.allocator
        self.sampler = Sampler(self.slots, eos_ids, max_seq_len, self.dist, deterministic)
        # preempted sequences' pages go to host memory and come back as they were (swap.py); recompute if full
        self.swap = SwapSpace(paged_tensors(kv, attn.method), swap_space_bytes, self.dist) if swap_space_bytes else None
        self.stats = dict(prefill_steps=0, decode_steps=0, preemptions=0, generated=0)
        use_graphs = cuda_graphs and self.device.type == "cuda"  # the decode step as CUDA graphs, from our own state
        self.graphs = DecodeGraphs(max_slots, self.max_pages * self.page_size, attn) if use_graphs else None
        self.reset()

    def run(self, requests: Iterable[Request], on_seq_done: SeqDone,
            on_progress: Callable[[ProgressStats], None] | None = None) -> None:
        """Generate every request (a list is checked whole first; any other iterable is pulled lazily, checked as
        pulled); ``on_progress`` gets the counters at each check (no extra device reads)."""
        eager = isinstance(requests, (list, tuple))
        self.reset()  # whatever an earlier call left behind, start from a fresh engine's state
        try:  # a list is checked whole here, before anything runs
            self.scheduler.start(list(self._accepted(requests)) if eager else self._accepted(requests))
            self._loop(on_seq_done, on_progress)
        except BaseException:  # a callback, the tokenizer, Ctrl-C, ...: give back every slot and page
            self.allocator.clear()  # the prefix cache's pages too (a plain reset keeps them)
            self.reset()
            raise

    def reset(self) -> None:
        """Drop every running and waiting sequence and free all pages, in place (captured graphs stay valid)."""
        self.running: list[Seq] = []  # running[i] occupies slot i
        self._finished: list[tuple[Seq, CompletionOutput]] = []  # collected, not yet handed to the caller
        self._order, self.counts = 0, RunCounters(self.max_seq_len)
        self.scheduler.clear()
        self.allocator.reset()
        self.slots.reset()
        self.sampler.start_run()
        if self.swap is not None:
            self.swap.clear()

    def _loop(self, on_seq_done: SeqDone, on_progress: Callable[[ProgressStats], None] | None) -> None:
        since_check = 0
        while self.scheduler.pending() or self.running:
            mixed = self.scheduler.partial is not None and bool(self.running)
            if mixed:  # a long prompt between its chunks: the running rows decode, then its next chunk
                self._decode()
                since_check += 1
            admitted = self.scheduler.admit(self.allocator.num_free, len(self.running))
            if admitted:
                self._prefill(admitted)
                if self.scheduler.partial is None:
                    since_check = self.check_every  # check new sequences' first tokens at once
            elif self.running and not mixed:
                self._decode()
                since_check += 1
            elif not self.running and (self.scheduler.waiting or self.scheduler.partial):
                item = self.scheduler.partial or self.scheduler.waiting[0]
                raise RuntimeError(f"the KV pool ({self.kv.num_pages} pages of {self.page_size}) cannot hold a prompt "
                                   f"of {len(item.tokens)} tokens; lower max_seq_len or give the "
                                   "cache more memory (gpu_memory_utilization / num_kv_pages)")
            check = since_check >= self.check_every or not (self.scheduler.pending() or self.running)
            if check:
                self._collect_finished()
                since_check = 0
            while self._finished:
                on_seq_done(*self._finished.pop(0))
            if check and on_progress is not None:
                on_progress(self.counts.stats(len(self.running)))

    def _accepted(self, requests: Iterable[Request]) -> Iterator[Request]:
        for r in requests:
            validate.check_request(r, self.max_seq_len, self.page_size, self.kv.num_pages)
            self.counts.add(r)
            yield r

    def _prefill(self, items: list[PrefillItem]) -> None:
        if any(it.swapped is not None for it in items):  # swapped-out sequences come back without a forward
            self._swap_in([it for it in items if it.swapped is not None])
            items = [it for it in items if it.swapped is None]
            if not items:
                return
        ps = self.page_size  # cached prefix pages, then the new tokens (or a long prompt's chunk): prefix_cache.py
        ids, positions, meta = prefill_layout(items, self.allocator, self.attn, self.device,
                                              self.scheduler.max_batched_tokens, self.counts)
        hidden = self.model.forward(ids, positions, meta, self.attn)
        self.stats["prefill_steps"] += 1
        self.scheduler.partial = items[0] if items[0].done < len(items[0].tokens) else None  # alone in its step
        if self.scheduler.partial is not None:
            return  # sampled after its last chunk
        logits = self.model.compute_logits(hidden[meta.cu_seqlens[1:].long() - 1])
        logits = self._replay_recomputed(items, logits)
        cache_prompts(self.allocator, items)

        # fork fresh requests into their samples; resumed sequences keep their pages
        new: list[tuple[Seq, int]] = []  # (seq, logits row)
        for row, it in enumerate(items):
            pages = it.pages
            if it.seq is not None:
                it.seq.pages = pages
                new.append((it.seq, row))
                continue
            for j in range(it.num_samples):
                own = pages
                if j > 0:  # the full pages are shared; a partly filled last page is copied
                    own = pages[:len(it.tokens) // ps]
                    self.allocator.share(own)
                    if len(it.tokens) % ps:
                        own += self.allocator.alloc(1)
                        self.kv.copy_page(pages[-1], own[-1])
                new.append((Seq(req=it.request, sample=j, order=self._order, pages=own), row))
                self._order += 1
        self.place_new_sequences(new, logits)

    def place_new_sequences(self, new: list[tuple[Seq, int]], logits: torch.Tensor | None) -> None:
        """New sequences into the next slots; their next token from ``logits`` rows (None: swapped in)."""
        b0, seqs = len(self.running), [s for s, _ in new]
        self.running.extend(seqs)
        before = [s.tokens_before_preemption for s in seqs]
        columns = self.sampler.columns(seqs)
        swapped = logits is None  # its last token is not in the KV cache yet: the next input
        columns.update(seq_len=[len(s.req.prompt) + len(b) - swapped for s, b in zip(seqs, before)],
                       last_token=[b[-1] if swapped else 0 for b in before], gen_len=[len(b) for b in before],
                       finish_code=[RUNNING] * len(seqs))
        self.slots.place(b0, columns, [s.pages for s in seqs], before)
        for s in seqs:
            self.counts.preempted_tokens -= len(s.tokens_before_preemption)  # live again from the next check on
            s.tokens_before_preemption = []
        self.sampler.refresh([s.req.params for s in self.running])
        if logits is not None:
            src = torch.tensor([row for _, row in new], dtype=torch.int64, device=self.device)
            self.sampler.step(logits[src], slice(b0, b0 + len(seqs)))
            self.stats["generated"] += len(seqs)

    def _swap_in(self, items: list[PrefillItem]) -> None:
        """Swapped-out sequences back into slots: their pages copied back, their last token the next input."""
        for it in items:
            it.seq.pages = self.allocator.alloc(it.swapped.num_pages)
            self.swap.swap_in(it.swapped, it.seq.pages)
        self.place_new_sequences([(it.seq, -1) for it in items], None)

    def _replay_recomputed(self, items: list[PrefillItem], logits: torch.Tensor):
        """A recomputed sequence's generated positions through its sparse method's decode again (replay.py)."""
        if not self.attn.method.needs_replay:
            return logits
        for row, it in enumerate(items):
            if it.seq is not None and it.seq.tokens_before_preemption:
                page_row = torch.tensor(it.pages + [0] * (self.max_pages - len(it.pages)), dtype=torch.int32)
                logits[row] = replay(self.model, self.attn, page_row.to(self.device), len(it.seq.req.prompt),
                                     it.seq.tokens_before_preemption, it.seq.seed)[0]
        return logits

    def _decode(self) -> None:
        """Pages for the rows whose next token starts one, then one decode step: a graph replay, or run eagerly."""
        self._grow_pages()
        B = len(self.running)
        if B == 0:
            return
        max_len = int(self.slots.seq_len_host[:B].max()) + 1  # the host mirror: no device read
        if self.graphs is None or not self.graphs.run(self.decode_step, B, max_len, self.sampler.graph_key):
            self.decode_step(B, max_len)
        self.slots.seq_len_host[:B] += 1
        self.stats["decode_steps"] += 1
        self.stats["generated"] += B

    def decode_step(self, B: int, max_len: int) -> None:
        """One decode step over slots 0..B-1 reading and writing only device state (a CUDA graph holds all of it):
        the forward, every row's input token now in the KV cache, then the sampler's next tokens and stop codes."""
        st, ps = self.slots, self.page_size
        # positions, KV slots and lengths of the rows' new tokens; seq_len advances (not a graph's padding rows)
        pos, slot, lengths = step_kernels.decode_meta(st.seq_len[:B], st.page_table[:B], ps)
        meta = AttnMeta(False, slot, ps, self.attn.num_q_heads, self.attn.num_kv_heads, page_table=st.page_table[:B],
                        lengths=lengths, max_len=max_len, seq_ids=st.seed[:B],  # ids for the random sparse methods
                        order=step_kernels.longest_first(lengths))
        logits = self.model.compute_logits(self.model.forward(st.last_token[:B], pos, meta, self.attn))
        self.sampler.step(logits, slice(0, B))

    def _grow_pages(self) -> None:
        """A page for each sequence whose next token starts one; short: collect the finished, then preempt."""
        collected = False
        while (need := self.scheduler.page_growth(self.slots.seq_len_host[:len(self.running)],
                                                  self.allocator.num_free)) is None:
            if not collected:
                self._collect_finished()
                collected = True
            else:
                self._preempt(self.scheduler.preemption_victim(self.running))
        if len(need):
            pages = self.allocator.alloc(len(need))
            for b, p in zip(need.tolist(), pages):
                self.running[b].pages.append(p)
            self.slots.add_pages(need, pages, self.page_size)

    def _preempt(self, b: int) -> None:
        seq, n = self.running[b], int(self.slots.gen_len[b])
        swapped = self.swap.swap_out(seq.pages) if self.swap is not None else None  # None: recompute later
        self.scheduler.requeue(seq, self.slots.generated[b, :n].tolist(), swapped)
        self.counts.preempted_tokens += n
        self._remove_slots([b])
        self.stats["preemptions"] += 1

    def _collect_finished(self) -> None:
        """Finished sequences leave their slots and pages; their outputs wait in ``_finished`` for the caller."""
        B, counts, st = len(self.running), self.counts, self.slots
        # the one host sync of a check: finish codes and lengths in one copy
        codes, lens = torch.stack((st.finish_code[:B], st.gen_len[:B])).cpu()
        counts.live_tokens = int(lens[codes == 0].sum())
        done = torch.nonzero(codes).flatten()
        if len(done) == 0:
            return
        # every finished row's tokens: one gather on the device, one device->host copy
        tokens = st.generated[:, :int(lens[done].max())].index_select(0, done.to(self.device)).cpu()
        for i, b in enumerate(done.tolist()):
            seq, n, code = self.running[b], int(lens[b]), int(codes[b])
            counts.finish(seq.req, n)
            keep = max(0, n - seq.req.params.repeat_block_size) if code == REPETITION else n
            self._finished.append((seq, CompletionOutput(tokens[i, :keep].tolist(), "", FINISH_REASONS[code])))
        self._remove_slots(done.tolist())

    def _remove_slots(self, rows: list[int]) -> None:
        """Rows ``rows`` leave their slots (the rest move up) and give back their pages."""
        for b in rows:
            self.allocator.release(self.running[b].pages)
            self.running[b].pages = []
        keep = sorted(set(range(len(self.running))) - set(rows))  # the rows that stay, in slot order
        self.slots.compact(keep, len(self.running))
        self.running = [self.running[i] for i in keep]
        self.sampler.refresh([s.req.params for s in self.running])
