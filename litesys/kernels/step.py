"""The decode step's bookkeeping around the forward as Triton launches: ``decode_meta`` before it (positions,
KV slots, lengths, the length advance), ``longest_first`` (the rows by length, the order the decode attention
launches its programs in) and ``commit`` after the sampler (append the token, advance the generated length, EOS /
length / repetition stop codes).

Their twins, ``kernels/ref/step.py``, are the torch code they replace (the CPU path and the reference). In
torch these are ~30 launches of [B]-sized ops per step plus, per repetition group, a [B, window, block] compare
(H200, Qwen3-0.6B at 256 rows: ~0.1 ms of a 6 ms step); here two, one program per row for ``commit`` (a row's
result depends on that row alone), plus ``longest_first`` (its twin is a stable ``torch.sort``). Integer work only:
bit for bit the twins' results.
"""
from __future__ import annotations

import torch

from litesys.kernels.common import next_pow2, use_triton
from litesys.kernels.ref import step as ref

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU installs without triton
    triton = None


def decode_meta(seq_len: torch.Tensor, page_table: torch.Tensor, page_size: int, backend: str = "auto"
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows' next positions ``seq_len`` [B] int64 and their page table [B, P] int32 -> (positions [B] int64, flat
    KV slots ``page * page_size + offset`` [B] int64, lengths with the new token [B] int32); then ``seq_len`` += 1
    in place for every row whose first page is not the scratch page 0 (a graph's padding rows stay at 0)."""
    if not use_triton(seq_len, backend):
        return ref.decode_meta(seq_len, page_table, page_size)
    B = seq_len.shape[0]
    pos = torch.empty_like(seq_len)
    slot = torch.empty_like(seq_len)
    lengths = torch.empty(B, dtype=torch.int32, device=seq_len.device)
    if B:
        block = min(1024, next_pow2(B))
        _decode_meta_kernel[(triton.cdiv(B, block),)](seq_len, page_table, pos, slot, lengths, B,
                                                     page_table.stride(0), PAGE=page_size, BLOCK=block, num_warps=4)
    return pos, slot, lengths


def longest_first(lengths: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Row indices of ``lengths`` [B] int32, longest first, ties in row order -> [B] int32 (a stable descending
    sort). The decode attention launches its (sequence, KV head) programs in this order, so the longest run first
    and the short ones fill the last wave (longest-processing-time-first scheduling; results do not depend on it)."""
    if not use_triton(lengths, backend):
        return ref.longest_first(lengths)
    B = lengths.shape[0]
    order = torch.empty(B, dtype=torch.int32, device=lengths.device)
    if B:
        _longest_first_kernel[(triton.cdiv(B, 64),)](lengths, order, B, ROWS=64, COLS=64, num_warps=4)
    return order


MAX_GROUPS = 4  # repetition groups ``commit`` takes (one row meets one; a run has one per distinct setting)


def commit(tok: torch.Tensor, generated: torch.Tensor, gen_len: torch.Tensor, last_token: torch.Tensor,
           finish_code: torch.Tensor, max_gen: torch.Tensor, ignore_eos: torch.Tensor, rep_group: torch.Tensor,
           eos: torch.Tensor, rep_groups: tuple[tuple[int, int, int], ...], codes: tuple[int, int, int, int],
           backend: str = "auto") -> None:
    """Rows' new tokens ``tok`` [B] int64 into their slot state, in place (every argument a [B] view of the slot
    columns but ``generated`` [B, cap] int32 and ``eos`` [E] int64): ``generated[b, min(gen_len, cap - 1)] = tok``,
    ``last_token = tok``; for live rows (``finish_code == RUNNING``) ``gen_len += 1`` and the new code: STOP on an
    EOS id (unless ``ignore_eos``), else LENGTH at ``max_gen``, else REPETITION when the row's group
    (``rep_group``, -1: none) of ``rep_groups`` (window, block, threshold) finds the trailing block at least
    threshold times in the last window tokens (``ref.repetition_hits``). ``codes``: RUNNING, STOP, LENGTH,
    REPETITION. More than ``MAX_GROUPS`` groups: the twin."""
    args = (tok, generated, gen_len, last_token, finish_code, max_gen, ignore_eos, rep_group, eos, rep_groups, codes)
    if not use_triton(tok, backend) or len(rep_groups) > MAX_GROUPS:
        return ref.commit(*args)
    B, cap = generated.shape
    tok = tok.contiguous()  # e.g. a column of the top-k's indices (greedy)
    if B == 0:
        return
    # a window longer than the capacity never fills (no hits): such a group is left out
    live = [(i, *g) for i, g in enumerate(rep_groups) if g[0] <= cap]
    span = max([w - k + 1 for _, w, k, _ in live] + [1])
    args = [v for g in live for v in g] + [0] * 4 * (MAX_GROUPS - len(live))
    _commit_kernel[(B,)](tok, generated, gen_len, last_token, finish_code, max_gen, ignore_eos, rep_group, eos,
                         eos.shape[0], cap, generated.stride(0), *args, NGROUPS=len(live), RUNNING=codes[0],
                         STOP=codes[1], LENGTH=codes[2], REPETITION=codes[3],
                         EOS_BLOCK=max(2, next_pow2(eos.shape[0])), SPAN=max(16, next_pow2(span)), num_warps=4)


if triton is not None:

    @triton.jit
    def _decode_meta_kernel(seq_ptr, pt_ptr, pos_ptr, slot_ptr, len_ptr, B, stride_pt, PAGE: tl.constexpr,
                            BLOCK: tl.constexpr):
        b = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = b < B
        pos = tl.load(seq_ptr + b, mask=m, other=0)
        row = pt_ptr + b.to(tl.int64) * stride_pt
        page = tl.load(row + pos // PAGE, mask=m, other=0).to(tl.int64)
        first = tl.load(row, mask=m, other=0)
        tl.store(pos_ptr + b, pos, mask=m)
        tl.store(slot_ptr + b, page * PAGE + pos % PAGE, mask=m)
        tl.store(len_ptr + b, (pos + 1).to(tl.int32), mask=m)
        tl.store(seq_ptr + b, pos + (first != 0).to(tl.int64), mask=m)

    @triton.jit
    def _longest_first_kernel(len_ptr, order_ptr, B, ROWS: tl.constexpr, COLS: tl.constexpr):
        """Each row's rank = the rows longer than it, plus the equally long ones before it; order[rank] = row."""
        i = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
        li = tl.load(len_ptr + i, mask=i < B, other=0)
        rank = tl.zeros([ROWS], dtype=tl.int32)
        for j0 in range(0, B, COLS):
            j = j0 + tl.arange(0, COLS)
            lj = tl.load(len_ptr + j, mask=j < B, other=0)
            ahead = (lj[None, :] > li[:, None]) | ((lj[None, :] == li[:, None]) & (j[None, :] < i[:, None]))
            rank += tl.sum((ahead & (j[None, :] < B)).to(tl.int32), axis=1)
        tl.store(order_ptr + rank, i, mask=i < B)

    @triton.jit
    def _window_at(gen_row, c, cap, col, tok):
        """generated[b, min(c, cap - 1)] with this step's token at ``col`` (written by this program: not re-read)."""
        c = tl.minimum(c, cap - 1)
        return tl.where(c == col, tok, tl.load(gen_row + c))

    @triton.jit
    def _repeats(gen_row, n, cap, col, tok, window, block, threshold, SPAN: tl.constexpr):
        """Whether the trailing ``block`` tokens of the last ``window`` (ending at ``n``) occur in them at least
        ``threshold`` times (the trailing frame itself counts, as in the twin)."""
        start = n - window
        i = tl.arange(0, SPAN)
        eq = i <= window - block
        alive = tl.sum(eq.to(tl.int32), axis=0)
        j = 0
        # stop once fewer than threshold offsets still match (text that does not repeat: after a token or two)
        while (j < block) & (alive >= threshold):
            t = _window_at(gen_row, start + window - block + j, cap, col, tok)
            eq &= _window_at(gen_row, start + i + j, cap, col, tok) == t
            alive = tl.sum(eq.to(tl.int32), axis=0)
            j += 1
        return alive >= threshold

    @triton.jit
    def _commit_kernel(tok_ptr, gen_ptr, len_ptr, last_ptr, code_ptr, max_ptr, ign_ptr, grp_ptr, eos_ptr, n_eos, cap,
                       stride_g, g0, w0, k0, t0, g1, w1, k1, t1, g2, w2, k2, t2, g3, w3, k3, t3,
                       NGROUPS: tl.constexpr, RUNNING: tl.constexpr, STOP: tl.constexpr, LENGTH: tl.constexpr,
                       REPETITION: tl.constexpr, EOS_BLOCK: tl.constexpr, SPAN: tl.constexpr):
        b = tl.program_id(0)
        gen_row = gen_ptr + b.to(tl.int64) * stride_g
        tok = tl.load(tok_ptr + b)
        n = tl.load(len_ptr + b)
        code0 = tl.load(code_ptr + b)
        live = code0 == RUNNING
        col = tl.minimum(n, cap - 1)
        tl.store(gen_row + col, tok.to(tl.int32))  # a finished row (not yet collected) writes just past its end
        n += live.to(tl.int64)
        tl.store(len_ptr + b, n)
        tl.store(last_ptr + b, tok)
        e = tl.arange(0, EOS_BLOCK)
        eos = tl.load(eos_ptr + e, mask=e < n_eos, other=-2)
        is_eos = (tl.sum((eos == tok).to(tl.int32), axis=0) > 0) & (tl.load(ign_ptr + b) == 0)
        code = tl.where(is_eos, STOP, tl.where(n >= tl.load(max_ptr + b), LENGTH, RUNNING))
        if NGROUPS > 0:
            grp = tl.load(grp_ptr + b)
            for s in tl.static_range(NGROUPS):
                g = g0 if s == 0 else g1 if s == 1 else g2 if s == 2 else g3
                w = w0 if s == 0 else w1 if s == 1 else w2 if s == 2 else w3
                k = k0 if s == 0 else k1 if s == 1 else k2 if s == 2 else k3
                t = t0 if s == 0 else t1 if s == 1 else t2 if s == 2 else t3
                if (grp == g) & (code == RUNNING) & live & (n >= w):
                    if _repeats(gen_row, n, cap, col, tok.to(tl.int32), w, k, t, SPAN):
                        code = REPETITION
        tl.store(code_ptr + b, tl.where(live, code, code0))
