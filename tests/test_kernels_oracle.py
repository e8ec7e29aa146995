"""The oracle processors' Triton kernels (kernels/oracle.py) vs their torch path and per-sequence references.

Without a GPU the kernels run on the CPU interpreter. They write in place, so every Triton call gets a copy.
"""
from __future__ import annotations

import pytest
import torch
from test_sparse_processors import (
    DEVICE,
    HQ,
    LENGTHS,
    LOCAL,
    SEQ_IDS,
    SINK,
    WIDTH,
    make_logits,
    meta_for,
    ref_oracle_sample,
    ref_oracle_topp,
    run,
)

from litesys.attention.sparse import SparseConfig
from litesys.attention.sparse.oracle_sample import OracleSampleProcessor
from litesys.attention.sparse.oracle_topp import OracleTopPProcessor
from litesys.kernels import oracle as triton_oracle

# the sampled logit of a position never drawn is log(0) = -inf (numpy warns about it on the interpreter)
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")

METHODS = {
    "oracle_topp": (dict(attn_oracle_topp=0.7, attn_local=LOCAL), ref_oracle_topp),
    "oracle_sample": (dict(attn_nsample=8, attn_local=LOCAL), ref_oracle_sample),
}


def assert_same(got: torch.Tensor, expected: torch.Tensor) -> None:
    """Same kept positions exactly; kept values to float rounding (sampled log-weights sum in another order)."""
    assert torch.equal(torch.isfinite(got), torch.isfinite(expected))
    fin = torch.isfinite(expected)
    torch.testing.assert_close(got[fin], expected[fin], rtol=1e-6, atol=1e-5)


def both(proc, logits: torch.Tensor, lengths: list[int], layer: int = 1,
         seq: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(torch path, Triton path) of one processor on a batch (the Triton one on a copy: it writes in place)."""
    meta = meta_for(lengths)
    if seq is not None:
        meta.seq_ids = seq.to(DEVICE)
    out = []
    for backend in ("torch", "triton"):
        proc.backend = backend
        out.append(proc(logits.clone().to(DEVICE), meta.lengths, layer, meta).cpu())
    return out[0], out[1]


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("layer,seed", [(1, 0), (2, 1), (1, 7)])
def test_triton_matches_torch_and_reference(name: str, layer: int, seed: int) -> None:
    """The ragged batch (rows shorter than sink + local, around the dense threshold, width padded past the longest)."""
    kwargs, ref = METHODS[name]
    logits = make_logits(LENGTHS, WIDTH, seed=seed)
    expected = run(SparseConfig(**kwargs), logits, LENGTHS, layer, "torch")
    got = run(SparseConfig(**kwargs), logits.clone(), LENGTHS, layer, "triton")
    assert_same(got, expected)
    n_sparse = 0
    for b, n in enumerate(LENGTHS):
        assert_same(got[b, :, :n], ref(logits[b, :, :n], n, b, layer))
        assert torch.isinf(got[b, :, n:]).all()  # padding untouched
        if n <= SINK + LOCAL:
            assert torch.equal(got[b], logits[b])
        n_sparse += int((~torch.isfinite(got[b, :, :n])).any())
    assert n_sparse >= 4


@pytest.mark.parametrize("p", [0.7, 1.0])
def test_topp_ties_and_underflow(p: float) -> None:
    """All-equal rows (every w ties), few distinct values (ties at the threshold), and w underflowing to 0 / -inf."""
    lengths = [64, 64, 64, 40]
    logits = torch.zeros(4, HQ, 64)
    logits[1] = torch.randint(0, 3, (HQ, 64), generator=torch.Generator().manual_seed(0)).float()
    logits[2, :, SINK:] = -200.0  # exp underflows: only the positions at the max carry mass
    logits[2, :, 20:23] = 1.0
    logits[2, :, 30] = float("-inf")
    logits[3, :, 40:] = float("-inf")
    proc = OracleTopPProcessor(p, SINK, LOCAL)
    expected, got = both(proc, logits, lengths)
    assert_same(got, expected)
    middle = 64 - SINK - LOCAL
    n_keep = middle if p == 1.0 else sum(j < torch.tensor(p) * middle for j in range(middle))  # all tie at w = 1
    assert torch.isfinite(got[0, :, SINK:64 - LOCAL]).sum(-1).tolist() == [n_keep] * HQ
    assert torch.isfinite(got[0, :, SINK:SINK + n_keep]).all()  # the lower positions first
    assert torch.isfinite(got[2, :, SINK:64 - LOCAL]).sum(-1).tolist() == [3] * HQ  # w == 0 never kept
    for b, n in enumerate(lengths):
        assert_same(got[b, :, :n], ref_oracle_topp(logits[b, :, :n], n, b, 1, p))


@pytest.mark.parametrize("width", [128, 130])
def test_pow2_and_padded_widths(width: int) -> None:
    """A row filling a power-of-two width, and a width just past it (the kernel pads to the next power of two)."""
    lengths = [width, 100, 5, width - 1]
    logits = make_logits(lengths, width, seed=3)
    for proc in (OracleTopPProcessor(0.9, SINK, LOCAL), OracleSampleProcessor(16, SINK, LOCAL)):
        expected, got = both(proc, logits, lengths, layer=2)
        assert_same(got, expected)


def test_streamed_blocks_and_chunks() -> None:
    """Rows streamed in blocks of 16 (carries: the cdf total, the top-p tie ranks) and n = 10 draws in chunks of 4
    (a remainder) or 16 (one partial chunk): the same as the torch path."""
    lengths = [90, 61, 33, 12]
    logits = make_logits(lengths, 96, seed=4)
    logits[0, :, 20:50] = 10.0  # 30 ties at the top-p threshold, across three blocks
    lens = torch.tensor(lengths, dtype=torch.int32, device=DEVICE)
    expected, _ = both(OracleTopPProcessor(0.8, SINK, LOCAL), logits, lengths)
    got = triton_oracle.oracle_topp(logits.clone().to(DEVICE), lens, 0.8, SINK, LOCAL, block=16).cpu()
    assert_same(got, expected)
    assert torch.isfinite(got[0, :, 20:50]).sum(-1).tolist() == [25] * HQ  # rank < 0.8 * (30 + a little)
    expected, _ = both(OracleSampleProcessor(10, SINK, LOCAL, seed=3), logits, lengths)
    seq = SEQ_IDS[:len(lengths)].to(DEVICE)
    for block, chunk in ((16, 4), (16, 16), (128, 4)):
        got = triton_oracle.oracle_sample(logits.clone().to(DEVICE), lens, 10, SINK, LOCAL, seq, 3, 1, block=block,
                                          chunk=chunk)
        assert_same(got.cpu(), expected)


def test_int_args_equal_to_one() -> None:
    """Triton specialises int arguments equal to 1 (sink, local, n, seed, layer, sequence id)."""
    lengths = [20, 3, 2]
    logits = make_logits(lengths, 24, seed=5)
    seq = torch.ones(3, dtype=torch.int64)
    for proc in (OracleTopPProcessor(0.5, 1, 1), OracleSampleProcessor(1, 1, 1, seed=1)):
        expected, got = both(proc, logits, lengths, layer=1, seq=seq)
        assert_same(got, expected)
        assert not torch.isfinite(got[0]).all()  # the long row really went sparse


def test_sample_keeps_n_draws_and_mass() -> None:
    """Each sparse row's counts add up to n; the softmax total (sink + local + middle mass) is kept."""
    n, k = 200, 32
    logits = make_logits([n, n], n, seed=6)
    _, got = both(OracleSampleProcessor(k, SINK, LOCAL), logits, [n, n])
    middle = got[:, :, SINK:n - LOCAL]
    w = torch.exp(middle - torch.logsumexp(logits[:, :, SINK:n - LOCAL], -1, keepdim=True))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, HQ))  # sum of count / n over the middle
    torch.testing.assert_close((w * k).round(), w * k, rtol=0, atol=1e-3)  # integer counts
    torch.testing.assert_close(torch.logsumexp(got, -1), torch.logsumexp(logits, -1))
