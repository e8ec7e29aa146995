"""Quest's Triton kernels vs the PyTorch reference (on CPU through TRITON_INTERPRET=1, tiny shapes)."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton kernels need the triton package")

from test_sparse_quest import LAYERS, LENGTHS, PAGE, SCALE, as_lists, dense_over, make_scenario  # noqa: E402

from litesys.kernels import quest as quest_triton  # noqa: E402
from litesys.kernels.ref import ops_torch  # noqa: E402
from litesys.kernels.ref import quest as quest_torch  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def n_pages(meta) -> int:
    return -(-meta.max_len // PAGE)


@pytest.mark.parametrize("block_p,per_prog", [(2, 4), (4, 32), (16, 16)])
def test_scores_kernel_matches_reference(block_p: int, per_prog: int) -> None:
    s = make_scenario(topk=2, device=DEVICE)
    sel, meta = s["sel"], s["meta"]
    q = s["outs"][1][0]
    args = (q, sel.kmin[1], sel.kmax[1], meta.page_table, meta.lengths, PAGE, n_pages(meta))
    got = quest_triton.quest_scores(*args, block_p=block_p, pages_per_prog=per_prog)
    expected = quest_torch.quest_scores(*args)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    fin = torch.isfinite(expected)
    torch.testing.assert_close(got[fin], expected[fin], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("split", [16, None])
def test_decode_kernel_reads_only_selected_pages(split: int | None) -> None:
    s = make_scenario(topk=1, local=5, seed=1, device=DEVICE)
    kv, meta, layer = s["kv"], s["meta"], 1
    q = s["outs"][layer][0]
    sel = s["sel"].select(layer, q, meta)
    chosen = as_lists(sel)
    expected = dense_over(s, layer, q, chosen)
    for b in range(len(LENGTHS)):  # NaN in every unselected (page, KV head) and in the pages past each length
        for h in range(2):
            for p in set(range(s["pt"].shape[1])) - set(chosen[b][h]):
                kv.k[layer, int(s["pt"][b, p]), :, h] = float("nan")
                kv.v[layer, int(s["pt"][b, p]), :, h] = float("nan")
    sel[0, 0] = -1  # a (sequence, head) with no pages at all -> zeros
    expected[0, :2] = 0
    out = quest_triton.quest_decode(q, kv.k[layer], kv.v[layer], meta.page_table, meta.lengths, sel, SCALE,
                                    block_n=16, split=split)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_selector_on_triton_path_full_budget_equals_dense() -> None:
    s = make_scenario(topk=100, backend="triton", seed=2, device=DEVICE)
    kv, meta = s["kv"], s["meta"]
    for layer in range(LAYERS):
        q, out = s["outs"][layer]
        dense = ops_torch.paged_decode_fused(q, kv.k[layer], kv.v[layer], meta.page_table, meta.lengths, SCALE)
        torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)


def test_bf16_decode_close_to_reference() -> None:
    s = make_scenario(topk=2, dtype=torch.bfloat16, seed=4, device=DEVICE)
    kv, meta = s["kv"], s["meta"]
    q = s["outs"][1][0]
    sel = s["sel"].select(1, q, meta)
    got = quest_triton.quest_decode(q, kv.k[1], kv.v[1], meta.page_table, meta.lengths, sel, SCALE, block_n=16)
    expected = quest_torch.quest_decode(q, kv.k[1], kv.v[1], meta.page_table, meta.lengths, sel, SCALE)
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


def _tie_scenario(local: int, seed: int) -> dict:
    """A scenario whose layer-1 summaries repeat across pages, so many page scores tie exactly."""
    s = make_scenario(topk=3, local=local, seed=seed, device=DEVICE)
    sel, pt = s["sel"], s["pt"]
    for b, n in enumerate(LENGTHS):
        pages = [int(pt[b, p]) for p in range(-(-n // PAGE))]
        for i, page in enumerate(pages[2:], start=2):  # pages 2, 4, 6 copy page 1; 3, 5, ... copy page 0
            sel.kmin[1, page] = sel.kmin[1, pages[i % 2]]
            sel.kmax[1, page] = sel.kmax[1, pages[i % 2]]
    return s


@pytest.mark.parametrize("fused", [False, True, "stream"])
@pytest.mark.parametrize("topk,sink,local", [(3, 4, 0), (1, 0, 0), (2, 4, 9), (100, 4, 5)])
def test_select_kernel_equals_torch_selection(fused: bool | str, topk: int, sink: int, local: int) -> None:
    """quest_select (scores -> selection in one program; "stream": rows scored in runs of 4 pages by 4 persistent
    programs, each row selected once its runs are counted) == select_pages on the same scores, ties included."""
    from litesys.kernels.ref.quest import select_pages

    s = _tie_scenario(local, seed=topk + sink)
    qs, meta = s["sel"], s["meta"]
    counters = torch.zeros(3, len(LENGTHS) * 2, dtype=torch.int32, device=DEVICE)
    runs = dict(counters=counters, programs=4, run_pages=4) if fused == "stream" else dict(fused=fused)
    # -q first: freed buffers then hold another query's scores, so a selection made before every run of its row
    # was scored (or from another call's leftovers) shows
    for q in (-s["outs"][1][0], s["outs"][1][0]):
        args = (q, qs.kmin[1], qs.kmax[1], meta.page_table, meta.lengths, PAGE, n_pages(meta))
        got, phys, scores = quest_triton.quest_select(*args, topk, sink, local, block_p=16, return_scores=True,
                                                      **runs)
        if fused == "stream":  # 11 pages: 3 runs per row, counted and zeroed again; every row flagged ready
            assert -(-n_pages(meta) // 4) == 3 and not counters[0].any() and (counters[1] == 1).all()
            counters[1].zero_()  # (the decode that would follow zeroes them)
            for bad in (dict(counters=counters, fused=False), dict(counters=counters, scores=scores),
                        dict(counters=counters[:, :5])):  # streaming only with its own scores, [3, B * Hkv]
                with pytest.raises(ValueError, match="counters"):
                    quest_triton.quest_select(*args, topk, sink, local, **bad)
        reference = quest_torch.quest_scores(*args)
        assert torch.equal(scores.isinf(), reference.isinf())
        fin = reference.isfinite()
        torch.testing.assert_close(scores[fin], reference[fin], rtol=1e-5, atol=1e-4)
        expected = select_pages(scores, meta.lengths, PAGE, topk, sink, local)  # the top-k of its own scores
        assert torch.equal(got, expected)
        lp = expected.clamp(min=0).long()
        want_phys = torch.where(expected >= 0,
                                meta.page_table.long().gather(1, lp.view(len(LENGTHS), -1)).view(lp.shape), 0)
        assert torch.equal(phys.long(), want_phys)
        if topk < 100:
            fin = scores.isfinite()  # ties really happen among the scored pages
            same = (scores.unsqueeze(-1) == scores.unsqueeze(-2)) & fin.unsqueeze(-1) & fin.unsqueeze(-2)
            assert same.sum() > fin.sum()


def test_summary_kernel_equals_torch_update() -> None:
    """The decode-step summary refresh (one launch) writes exactly what the torch path writes."""
    ref = make_scenario(topk=2, backend="torch", seed=6, device=DEVICE)
    # same data; the decode writes go through the kernel
    got = make_scenario(topk=2, backend="triton", seed=6, device=DEVICE)
    assert torch.equal(got["sel"].kmin, ref["sel"].kmin) and torch.equal(got["sel"].kmax, ref["sel"].kmax)
    # a padding row (slot -1) refreshes the scratch page 0 from its first entry, as the torch path
    kv, qs = got["kv"], got["sel"]
    quest_triton.quest_update_summaries(kv.k[1], torch.tensor([-1], device=DEVICE), qs.kmin[1], qs.kmax[1])
    assert torch.equal(qs.kmin[1, 0], kv.k[1, 0, 0]) and torch.equal(qs.kmax[1, 0], kv.k[1, 0, 0])


def test_streaming_decode_waits_per_row_and_zeroes_counters() -> None:
    """quest_decode with counters (each row starts once its selection flag is set) == the plain decode; the row's
    last split zeroes its flag and count, so the counters are zero again for the next step."""
    s = make_scenario(topk=8, local=5, seed=8, device=DEVICE)
    kv, meta, layer = s["kv"], s["meta"], 1
    q = s["outs"][layer][0]
    sel = s["sel"].select(layer, q, meta)
    assert sel.shape[-1] * PAGE > 2 * 16  # 11 slots of 4 tokens: 3 splits of 16
    counters = torch.zeros(3, len(LENGTHS) * 2, dtype=torch.int32, device=DEVICE)
    for qq in (-q, q):
        args = (qq, kv.k[layer], kv.v[layer], meta.page_table, meta.lengths, sel, SCALE)
        counters[1].fill_(1)  # what the streaming selection leaves: every row selected
        got = quest_triton.quest_decode(*args, block_n=16, split=16, counters=counters)
        torch.testing.assert_close(got, quest_torch.quest_decode(*args), rtol=1e-5, atol=1e-5)
        assert not counters.any()
    with pytest.raises(ValueError, match="counters"):
        quest_triton.quest_decode(*args, counters=counters[:, :3])


@pytest.mark.parametrize("fused", [False, True, None])
def test_selector_triton_decode_equals_reference(fused: bool | None) -> None:
    """The whole Triton decode (kernel summaries, selection, phys-page decode) == the torch reference (None: the
    default, streaming through the selector's counters, left zero)."""
    s = make_scenario(topk=2, local=5, backend="triton", seed=7, device=DEVICE)
    qs, kv, meta, layer = s["sel"], s["kv"], s["meta"], 1
    qs.fused = fused
    q = s["outs"][layer][0]
    sel = qs.select(layer, q, meta)
    expected = dense_over(s, layer, q, as_lists(sel))
    torch.testing.assert_close(qs.decode(layer, q, kv, meta, ops_torch, SCALE), expected,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s["outs"][layer][1], expected, rtol=1e-5, atol=1e-5)
    assert len(qs.counters) == 1  # the scenario's decodes (fused None) made them for its batch size; left zero
    assert not any(c.any() for c in qs.counters.values())
