"""Batch-invariant attention: a sequence's output is bitwise the same alone or in any batch, and prefill gives
bitwise what decode steps give at the same positions.

Values are checked against ``ops_torch`` (the reference of every attention kernel); invariance against the same
sequence computed alone, with a narrower page table, among sequences of other lengths and behind NaN garbage in
the pages it must not read. The fixed-split Triton decode runs on the CPU interpreter without a GPU.
"""
from __future__ import annotations

import pytest
import torch

from litesys.kernels.ref import ops_invariant as inv
from litesys.kernels.ref import ops_torch

PAGES, PAGE, HKV, G, D = 96, 4, 2, 3, 16
SCALE = D ** -0.5


def _cache(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(PAGES, PAGE, HKV, D, generator=g)
    v = torch.randn(PAGES, PAGE, HKV, D, generator=g)
    k[0], v[0] = float("nan"), float("nan")  # page 0: what a table's unused entries point at, never read
    return k, v


def _tables(lens: list[int], width: int, seed: int = 0) -> torch.Tensor:
    """A page table [B, width] of distinct shuffled pages; entries past each length point at the NaN page 0."""
    perm = torch.randperm(PAGES - 1, generator=torch.Generator().manual_seed(seed)) + 1
    pt = torch.zeros(len(lens), width, dtype=torch.int32)
    used = 0
    for b, n in enumerate(lens):
        k = -(-n // PAGE)
        pt[b, :k] = perm[used:used + k]
        used += k
    return pt


def _nan_tail(k: torch.Tensor, v: torch.Tensor, pt: torch.Tensor, lens: list[int]) -> None:
    """NaN in the unused slots of each sequence's last page (a read past a length would poison the output)."""
    for b, n in enumerate(lens):
        if n % PAGE:
            k[pt[b, (n - 1) // PAGE], n % PAGE:] = float("nan")
            v[pt[b, (n - 1) // PAGE], n % PAGE:] = float("nan")


LENS = [37, 1, 16, 17, 50, 4, 33]


def test_values_match_ops_torch():
    k, v = _cache()
    pt = _tables(LENS, 16)
    _nan_tail(k, v, pt, LENS)
    lengths = torch.tensor(LENS, dtype=torch.int32)
    q = torch.randn(len(LENS), HKV * G, D)
    ref = ops_torch.paged_decode_fused(q, k.nan_to_num(), v.nan_to_num(), pt, lengths, SCALE, max(LENS))
    out = inv.paged_decode_fused(q, k, v, pt, lengths, SCALE, max(LENS))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    logits = inv.paged_decode_logits(q, k, pt, lengths, SCALE, 60)
    ref_logits = ops_torch.paged_decode_logits(q, k.nan_to_num(), pt, lengths, SCALE, 60)
    assert torch.equal(torch.isinf(logits), torch.isinf(ref_logits)) and not logits.isnan().any()
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(inv.paged_softmax_v(logits, v, pt, lengths), ref, rtol=1e-5, atol=1e-6)


def test_a_sequence_alone_equals_it_in_any_batch():
    k, v = _cache()
    pt = _tables(LENS, 16)
    _nan_tail(k, v, pt, LENS)
    lengths = torch.tensor(LENS, dtype=torch.int32)
    q = torch.randn(len(LENS), HKV * G, D)
    batch = inv.paged_decode_fused(q, k, v, pt, lengths, SCALE, max(LENS))
    logits = inv.paged_decode_logits(q, k, pt, lengths, SCALE, max(LENS))
    batch_sv = inv.paged_softmax_v(logits, v, pt, lengths)
    for b, n in enumerate(LENS):
        width = -(-n // PAGE)
        alone = inv.paged_decode_fused(q[b:b + 1], k, v, pt[b:b + 1, :width], lengths[b:b + 1], SCALE, n)
        assert torch.equal(alone[0], batch[0 + b]), b
        lg = inv.paged_decode_logits(q[b:b + 1], k, pt[b:b + 1, :width], lengths[b:b + 1], SCALE, n)
        assert torch.equal(lg[0], logits[b, :, :n])
        sv = inv.paged_softmax_v(lg, v, pt[b:b + 1, :width], lengths[b:b + 1])
        assert torch.equal(sv[0], batch_sv[b]), b
    # a wider table and a longer max_len (a larger CUDA-graph bucket) change nothing either
    wide = torch.cat([pt, torch.zeros(len(LENS), 24, dtype=torch.int32)], 1)
    assert torch.equal(inv.paged_decode_fused(q, k, v, wide, lengths, SCALE, 150), batch)


def _prompt(n: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, HKV * G, D, generator=g), torch.randn(n, HKV, D, generator=g),
            torch.randn(n, HKV, D, generator=g))


def test_prefill_equals_decode_at_every_position():
    n = 23
    q, k, v = _prompt(n)
    cu = torch.tensor([0, 5, 5 + n], dtype=torch.int32)  # our prompt packed after a 5-token one
    q5, k5, v5 = _prompt(5, seed=2)
    pre = inv.prefill_attention(torch.cat([q5, q]), torch.cat([k5, k]), torch.cat([v5, v]), cu, n, SCALE)[5:]
    alone = torch.tensor([0, n], dtype=torch.int32)
    assert torch.equal(inv.prefill_attention(q, k, v, alone, n, SCALE), pre)
    torch.testing.assert_close(pre, ops_torch.prefill_attention(q, k, v, alone, n, SCALE), rtol=1e-5, atol=1e-6)
    # the same K/V in (shuffled) pages; every position as one decode row, then each alone
    kc, vc = _cache()
    pages = _tables([n], 8)[0]
    for t in range(n):
        kc[pages[t // PAGE], t % PAGE], vc[pages[t // PAGE], t % PAGE] = k[t], v[t]
    table = pages.expand(n, -1).contiguous()
    steps = torch.arange(1, n + 1, dtype=torch.int32)
    assert torch.equal(inv.paged_decode_fused(q, kc, vc, table, steps, SCALE, n), pre)
    for t in (0, 6, 22):
        one = inv.paged_decode_fused(q[t:t + 1], kc, vc, table[:1], steps[t:t + 1], SCALE, t + 1)
        assert torch.equal(one[0], pre[t]), t


def test_bf16_and_fp8_caches():
    lens = [9, 30]
    k, v = _cache()
    k, v = k.nan_to_num(), v.nan_to_num()
    pt = _tables(lens, 10)
    lengths = torch.tensor(lens, dtype=torch.int32)
    q = torch.randn(2, HKV * G, D)
    kb, vb, qb = k.bfloat16(), v.bfloat16(), q.bfloat16()
    out = inv.paged_decode_fused(qb, kb, vb, pt, lengths, SCALE, 30)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ops_torch.paged_decode_fused(qb, kb, vb, pt, lengths, SCALE, 30).float(),
                               rtol=1e-2, atol=1e-2)
    ks, vs = torch.tensor([0.02, 0.03]), torch.tensor([0.01, 0.05])
    k8, v8 = (k / ks[:, None]).to(torch.float8_e4m3fn), (v / vs[:, None]).to(torch.float8_e4m3fn)
    out8 = inv.paged_decode_fused(q, k8, v8, pt, lengths, SCALE, 30, ks, vs)
    torch.testing.assert_close(out8, ops_torch.paged_decode_fused(q, k8, v8, pt, lengths, SCALE, 30, ks, vs),
                               rtol=1e-5, atol=1e-6)


def _triton_decode():
    pytest.importorskip("triton")
    from litesys.kernels import decode

    return decode


@pytest.mark.parametrize("processor_path", [False, True])  # fused, or logits -> softmax·V
def test_fixed_split_triton_decode_alone_equals_in_batch(processor_path):
    decode = _triton_decode()
    from litesys.kernels.launch import DecodeConfig

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = DecodeConfig(block_n=16, split_tokens=32, logits_chunk=32, logits_block_n=16)
    k, v = (t.to(dev) for t in _cache())
    pt = _tables(LENS, 24).to(dev)
    _nan_tail(k, v, pt, LENS)
    lengths = torch.tensor(LENS, dtype=torch.int32, device=dev)
    q = torch.randn(len(LENS), HKV * G, D, device=dev)

    def run(qs, table, lens, width):
        if not processor_path:
            return decode.fused(qs, k, v, table, lens, SCALE, cfg)
        return decode.softmax_v(decode.logits(qs, k, table, lens, SCALE, width, cfg), v, table, lens, cfg)

    batch = run(q, pt, lengths, max(LENS) + 3)
    ref = ops_torch.paged_decode_fused(q, k.nan_to_num(), v.nan_to_num(), pt, lengths, SCALE, max(LENS))
    torch.testing.assert_close(batch, ref, rtol=1e-5, atol=1e-5)
    for b, n in enumerate(LENS):  # its own narrow table (fewer splits, another grid) and exact width
        alone = run(q[b:b + 1], pt[b:b + 1, :-(-n // PAGE)], lengths[b:b + 1], n)
        assert torch.equal(alone[0], batch[b]), (b, n)


def test_fixed_split_must_be_whole_blocks():
    decode = _triton_decode()
    from litesys.kernels.launch import DecodeConfig

    k, v = _cache()
    with pytest.raises(ValueError, match="split_tokens .* must be a multiple of block_n"):
        decode.fused(torch.randn(1, HKV * G, D), k, v, _tables([5], 4), torch.tensor([5], dtype=torch.int32),
                     SCALE, DecodeConfig(block_n=16, split_tokens=24))


def test_deterministic_gpu_ops_module():
    """kernels/ops_invariant.py (what deterministic mode runs on CUDA): ops_torch's values, batch-invariant."""
    _triton_decode()
    from litesys.kernels import ops_invariant

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    lens = [260, 5, 40]  # across the 256-token splits
    k, v = (t.to(dev) for t in _cache())
    pt = _tables(lens, 80).to(dev)
    lengths = torch.tensor(lens, dtype=torch.int32, device=dev)
    q = torch.randn(3, HKV * G, D, device=dev)
    out = ops_invariant.paged_decode_fused(q, k, v, pt, lengths, SCALE)
    torch.testing.assert_close(out, ops_torch.paged_decode_fused(q, k.nan_to_num(), v.nan_to_num(), pt, lengths,
                                                                   SCALE, 260), rtol=1e-5, atol=1e-5)
    logits = ops_invariant.paged_decode_logits(q, k, pt, lengths, SCALE, 270)
    torch.testing.assert_close(ops_invariant.paged_softmax_v(logits, v, pt, lengths), out, rtol=1e-5, atol=1e-5)
    for b, n in enumerate(lens):
        alone = ops_invariant.paged_decode_fused(q[b:b + 1], k, v, pt[b:b + 1, :-(-n // PAGE)], lengths[b:b + 1],
                                                 SCALE)
        assert torch.equal(alone[0], out[b]), b
