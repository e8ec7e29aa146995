"""Quest's Triton kernels vs the PyTorch reference (on CPU through TRITON_INTERPRET=1, tiny shapes)."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton kernels need the triton package")

from test_sparse_quest import LAYERS, LENGTHS, PAGE, SCALE, as_lists, dense_over, make_scenario  # noqa: E402

from litesys.attention import ops_torch  # noqa: E402
from litesys.attention.kernels import quest_triton  # noqa: E402
from litesys.attention.sparse import quest_torch  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def n_pages(meta) -> int:
    return -(-meta.max_len // PAGE)


def test_scores_kernel_matches_reference() -> None:
    s = make_scenario(topk=2)
    sel, meta = s["sel"], s["meta"]
    q = s["outs"][1][0]
    args = (q, sel.kmin[1], sel.kmax[1], meta.page_table, meta.lengths, PAGE, n_pages(meta))
    got = quest_triton.quest_scores(*args, block_p=16)
    expected = quest_torch.quest_scores(*args)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    fin = torch.isfinite(expected)
    torch.testing.assert_close(got[fin], expected[fin], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("split", [16, None])
def test_decode_kernel_reads_only_selected_pages(split: int | None) -> None:
    s = make_scenario(topk=1, local=5, seed=1)
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
    s = make_scenario(topk=100, backend="triton", seed=2)
    kv, meta = s["kv"], s["meta"]
    for layer in range(LAYERS):
        q, out = s["outs"][layer]
        dense = ops_torch.paged_decode_fused(q, kv.k[layer], kv.v[layer], meta.page_table, meta.lengths, SCALE)
        torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)


def test_bf16_decode_close_to_reference() -> None:
    s = make_scenario(topk=2, dtype=torch.bfloat16, seed=4)
    kv, meta = s["kv"], s["meta"]
    q = s["outs"][1][0]
    sel = s["sel"].select(1, q, meta)
    got = quest_triton.quest_decode(q, kv.k[1], kv.v[1], meta.page_table, meta.lengths, sel, SCALE, block_n=16)
    expected = quest_torch.quest_decode(q, kv.k[1], kv.v[1], meta.page_table, meta.lengths, sel, SCALE)
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)
