"""Quest: page summaries, page selection vs a per-sequence reference, sparse decode vs dense, selected reads only."""
from __future__ import annotations

import math

import pytest
import torch

from litesys.attention.backend import Attention
from litesys.attention.kv_cache import KVCache
from litesys.attention.meta import AttnMeta
from litesys.attention.sparse import SparseConfig, build
from litesys.attention.sparse.common import AttnShape
from litesys.attention.sparse.quest import QuestSelector
from litesys.kernels.ref import ops_torch
from litesys.kernels.ref.quest import quest_decode

HQ, HKV, D, PAGE, LAYERS = 4, 2, 16, 4, 2
G = HQ // HKV
SCALE = D ** -0.5
LENGTHS = [1, 3, 9, 17, 26, 41]  # after the decode token; ragged, incl. a single page and a partial last page


def make_scenario(topk: int, lengths: list[int] = LENGTHS, sink: int = 4, local: int = 0, backend: str = "torch",
                  dtype: torch.dtype = torch.float32, seed: int = 0, device: str = "cpu") -> dict:
    """Prefill lengths-1 tokens per sequence then one decode step through ``Attention`` with a Quest selector.

    The pool starts full of large stale values (a previous owner's data) and pages are handed out interleaved,
    so a summary that read past the valid entries, or a page-table mix-up, changes the results.
    """
    g = torch.Generator().manual_seed(seed)
    n_pages = [math.ceil(n / PAGE) for n in lengths]
    kv = KVCache(LAYERS, 2 + sum(n_pages), PAGE, HKV, D, dtype, device)
    kv.k.copy_(torch.randn(kv.k.shape, generator=g) * 50)
    kv.v.copy_(torch.randn(kv.v.shape, generator=g) * 50)
    ids = (torch.randperm(kv.num_pages - 1, generator=g) + 1).tolist()
    pt = torch.zeros(len(lengths), max(n_pages) + 1, dtype=torch.int32)  # one spare column, as in the engine
    for b, n in enumerate(n_pages):
        pt[b, :n] = torch.tensor(ids[:n])
        ids = ids[n:]
    pt = pt.to(device)
    sel = QuestSelector(topk, PAGE, LAYERS, sink=sink, local=local, layer_skip=(), backend=backend)
    attn = Attention(kv, HQ, HKV, D, SCALE, ops_torch, method=sel)

    def slots(b: int, positions: range) -> list[int]:
        return [int(pt[b, p // PAGE]) * PAGE + p % PAGE for p in positions]

    prompt = [n - 1 for n in lengths]
    t = sum(prompt)
    pre = AttnMeta(is_prefill=True, slot_mapping=torch.tensor([s for b, n in enumerate(prompt) for s in
                                                               slots(b, range(n))], device=device), page_size=PAGE,
                   num_q_heads=HQ, num_kv_heads=HKV,
                   cu_seqlens=torch.tensor([0, *torch.tensor(prompt).cumsum(0).tolist()], dtype=torch.int32,
                                           device=device),
                   max_seqlen=max(prompt))
    dec = AttnMeta(is_prefill=False, slot_mapping=torch.tensor([slots(b, range(n - 1, n))[0] for b, n in
                                                                enumerate(lengths)], device=device), page_size=PAGE,
                   num_q_heads=HQ, num_kv_heads=HKV, page_table=pt,
                   lengths=torch.tensor(lengths, dtype=torch.int32, device=device), max_len=max(lengths))
    outs = {}
    for layer in range(LAYERS):
        if t:
            qkv = [torch.randn(t, h, D, generator=g).to(device, dtype) for h in (HQ, HKV, HKV)]
            attn(layer, *qkv, pre)
        q = torch.randn(len(lengths), HQ, D, generator=g).to(device, dtype)
        k_new = torch.randn(len(lengths), HKV, D, generator=g).to(device, dtype)
        v_new = torch.randn(len(lengths), HKV, D, generator=g).to(device, dtype)
        outs[layer] = (q, attn(layer, q, k_new, v_new, dec))
    return dict(kv=kv, sel=sel, attn=attn, meta=dec, pt=pt, outs=outs, lengths=lengths)


def valid_keys(kv: KVCache, layer: int, pt: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """[n, Hkv, D] keys of sequence b, read position by position."""
    return torch.stack([kv.k[layer, int(pt[b, p // PAGE]), p % PAGE] for p in range(n)])


def ref_selection(s: dict, layer: int, q: torch.Tensor, topk: int, sink: int, local: int) -> list[list[list[int]]]:
    """Per sequence and KV head: the selected logical pages, from the keys themselves (not the summaries)."""
    out = []
    for b, n in enumerate(s["lengths"]):
        keys = valid_keys(s["kv"], layer, s["pt"], b, n).float()
        n_pages = math.ceil(n / PAGE)
        forced = set(range(min(math.ceil(sink / PAGE), n_pages)))
        forced |= set(range(max(n - max(local, 1), 0) // PAGE, n_pages))
        rows = []
        for h in range(HKV):
            scores = {}
            for p in range(n_pages):
                page_keys = keys[p * PAGE:min((p + 1) * PAGE, n), h]
                lo, hi = page_keys.min(0).values, page_keys.max(0).values
                qh = q[b, h * G:(h + 1) * G].float()
                scores[p] = float(torch.maximum(qh * lo, qh * hi).sum())
            middle = sorted((p for p in range(n_pages) if p not in forced), key=lambda p: -scores[p])
            rows.append(sorted(forced | set(middle[:topk])))
        out.append(rows)
    return out


def as_lists(sel: torch.Tensor) -> list[list[list[int]]]:
    return [[[int(x) for x in row if x >= 0] for row in seq] for seq in sel]


def dense_over(s: dict, layer: int, q: torch.Tensor, chosen: list[list[list[int]]]) -> torch.Tensor:
    """Reference: dense logits with every position outside each KV head's chosen pages masked, then softmax·V."""
    kv, meta = s["kv"], s["meta"]
    logits = ops_torch.paged_decode_logits(q, kv.k[layer], meta.page_table, meta.lengths, SCALE, meta.max_len)
    keep = torch.zeros_like(logits, dtype=torch.bool)
    for b, rows in enumerate(chosen):
        for h, pages in enumerate(rows):
            for p in pages:
                keep[b, h * G:(h + 1) * G, p * PAGE:(p + 1) * PAGE] = True
    logits = logits.masked_fill(~keep, float("-inf"))
    return ops_torch.paged_softmax_v(logits, kv.v[layer], meta.page_table, meta.lengths)


@pytest.mark.parametrize("sink,local", [(4, 0), (0, 0), (4, 9)])
def test_selection_matches_reference(sink: int, local: int) -> None:
    topk = 2
    s = make_scenario(topk, sink=sink, local=local, seed=sink + local)
    s["sel"].sink, s["sel"].local = sink, local
    for layer in range(LAYERS):
        q = s["outs"][layer][0]
        got = as_lists(s["sel"].select(layer, q, s["meta"]))
        assert got == ref_selection(s, layer, q, topk, sink, local)
    assert any(len(rows[0]) < math.ceil(n / PAGE) for rows, n in zip(got, LENGTHS))  # really sparse somewhere


def test_summaries_cover_valid_entries_only() -> None:
    s = make_scenario(2)
    kv, sel = s["kv"], s["sel"]
    for b, n in enumerate(LENGTHS):
        keys = valid_keys(kv, 1, s["pt"], b, n)
        for p in range(math.ceil(n / PAGE)):
            page = int(s["pt"][b, p])
            chunk = keys[p * PAGE:(p + 1) * PAGE]
            assert torch.equal(sel.kmin[1, page], chunk.min(0).values)
            assert torch.equal(sel.kmax[1, page], chunk.max(0).values)


def test_reallocated_page_forgets_previous_owner() -> None:
    kv = KVCache(1, 3, PAGE, HKV, D, torch.float32, "cpu")
    sel = QuestSelector(1, PAGE, 1, layer_skip=())
    meta = AttnMeta(is_prefill=True, slot_mapping=torch.arange(PAGE, 2 * PAGE), page_size=PAGE)
    kv.write(0, torch.full((PAGE, HKV, D), 9.0), torch.zeros(PAGE, HKV, D), meta.slot_mapping)
    sel.on_write(0, kv, None, meta)
    assert float(sel.kmax[0, 1].max()) == 9.0
    # page 1 handed to a new sequence: its first write (one decode token at offset 0) resets the summary
    k_new = torch.randn(1, HKV, D)
    meta = AttnMeta(is_prefill=False, slot_mapping=torch.tensor([PAGE]), page_size=PAGE)
    kv.write(0, k_new, torch.zeros(1, HKV, D), meta.slot_mapping)
    sel.on_write(0, kv, k_new, meta)
    assert torch.equal(sel.kmin[0, 1], k_new[0]) and torch.equal(sel.kmax[0, 1], k_new[0])


def test_full_budget_equals_dense() -> None:
    s = make_scenario(topk=100)
    for layer in range(LAYERS):
        q, out = s["outs"][layer]
        kv, meta = s["kv"], s["meta"]
        dense = ops_torch.paged_decode_fused(q, kv.k[layer], kv.v[layer], meta.page_table, meta.lengths, SCALE)
        torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("local", [0, 6])
def test_partial_budget_reads_only_selected_pages(local: int) -> None:
    s = make_scenario(topk=1, local=local, seed=3)
    kv, meta, layer = s["kv"], s["meta"], 1
    q = s["outs"][layer][0]
    sel = s["sel"].select(layer, q, meta)
    chosen = as_lists(sel)
    expected = dense_over(s, layer, q, chosen)
    n_poisoned = 0
    for b, n in enumerate(LENGTHS):  # poison every (page, KV head) not selected
        for h in range(HKV):
            for p in set(range(math.ceil(n / PAGE))) - set(chosen[b][h]):
                kv.k[layer, int(s["pt"][b, p]), :, h] = float("nan")
                kv.v[layer, int(s["pt"][b, p]), :, h] = float("nan")
                n_poisoned += 1
    assert n_poisoned > 0
    out = s["sel"].decode(layer, q, kv, meta, ops_torch, SCALE)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(quest_decode(q, kv.k[layer], kv.v[layer], meta.page_table, meta.lengths, sel, SCALE),
                               expected, rtol=1e-5, atol=1e-5)


def test_empty_selection_row_gives_zeros() -> None:
    s = make_scenario(topk=2)
    kv, meta = s["kv"], s["meta"]
    q = s["outs"][1][0]
    sel = s["sel"].select(1, q, meta)
    sel[0] = -1
    out = quest_decode(q, kv.k[1], kv.v[1], meta.page_table, meta.lengths, sel, SCALE)
    assert torch.equal(out[0], torch.zeros_like(out[0])) and torch.isfinite(out).all()


def test_layer_skip_keeps_layer_dense_and_build_checks_page_size() -> None:
    cfg = SparseConfig(quest_topk_blocks=2, quest_block_size=PAGE)
    sel = build(cfg, AttnShape(HQ, HKV, LAYERS))
    assert isinstance(sel, QuestSelector) and not sel.active(0) and sel.active(1)
    assert sel.kv_page_size() == PAGE
    kv = KVCache(LAYERS, 4, PAGE, HKV, D, torch.float32, "cpu")
    meta = AttnMeta(is_prefill=True, slot_mapping=torch.arange(PAGE, PAGE + 3), page_size=PAGE)
    sel.on_write(0, kv, None, meta)  # skipped layer: no summary work
    assert sel.kmin is None
    q = torch.randn(1, HQ, D)  # a skipped layer decodes densely
    dec = AttnMeta(False, torch.tensor([PAGE + 2]), PAGE, HQ, HKV, page_table=torch.tensor([[1, 0]], dtype=torch.int32),
                   lengths=torch.tensor([3], dtype=torch.int32), max_len=3)
    torch.testing.assert_close(sel.decode(0, q, kv, dec, ops_torch, SCALE),
                               ops_torch.paged_decode_fused(q, kv.k[0], kv.v[0], dec.page_table, dec.lengths, SCALE))
    with pytest.raises(ValueError, match="must equal the KV page size"):
        sel.bind(KVCache(LAYERS, 4, 2 * PAGE, HKV, D, torch.float32, "cpu"))
