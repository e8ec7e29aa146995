"""Every logits processor vs a plain per-sequence reference: the same kept positions, on ragged batches."""
from __future__ import annotations

import math

import pytest
import torch

from litesys.attention.meta import AttnMeta
from litesys.attention.sparse import SparseConfig, build
from litesys.attention.sparse.base import DenseMethod
from litesys.attention.sparse.common import AttnShape
from litesys.kernels.hash import counter_hash, hash_to_uniform

HQ, HKV, SINK, LOCAL = 4, 2, 4, 6
G = HQ // HKV
NEG = float("-inf")
# ragged: shorter than sink + local, around every method's dense threshold, long; width padded past the longest
LENGTHS = [1, 7, 10, 11, 14, 19, 23, 33, 50, 64, 97]
WIDTH = 104
SEQ_IDS = torch.arange(len(LENGTHS), dtype=torch.int64) * 7 + 3
# the processors run on the GPU when there is one (the Triton selections need it); references stay on the CPU
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_logits(lengths: list[int], width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(lengths), HQ, width, generator=g) * 2
    for b, n in enumerate(lengths):
        logits[b, :, n:] = NEG
    return logits


def meta_for(lengths: list[int]) -> AttnMeta:
    return AttnMeta(is_prefill=False, slot_mapping=torch.zeros(len(lengths), dtype=torch.int64, device=DEVICE),
                    page_size=16, num_q_heads=HQ, num_kv_heads=HKV,
                    lengths=torch.tensor(lengths, dtype=torch.int32, device=DEVICE), max_len=WIDTH,
                    seq_ids=SEQ_IDS[:len(lengths)].to(DEVICE))


def run(cfg: SparseConfig, logits: torch.Tensor, lengths: list[int], layer: int = 1,
        backend: str = "auto") -> torch.Tensor:
    procs = build(cfg, AttnShape(HQ, HKV, 3), backend).processors  # every processor follows the backend
    meta = meta_for(lengths)
    out = logits.to(DEVICE, copy=True)  # the Triton paths write in place
    for p in procs[layer]:
        out = p(out, meta.lengths, layer, meta)
    assert all(p.graph_safe for p in procs[layer])  # the engine captures them in CUDA graphs
    return out.cpu()


# ---- per-sequence references: one row [HQ, n] of valid logits at a time, loops welcome ----

def ref_keep_middle(row: torch.Tensor, n: int, keep_kv: list[set[int]], sink: int = SINK,
                    local: int = LOCAL) -> torch.Tensor:
    """Drop middle positions (absolute) not kept for each query head's KV head."""
    out = row.clone()
    for h in range(HQ):
        for i in range(sink, n - local):
            if i not in keep_kv[h // G]:
                out[h, i] = NEG
    return out


def ref_group_mean(row: torch.Tensor) -> torch.Tensor:
    return row.view(HKV, G, -1).mean(dim=1)


def ref_local(row, n, b, layer):
    return ref_keep_middle(row, n, [set()] * HKV) if n > SINK + LOCAL else row


def ref_topk(row, n, b, layer, k=5):
    if n <= SINK + LOCAL + k:
        return row
    gm = ref_group_mean(row[:, SINK:n - LOCAL])
    keep = [{SINK + int(i) for i in gm[h].topk(k).indices} for h in range(HKV)]
    return ref_keep_middle(row, n, keep)


def ref_block_topk(row, n, b, layer, k=2, bs=4):
    n_full = math.ceil((SINK + LOCAL + k * bs) / bs) * bs
    if n <= n_full:
        return row
    n_dyn = (n - LOCAL - SINK) // bs * bs
    gm = ref_group_mean(row[:, SINK:SINK + n_dyn]).view(HKV, n_dyn // bs, bs).mean(dim=-1)
    keep = [{SINK + int(j) * bs + t for j in gm[h].topk(k).indices for t in range(bs)} for h in range(HKV)]
    return ref_keep_middle(row, n, keep, local=n - SINK - n_dyn)


def ref_stride(row, n, b, layer, k=2, bs=4, st=2):
    mid = n - SINK - LOCAL
    if mid <= k * bs:
        return row
    gm = ref_group_mean(row[:, SINK:n - LOCAL])
    starts = list(range(0, mid - bs + 1, st))
    keep = []
    for h in range(HKV):
        scores = [(float(gm[h, s:s + bs].mean()), j) for j, s in enumerate(starts)]
        ranked = [j for _, j in sorted(scores, key=lambda x: -x[0])][:2 * k]
        chosen: list[int] = []
        for j in ranked:  # best blocks first, positions in order, until the budget is full
            chosen += [t for t in range(starts[j], starts[j] + bs) if t not in chosen]
        keep.append({SINK + t for t in chosen[:k * bs]})
    return ref_keep_middle(row, n, keep)


def ref_random_subset(n: int, b: int, layer: int, k: int) -> list[set[int]]:
    # the same counter-based noise, drawn for this sequence alone at its own width
    noise = counter_hash(0, layer, SEQ_IDS[b:b + 1], torch.tensor([n]), HKV, n)[0]
    return [set(sorted(range(SINK, n - LOCAL), key=lambda i: (int(noise[h, i]), i))[:k]) for h in range(HKV)]


def ref_random_select(row, n, b, layer, k=6):
    if n <= SINK + LOCAL + k:
        return row
    return ref_keep_middle(row, n, ref_random_subset(n, b, layer, k))


def ref_random_nsample(row, n, b, layer, k=6):
    if n <= SINK + LOCAL + k:
        return row
    out = row.clone()
    out[:, SINK:n - LOCAL] += math.log((n - SINK - LOCAL) / k)
    return ref_keep_middle(out, n, ref_random_subset(n, b, layer, k))


def ref_oracle_sample(row, n, b, layer, k=8):
    if n <= SINK + LOCAL + k:
        return row
    u = hash_to_uniform(counter_hash(0, layer, SEQ_IDS[b:b + 1], torch.tensor([n]), HQ, k))[0]
    out = row.clone()
    for h in range(HQ):
        mid = row[h, SINK:n - LOCAL]
        m = mid.max()
        cdf = torch.exp(mid - m).cumsum(0)
        counts = torch.zeros_like(mid)
        for j in range(k):
            i = min(int(torch.searchsorted(cdf, u[h, j] * cdf[-1], right=True)), len(mid) - 1)
            counts[i] += 1
        out[h, SINK:n - LOCAL] = torch.log(counts / k) + m + torch.log(cdf[-1])
    return out


def ref_oracle_topp(row, n, b, layer, p=0.7):
    if n <= SINK + LOCAL:
        return row
    out = row.clone()
    for h in range(HQ):
        mid = row[h, SINK:n - LOCAL]
        w = torch.exp(mid - mid.max())
        order = sorted(range(len(mid)), key=lambda i: (-float(w[i]), i))
        cum = torch.cumsum(w[order], 0)
        keep = set()
        for r, i in enumerate(order):  # kept while the mass before it is < p of the total
            before = float(cum[r - 1]) if r else 0.0
            if before < p * float(cum[-1]) and w[i] > 0:
                keep.add(i)
        for i in range(len(mid)):
            if i not in keep:
                out[h, SINK + i] = NEG
    return out


def ref_threshold(row, n, b, layer, tau=1.0):
    if n <= SINK + LOCAL:
        return row
    gm = ref_group_mean(row[:, SINK:n - LOCAL])
    keep = [{SINK + i for i in range(gm.shape[1]) if gm[h, i] >= gm[h].max() - tau} for h in range(HKV)]
    return ref_keep_middle(row, n, keep)


CASES = {
    "local": (dict(attn_local=LOCAL), ref_local),
    "topk": (dict(attn_topk=5, attn_local=LOCAL), ref_topk),
    "block_topk": (dict(attn_block_topk=2, attn_block_size=4, attn_local=LOCAL), ref_block_topk),
    "stride": (dict(attn_block_topk=2, attn_block_size=4, attn_stride=2, attn_local=LOCAL), ref_stride),
    "random_select": (dict(attn_random_select=6, attn_local=LOCAL), ref_random_select),
    "random_nsample": (dict(attn_random_nsample=6, attn_local=LOCAL), ref_random_nsample),
    "oracle_sample": (dict(attn_nsample=8, attn_local=LOCAL), ref_oracle_sample),
    "oracle_topp": (dict(attn_oracle_topp=0.7, attn_local=LOCAL), ref_oracle_topp),
    "threshold": (dict(attn_custom="threshold", attn_custom_args={"tau": 1.0}, attn_local=LOCAL), ref_threshold),
}


# methods with a Triton selection (kernels/sparse_ops.py), run on the CPU interpreter here
TRITON = ["topk", "block_topk", "stride", "random_select", "random_nsample"]


@pytest.mark.parametrize("name,backend", [(n, "torch") for n in CASES] + [(n, "triton") for n in TRITON])
@pytest.mark.parametrize("layer", [1, 2])
def test_processor_matches_per_sequence_reference(name: str, backend: str, layer: int) -> None:
    kwargs, ref = CASES[name]
    cfg = SparseConfig(**kwargs)
    assert cfg.method == name
    logits = make_logits(LENGTHS, WIDTH, seed=layer)
    out = run(cfg, logits, LENGTHS, layer, backend)
    assert out.shape == logits.shape
    n_sparse = 0
    for b, n in enumerate(LENGTHS):
        expected = ref(logits[b, :, :n], n, b, layer)
        got = out[b, :, :n]
        # same kept positions exactly; kept values equal (the samplers' log-weights up to float rounding)
        assert torch.equal(torch.isfinite(got), torch.isfinite(expected)), (name, b, n)
        fin = torch.isfinite(expected)
        torch.testing.assert_close(got[fin], expected[fin], rtol=1e-6, atol=1e-5)
        assert torch.isinf(out[b, :, n:]).all()  # padding stays masked
        n_sparse += int((~fin).any())
    assert n_sparse >= 4  # the case really exercises sparse rows
    for b, n in enumerate(LENGTHS):  # sequences that fit in sink + local are left dense
        if n <= SINK + LOCAL:
            assert torch.equal(out[b], logits[b])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_random_draws_independent_of_batch_and_width(backend: str) -> None:
    """A sequence's random selection is a function of (seed, layer, seq id, length): batch-mates don't matter."""
    cfg = SparseConfig(attn_random_select=6, attn_local=LOCAL)
    logits = make_logits(LENGTHS, WIDTH)
    full = run(cfg, logits, LENGTHS, backend=backend)
    procs = build(cfg, AttnShape(HQ, HKV, 3), backend).processors
    b = LENGTHS.index(64)
    meta = meta_for([64])
    meta.seq_ids = SEQ_IDS[b:b + 1].to(DEVICE)
    alone = procs[1][0](logits[b:b + 1, :, :70].to(DEVICE, copy=True).contiguous(), meta.lengths, 1, meta).cpu()
    assert torch.equal(torch.isfinite(alone[0, :, :64]), torch.isfinite(full[b, :, :64]))
    # a different step (length) or layer draws differently
    other = run(cfg, logits, LENGTHS, layer=2, backend=backend)
    assert not torch.equal(torch.isfinite(other[b]), torch.isfinite(full[b]))


def test_random_nsample_estimator_is_unbiased() -> None:
    """Averaged over many draws, the corrected sparse softmax denominator matches the dense one."""
    n, k = 400, 40
    logits = make_logits([n], n, seed=3)
    procs = build(SparseConfig(attn_random_nsample=k, attn_local=LOCAL), AttnShape(HQ, HKV, 2)).processors
    dense = torch.logsumexp(logits[0], dim=-1).exp()
    est = torch.zeros_like(dense)
    trials = 300
    for t in range(trials):
        meta = meta_for([n])
        meta.seq_ids = torch.tensor([t], device=DEVICE)
        est += torch.logsumexp(procs[1][0](logits.to(DEVICE, copy=True), meta.lengths, 1, meta)[0].cpu(), dim=-1).exp()
    torch.testing.assert_close(est / trials, dense, rtol=0.05, atol=0)


def test_oracle_sample_keeps_exact_middle_mass() -> None:
    """Oracle sampling keeps the softmax's total (sink + local exact, middle mass exact, split by counts)."""
    n = 80
    logits = make_logits([n], n, seed=5)
    out = run(SparseConfig(attn_nsample=8, attn_local=LOCAL), logits, [n])
    torch.testing.assert_close(torch.logsumexp(out[0], -1), torch.logsumexp(logits[0], -1))
    torch.testing.assert_close(out[0, :, :SINK], logits[0, :, :SINK])


def test_layer_skip_and_defaults() -> None:
    shape, topk = AttnShape(HQ, HKV, 4), dict(attn_topk=5, attn_local=LOCAL)
    assert sorted(build(SparseConfig(**topk), shape).processors) == [1, 2, 3]  # layer 0 dense by default
    assert sorted(build(SparseConfig(**topk, attn_layer_skip=[1, 3]), shape).processors) == [0, 2]
    assert sorted(build(SparseConfig(**topk, attn_layer_skip=[]), shape).processors) == [0, 1, 2, 3]
    assert isinstance(build(None, shape), DenseMethod)


@pytest.mark.parametrize("name", ["topk", "block_topk"])
def test_triton_selection_breaks_ties_to_lower_positions(name: str) -> None:
    """Equal scores: the Triton selection keeps the lower positions (stable-sort order), still exactly k."""
    kwargs, _ = CASES[name]
    logits = torch.zeros(1, HQ, 64)  # every score ties
    out = run(SparseConfig(**kwargs), logits, [64], backend="triton")[0]
    end = 64 - LOCAL if name == "topk" else SINK + (64 - LOCAL - SINK) // 4 * 4  # block: whole blocks only
    kept = torch.isfinite(out[0, SINK:end]).nonzero().flatten().tolist()
    assert kept == list(range(5 if name == "topk" else 8))  # topk: 5 positions; block_topk: two blocks of 4


@pytest.mark.parametrize("k,bs,st", [(2, 4, 1), (3, 4, 3), (2, 5, 2), (4, 4, 4), (1, 6, 4), (6, 4, 2)])
def test_stride_cut_path_equals_torch_path(k: int, bs: int, st: int) -> None:
    """The Triton path's trim computed over ranked blocks == the torch path's trim over positions."""
    cfg = SparseConfig(attn_block_topk=k, attn_block_size=bs, attn_stride=st, attn_local=LOCAL)
    for seed in range(3):
        logits = make_logits(LENGTHS, WIDTH, seed=seed)
        fast, slow = run(cfg, logits, LENGTHS, 1, "triton"), run(cfg, logits, LENGTHS, 1, "torch")
        assert torch.equal(torch.isfinite(fast), torch.isfinite(slow)), (k, bs, st, seed)
        assert (torch.isinf(fast) & torch.isfinite(logits)).any()  # something was dropped
