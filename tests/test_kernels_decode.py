"""Triton decode kernels vs the PyTorch reference (on CPU through TRITON_INTERPRET=1, tiny shapes)."""
from __future__ import annotations

import math
import os
from dataclasses import replace

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton kernels need the triton package")

from litesys.kernels import decode, ops_triton  # noqa: E402
from litesys.kernels.launch import DecodeConfig  # noqa: E402
from litesys.kernels.ref import ops_torch as ref  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
# small blocks and up to 4 splits per sequence (the CPU counts as one SM): several splits and blocks spanning
# pages at tiny lengths
SMALL = DecodeConfig(programs_per_sm=64, max_splits=4, block_n=16, logits_chunk=32, logits_block_n=16)


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.double() - expected.double()).norm() / expected.double().norm()).item()


def make_case(lengths: list[int], hq: int, hkv: int, d: int, page: int, dtype: torch.dtype, extra_pages: int = 1,
              seed: int = 0) -> dict:
    """Random cache with shuffled page ids, plus a copy whose unused slots/pages are NaN (never to be read)."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    n_used = [(n + page - 1) // page for n in lengths]
    width = max(n_used) + extra_pages  # table capacity beyond the longest sequence
    num_pages = 2 + sum(n_used)  # page 0 scratch, last page poisoned
    poison_page = num_pages - 1
    ids = (torch.randperm(num_pages - 2, generator=g) + 1).tolist()
    pt = torch.full((b, width), poison_page, dtype=torch.int32)
    for i, n in enumerate(n_used):
        pt[i, :n] = torch.tensor(ids[:n], dtype=torch.int32)
        ids = ids[n:]
        if lengths[i] == 0:
            pt[i] = 0  # padded CUDA-graph row
    kc = torch.randn(num_pages, page, hkv, d, generator=g).to(dtype)
    vc = torch.randn(num_pages, page, hkv, d, generator=g).to(dtype)
    q = torch.randn(b, hq, d, generator=g).to(dtype)
    kp, vp = kc.clone(), vc.clone()
    kp[poison_page] = float("nan")
    vp[poison_page] = float("nan")
    for i, n in enumerate(lengths):  # slots past the length inside the last page
        if n % page:
            kp[pt[i, n // page], n % page:] = float("nan")
            vp[pt[i, n // page], n % page:] = float("nan")
    lens = torch.tensor(lengths, dtype=torch.int32)
    dev = {k: v.to(DEVICE) for k, v in {"q": q, "kc": kp, "vc": vp, "pt": pt, "lens": lens}.items()}
    return {"q": q, "kc": kc, "vc": vc, "pt": pt, "lens": lens, "dev": dev, "scale": d ** -0.5,
            "max_len": max(max(lengths), 1)}


def reference(c: dict) -> torch.Tensor:
    """fp32 reference output [B, Hq, D] from the clean cache; zero rows for length 0."""
    lens = c["lens"].clamp(min=1)  # the reference would give NaN rows at length 0
    out = ref.paged_decode_fused(c["q"].float(), c["kc"].float(), c["vc"].float(), c["pt"], lens, c["scale"],
                                 c["max_len"])
    return torch.where((c["lens"] == 0)[:, None, None], 0.0, out)


TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 3e-3}
PAGE = 16
BOUNDARY = [1, PAGE - 1, PAGE, PAGE + 1, 3 * PAGE + 7, 2 * PAGE]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("group", [1, 2, 4])
def test_fused_matches_reference(dtype: torch.dtype, group: int) -> None:
    c = make_case(BOUNDARY, hq=2 * group, hkv=2, d=32, page=PAGE, dtype=dtype, seed=group)
    d = c["dev"]
    out = ops_triton.paged_decode_fused(d["q"], d["kc"], d["vc"], d["pt"], d["lens"], c["scale"], c["max_len"])
    assert out.dtype == dtype and out.shape == c["q"].shape
    assert not out.isnan().any()
    assert rel_err(out.cpu(), reference(c)) < TOL[dtype]


@pytest.mark.parametrize("page", [4, 8, 32, 64])
def test_fused_many_splits_and_page_sizes(page: int) -> None:
    """Up to 4 splits, blocks of 16: blocks span pages (page 4/8) or share one (page 32/64)."""
    lengths = [1, page - 1, page, page + 1, 31, 32, 33, 97]
    c = make_case(lengths, hq=4, hkv=2, d=16, page=page, dtype=torch.float32, extra_pages=2, seed=page)
    d = c["dev"]
    assert decode._workspace(len(lengths), 4, 16, d["pt"], page, 2, torch.device(DEVICE), SMALL)[0] == 4
    out = decode.fused(d["q"], d["kc"], d["vc"], d["pt"], d["lens"], c["scale"], SMALL)
    assert rel_err(out.cpu(), reference(c)) < 1e-5


@pytest.mark.parametrize("fp8", [False, True])
def test_launch_order_leaves_every_output_bit_for_bit(fp8: bool) -> None:
    """``order`` (the rows longest first) only changes which programs start first: every row's output is the
    row-order launch's, bit for bit, with one split and with several, bf16 and fp8 pages."""
    from litesys.attention.kv_fp8 import quantize
    from litesys.kernels.step import longest_first

    c = make_case([5, 70, 0, 33, 70, 1, 48], hq=4, hkv=2, d=32, page=PAGE, dtype=torch.bfloat16, seed=9)
    d = c["dev"]
    kc, vc, ks, vs = d["kc"], d["vc"], None, None  # bf16: the poisoned slots are never read
    if fp8:  # the pool's quantisation (NaN -> 0)
        ks = vs = torch.full((2,), 0.05, device=DEVICE)
        kc, vc = quantize(kc, ks), quantize(vc, vs)
    order = longest_first(d["lens"], backend="triton")
    assert order.tolist() == [1, 4, 6, 3, 0, 5, 2]
    for cfg in (SMALL, replace(SMALL, max_splits=1)):
        plain = decode.fused(d["q"], kc, vc, d["pt"], d["lens"], c["scale"], cfg, ks, vs)
        ordered = decode.fused(d["q"], kc, vc, d["pt"], d["lens"], c["scale"], cfg, ks, vs, order=order)
        assert torch.equal(plain, ordered)
    assert rel_err(plain.float().cpu(), reference(c)) < (0.1 if fp8 else TOL[torch.bfloat16])


def test_padded_rows_give_zeros() -> None:
    """Rows of length 0 (page table of zeros) output zeros; length-1 rows on the scratch page are finite."""
    c = make_case([0, 5, 0, 1], hq=4, hkv=2, d=16, page=4, dtype=torch.bfloat16, extra_pages=10)
    d = c["dev"]
    # several splits under SMALL: the merge kernel's zero rows are covered, not only the single-split direct store
    assert decode._workspace(4, 4, 16, d["pt"], 4, 2, torch.device(DEVICE), SMALL)[0] > 1
    for cfg in (SMALL, decode.DECODE):
        out = decode.fused(d["q"], d["kc"], d["vc"], d["pt"], d["lens"], c["scale"], cfg).cpu()
        assert not out.isnan().any()
        assert (out[[0, 2]] == 0).all()
        assert rel_err(out[[1, 3]], reference(c)[[1, 3]]) < 1e-2
        logits = decode.logits(d["q"], d["kc"], d["pt"], d["lens"], c["scale"], c["max_len"], cfg)
        out2 = decode.softmax_v(logits, d["vc"], d["pt"], d["lens"], cfg).cpu()
        assert not out2.isnan().any() and (out2[[0, 2]] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cfg", [SMALL, None], ids=["small", "default"])
def test_logits_exact_mask_and_values(dtype: torch.dtype, cfg: DecodeConfig | None) -> None:
    c = make_case(BOUNDARY + [40], hq=8, hkv=2, d=32, page=PAGE, dtype=dtype, seed=3)
    d = c["dev"]
    max_len = c["max_len"] + 5  # wider than any length
    logits = decode.logits(d["q"], d["kc"], d["pt"], d["lens"], c["scale"], max_len, cfg or decode.DECODE).cpu()
    assert logits.dtype == torch.float32 and logits.shape == (len(BOUNDARY) + 1, 8, max_len)
    past = torch.arange(max_len)[None, None, :] >= c["lens"][:, None, None]
    assert (logits[past.expand_as(logits)] == float("-inf")).all()
    assert torch.isfinite(logits[~past.expand_as(logits)]).all()
    expected = ref.paged_decode_logits(c["q"].float(), c["kc"].float(), c["pt"], c["lens"], c["scale"], max_len)
    finite = ~past.expand_as(logits)
    assert rel_err(logits[finite], expected[finite]) < (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 4])
def test_two_stage_equals_fused(dtype: torch.dtype, group: int) -> None:
    c = make_case(BOUNDARY, hq=2 * group, hkv=2, d=32, page=PAGE, dtype=dtype, seed=7)
    d = c["dev"]
    fused = ops_triton.paged_decode_fused(d["q"], d["kc"], d["vc"], d["pt"], d["lens"], c["scale"]).cpu()
    logits = ops_triton.paged_decode_logits(d["q"], d["kc"], d["pt"], d["lens"], c["scale"], c["max_len"])
    two = ops_triton.paged_softmax_v(logits, d["vc"], d["pt"], d["lens"]).cpu()
    # same math up to the order of fp32 sums (and bf16 output rounding)
    assert rel_err(two, fused) < (1e-6 if dtype == torch.float32 else 5e-3)
    assert rel_err(two, reference(c)) < TOL[dtype]


def test_softmax_v_with_processor_masks() -> None:
    """Processors may set -inf inside the length, including a whole split (all but the last token here)."""
    lengths = [70, 33, 9]
    c = make_case(lengths, hq=4, hkv=2, d=16, page=8, dtype=torch.float32, seed=11)
    logits = ref.paged_decode_logits(c["q"], c["kc"], c["pt"], c["lens"], c["scale"], c["max_len"])
    logits[0, :, :40] = float("-inf")  # splits 0 and part of 1 of row 0 fully masked
    logits[1, :, :32] = float("-inf")  # row 1 keeps only its last token
    logits[2, 1, 3:5] = float("-inf")
    expected = ref.paged_softmax_v(logits, c["vc"], c["pt"], c["lens"])
    d = c["dev"]
    out = decode.softmax_v(logits.to(DEVICE), d["vc"], d["pt"], d["lens"], SMALL).cpu()
    assert rel_err(out, expected) < 1e-5
    # non-contiguous logits (a processor may return a view)
    wide = torch.full((3, 4, c["max_len"] + 3), float("-inf"))
    wide[:, :, :c["max_len"]] = logits
    out2 = decode.softmax_v(wide[:, :, :c["max_len"]].to(DEVICE), d["vc"], d["pt"], d["lens"], SMALL).cpu()
    assert rel_err(out2, expected) < 1e-5


def test_non_contiguous_query_and_long_ragged_batch() -> None:
    """q as a view of a fused qkv projection; lengths crossing many splits with the default config."""
    lengths = [300, 1, 129, 64, 65, 0]
    c = make_case(lengths, hq=8, hkv=2, d=16, page=16, dtype=torch.bfloat16, seed=5)
    d = c["dev"]
    qkv = torch.randn(len(lengths), 12 * 16, dtype=torch.bfloat16)
    qkv[:, :8 * 16] = c["q"].reshape(len(lengths), -1)
    q_view = qkv.to(DEVICE)[:, :8 * 16].view(len(lengths), 8, 16)
    assert not q_view.is_contiguous()
    out = ops_triton.paged_decode_fused(q_view, d["kc"], d["vc"], d["pt"], d["lens"], c["scale"]).cpu()
    assert rel_err(out, reference(c)) < 1e-2


def test_grid_depends_on_shapes_only() -> None:
    """The number of splits (hence grid and workspace) follows shapes, not the lengths (CUDA graphs)."""
    short = make_case([3, 2], hq=4, hkv=2, d=16, page=16, dtype=torch.float32, extra_pages=19)
    long = make_case([300, 200], hq=4, hkv=2, d=16, page=16, dtype=torch.float32, extra_pages=1)
    assert short["pt"].shape == long["pt"].shape
    for cfg in (SMALL, decode.DECODE):
        ws = [decode._workspace(2, 4, 16, c["pt"], 16, 2, torch.device(DEVICE), cfg) for c in (short, long)]
        assert ws[0][0] == ws[1][0]
        assert [None if w[1] is None else w[1].shape for w in ws] == [None if ws[0][1] is None else ws[0][1].shape] * 2
    assert decode._workspace(2, 4, 16, short["pt"], 16, 2, torch.device(DEVICE), SMALL)[0] > 1
    for c in (short, long):
        d = c["dev"]
        out = ops_triton.paged_decode_fused(d["q"], d["kc"], d["vc"], d["pt"], d["lens"], c["scale"]).cpu()
        assert rel_err(out, reference(c)) < 1e-5


def test_bf16_split_counts_of_the_benchmark_rows() -> None:
    """DECODE's 16-bit (splits, block_n) on an H200 (132 SMs), by hand: the fastest the (block_n, splits) sweep
    measured (results/h200_session5.json, ``bn_sweep``) at the engine rows' (sequence, KV head) pairs."""
    from litesys.kernels.decode import saturating_plan
    from litesys.kernels.launch import DECODE

    def plan(pairs: int, capacity: int = 8192) -> tuple[int, int]:
        return saturating_plan(pairs, 132, capacity, DECODE)

    assert math.ceil(DECODE.saturate_per_sm * 132) == 330  # programs that saturate the bandwidth
    assert plan(2048) == (1, 64)  # 256 seqs x 8 KV heads: 163 us (2 splits: 176)
    assert plan(1024) == (1, 64)  # 128 x 8: 191 us (2 splits: 210; 32-row tiles, 2 waves of them: 241)
    assert plan(768) == (1, 32)  # 96 x 8: 768 > 528 wide slots, <= 924 narrow ones: 142 us (64 rows: 161-162)
    assert plan(512) == (1, 64)  # 64 x 8 and Qwen3-30B-A3B's 128 x 4: 68 us at 128 x 1000 (2 splits: 80)
    assert plan(384) == (1, 64)  # 48 x 8 x 2000: 104 us (2 splits: 126)
    assert plan(256) == (2, 64)  # 32 x 8: 138 us at 4200 (5 splits: 139, 3: 180; one split: 173)
    assert plan(8) == (42, 64) and plan(8, capacity=640) == (10, 64)  # one sequence: capped by its table's blocks
    assert saturating_plan(512, 132, 8192, replace(DECODE, narrow_block_n=0)) == (1, 64)
