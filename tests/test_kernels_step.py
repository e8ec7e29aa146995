"""kernels/step.py (Triton, interpreted on CPU) against its twins, kernels/ref/step.py: the decode step's meta and
its commit (append, lengths, EOS / length / repetition codes), state for state over several steps."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU interpreter
triton = pytest.importorskip("triton")
DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"

CODES = (0, 1, 2, 3)  # RUNNING, STOP, LENGTH, REPETITION as the sampler numbers them


def test_decode_meta_matches_the_twin_and_leaves_padding_rows():
    from litesys.kernels import step
    from litesys.kernels.ref import step as ref

    g = torch.Generator().manual_seed(0)
    B, P, ps = 37, 9, 4
    table = torch.randint(1, 500, (B, P), generator=g, dtype=torch.int32)
    table[[3, 20, 36]] = 0  # graph padding rows: only the scratch page
    seq_len = torch.randint(0, P * ps, (B,), generator=g)
    seq_len[[3, 20, 36]] = 0
    want_len = seq_len.clone()
    want = ref.decode_meta(want_len, table, ps)
    got_len = seq_len.clone().to(DEVICE)
    got = step.decode_meta(got_len, table.to(DEVICE), ps, backend="triton")
    for w, x in zip(want, got):
        assert w.dtype == x.dtype and torch.equal(w, x.cpu())
    assert torch.equal(got_len.cpu(), want_len)
    assert want_len[[3, 20, 36]].tolist() == [0, 0, 0] and torch.equal(want_len[:3], seq_len[:3] + 1)
    # by hand: row 0's slot is its page (at position // ps) * ps + position % ps
    p0 = int(seq_len[0])
    assert int(want[1][0]) == int(table[0, p0 // ps]) * ps + p0 % ps


def _state(B: int, cap: int, g: torch.Generator) -> dict:
    """Slot columns with every case: live and finished rows, some near max_gen, some at the capacity, periodic
    histories (repetition hits) and random ones, rows in no group, in each group, ignore_eos on some."""
    gen = torch.randint(10, 14, (B, cap), generator=g, dtype=torch.int32)  # 4 symbols: repeats happen
    period = torch.tensor([21, 22, 23], dtype=torch.int32).repeat(cap)[:cap]
    gen[::3] = period  # every third row is periodic with period 3
    gen_len = torch.randint(0, cap + 1, (B,), generator=g)
    gen_len[:4] = torch.tensor([cap, cap - 1, 0, 1])
    return dict(generated=gen, gen_len=gen_len, last_token=torch.zeros(B, dtype=torch.int64),
                finish_code=torch.where(torch.rand(B, generator=g) < 0.2, 1, 0).long(),
                max_gen=torch.randint(1, cap + 4, (B,), generator=g),
                ignore_eos=(torch.rand(B, generator=g) < 0.3).long(),
                rep_group=torch.randint(-1, 3, (B,), generator=g))


@pytest.mark.parametrize("groups", [(), ((12, 3, 3),), ((12, 3, 3), (8, 2, 2), (40, 4, 2))])
def test_commit_matches_the_twin_over_steps(groups):
    from litesys.kernels import step
    from litesys.kernels.ref import step as ref

    g = torch.Generator().manual_seed(len(groups))
    B, cap = 48, 24  # the (40, 4, 2) group's window is past the capacity: never a hit
    want = _state(B, cap, g)
    got = {k: v.clone().to(DEVICE) for k, v in want.items()}
    eos = torch.tensor([11, 5], dtype=torch.int64)
    seen = set()
    for _ in range(10):
        # the periodic rows go on with their period (a repetition), the others draw a symbol (some are EOS)
        nxt = torch.randint(10, 14, (B,), generator=g)
        nxt[::3] = 21 + (want["gen_len"][::3] % 3)
        cols = ("generated", "gen_len", "last_token", "finish_code", "max_gen", "ignore_eos", "rep_group")
        ref.commit(nxt, *(want[c] for c in cols), eos, groups, CODES)
        step.commit(nxt.to(DEVICE), *(got[c] for c in cols), eos.to(DEVICE), groups, CODES, backend="triton")
        for c in cols:
            assert torch.equal(got[c].cpu(), want[c]), c
        seen |= set(want["finish_code"].tolist())
    assert seen == ({0, 1, 2, 3} if groups else {0, 1, 2})  # every code was set: each branch was compared


def test_commit_by_hand():
    """One row, window 6, block 2, threshold 3: ...1 2 1 2 1 + 2 -> the pair (1, 2) three times: REPETITION;
    an EOS id stops a row unless it ignores EOS; the length code at max_gen; a finished row keeps its state."""
    from litesys.kernels import step

    gen = torch.tensor([[1, 2, 1, 2, 1, 0, 0, 0]] * 4, dtype=torch.int32).to(DEVICE)
    gen_len = torch.tensor([5, 5, 5, 5]).to(DEVICE)
    code = torch.tensor([0, 0, 0, 2]).to(DEVICE)
    last = torch.zeros(4, dtype=torch.int64, device=DEVICE)
    tok = torch.tensor([2, 9, 9, 2]).to(DEVICE)
    step.commit(tok, gen, gen_len, last, code, torch.tensor([50, 50, 6, 50]).to(DEVICE),
                torch.tensor([0, 0, 1, 0]).to(DEVICE), torch.tensor([0, 0, 0, 0]).to(DEVICE),
                torch.tensor([9]).to(DEVICE), ((6, 2, 3),), CODES, backend="triton")
    assert code.tolist() == [3, 1, 2, 2]  # repetition, EOS, length (EOS ignored), already finished
    assert gen_len.tolist() == [6, 6, 6, 5] and last.tolist() == [2, 9, 9, 2]
    assert gen[:, 5].tolist() == [2, 9, 9, 2]  # the finished row writes just past its end, as the twin does


def test_commit_one_occurrence_short_of_the_threshold_is_no_hit():
    """The same window as above with threshold 4: three occurrences are not enough (the kernel stops counting once
    fewer than the threshold can still match: the answer must not change)."""
    from litesys.kernels import step

    gen = torch.tensor([[1, 2, 1, 2, 1, 0, 0, 0]], dtype=torch.int32).to(DEVICE)
    gen_len, code = torch.tensor([5]).to(DEVICE), torch.tensor([0]).to(DEVICE)
    one = torch.tensor([0]).to(DEVICE)
    step.commit(torch.tensor([2]).to(DEVICE), gen, gen_len, one.clone(), code, torch.tensor([50]).to(DEVICE), one,
                one, torch.tensor([9]).to(DEVICE), ((6, 2, 4),), CODES, backend="triton")
    assert code.tolist() == [0] and gen_len.tolist() == [6]


def test_longest_first_is_a_stable_descending_sort():
    from litesys.kernels import step
    from litesys.kernels.ref import step as ref

    g = torch.Generator().manual_seed(3)
    for B in (1, 5, 64, 130):  # one program, several, a partial last chunk of rows and of columns
        lengths = torch.randint(1, 12, (B,), generator=g, dtype=torch.int32)  # many ties
        want = ref.longest_first(lengths)
        got = step.longest_first(lengths.to(DEVICE), backend="triton").cpu()
        assert got.dtype == torch.int32 and torch.equal(got, want)
        # by hand: lengths never increase along the order, and equal lengths keep their row order
        ls = lengths[want.long()]
        assert bool((ls[:-1] >= ls[1:]).all())
        ties = want[:-1][ls[:-1] == ls[1:]], want[1:][ls[:-1] == ls[1:]]
        assert bool((ties[0] < ties[1]).all())
    assert step.longest_first(torch.tensor([3, 9, 9, 1], dtype=torch.int32).to(DEVICE),
                              backend="triton").tolist() == [1, 2, 0, 3]
    assert step.longest_first(torch.zeros(0, dtype=torch.int32).to(DEVICE), backend="triton").numel() == 0
