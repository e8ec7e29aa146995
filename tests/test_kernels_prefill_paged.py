"""Chunk-query prefill over paged K/V (chunked prefill, cached prefixes): the Triton kernel (TRITON_INTERPRET=1 on
CPU, tiny shapes) against its torch twin, the twin against plain causal SDPA over the whole sequence, fp8 pages,
and the bitwise promises: a chunk's rows are the whole prompt's rows (Triton varlen; deterministic CPU ops)."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton kernels need the triton package")

from litesys.attention import kv_fp8  # noqa: E402
from litesys.kernels import ops_triton  # noqa: E402
from litesys.kernels.common import LOG2E, dot_precision, to_transposed_pages  # noqa: E402
from litesys.kernels.prefill import prefill  # noqa: E402
from litesys.kernels.ref import ops_invariant as ref_invariant  # noqa: E402
from litesys.kernels.ref import ops_torch as ref  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
HQ, HKV, D = 4, 2, 16


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.double() - expected.double()).norm() / expected.double().norm()).item()


class Case:
    """Sequences of ``kv_lens`` positions in shuffled pages of a NaN-poisoned pool (a read of a page or slot a
    sequence does not own shows as NaN), whose last ``chunks[b]`` positions are the queries."""

    def __init__(self, kv_lens: list[int], chunks: list[int], page: int, dtype: torch.dtype, seed: int = 0,
                 fp8: bool = False):
        g = torch.Generator().manual_seed(seed)
        self.kv_lens, self.chunks, self.page, self.dtype = kv_lens, chunks, page, dtype
        n_pages = [-(-n // page) for n in kv_lens]
        perm = (torch.randperm(sum(n_pages) + 3, generator=g) + 1).tolist()  # page 0 and spares never used
        self.table = torch.zeros(len(kv_lens), max(n_pages) + 2, dtype=torch.int32)  # wider than needed
        self.k = [torch.randn(n, HKV, D, generator=g) for n in kv_lens]  # every sequence's K/V, fp32
        self.v = [torch.randn(n, HKV, D, generator=g) for n in kv_lens]
        self.q = torch.randn(sum(chunks), HQ, D, generator=g).to(dtype)
        pool = (len(perm) + 1, page, HKV, D)
        self.k_scale = self.v_scale = None
        if fp8:
            self.k_scale = kv_fp8.calibrate(torch.cat(self.k))
            self.v_scale = kv_fp8.calibrate(torch.cat(self.v))
            self.k = [kv_fp8.quantize(x, self.k_scale) for x in self.k]
            self.v = [kv_fp8.quantize(x, self.v_scale) for x in self.v]
            kc, vc = torch.zeros(pool, dtype=torch.uint8), torch.zeros(pool, dtype=torch.uint8)
            kc[:], vc[:] = 0x7F, 0x7F  # e4m3 NaN bytes
            self.k_cache, self.v_cache = kc.view(self.k[0].dtype), vc.view(self.k[0].dtype)
        else:
            self.k, self.v = [x.to(dtype) for x in self.k], [x.to(dtype) for x in self.v]
            self.k_cache = torch.full(pool, float("nan"), dtype=dtype)
            self.v_cache = torch.full(pool, float("nan"), dtype=dtype)
        at = 0
        for b, n in enumerate(kv_lens):
            pages = perm[at:at + n_pages[b]]
            at += n_pages[b]
            self.table[b, :len(pages)] = torch.tensor(pages, dtype=torch.int32)
            slots = torch.tensor(pages).repeat_interleave(page)[:n] * page + torch.arange(n) % page
            for cache, x in ((self.k_cache, self.k[b]), (self.v_cache, self.v[b])):
                cache.view(torch.uint8 if fp8 else dtype).view(-1, HKV, D)[slots] = \
                    x.view(torch.uint8) if fp8 else x
        self.cu = torch.tensor([0, *torch.tensor(chunks).cumsum(0).tolist()], dtype=torch.int32)
        self.lengths = torch.tensor(kv_lens, dtype=torch.int32)

    def args(self, device: str = "cpu"):
        return [x.to(device) for x in (self.q, self.k_cache, self.v_cache, self.cu, self.table, self.lengths)]

    def scales(self, device: str = "cpu"):
        return [None if s is None else s.to(device) for s in (self.k_scale, self.v_scale)]

    def whole_sdpa(self) -> torch.Tensor:
        """Plain causal SDPA over each whole sequence (fp32, dequantised), the chunk's rows kept."""
        outs = []
        for b, (n, m) in enumerate(zip(self.kv_lens, self.chunks)):
            k, v = self.k[b].float(), self.v[b].float()
            if self.k_scale is not None:
                k, v = k * self.k_scale[:, None], v * self.v_scale[:, None]
            q = torch.zeros(n, HQ, D)
            q[n - m:] = self.q[self.cu[b]:self.cu[b + 1]].float()
            ks, vs = (x.transpose(0, 1).repeat_interleave(HQ // HKV, dim=0)[None] for x in (k, v))
            o = torch.nn.functional.scaled_dot_product_attention(q.transpose(0, 1)[None], ks, vs, is_causal=True,
                                                                 scale=D ** -0.5)
            outs.append(o[0].transpose(0, 1)[n - m:])
        return torch.cat(outs)


# (kv_lens, chunks): chunk offsets 0, inside a page, on a page/block boundary, past several key blocks; 1-row chunks
SHAPES = [([37, 9, 70, 16], [7, 9, 33, 1]), ([5, 64, 100], [1, 17, 64])]


def run_triton(case: Case, block_m: int = 32, block_n: int = 16) -> torch.Tensor:
    q, kc, vc, cu, table, lens = case.args(DEVICE)
    ks, vs = case.scales(DEVICE)
    if ks is not None:
        q = q.float()
    out = torch.full(q.shape, float("nan"), dtype=case.q.dtype, device=DEVICE)  # poison: every row written
    prefill(q, kc, vc, cu, max(case.chunks), out, D ** -0.5 * LOG2E, block_m, block_n, dot_precision(q.dtype), 4, 1,
            ks, vs, table, lens)
    return out.cpu()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_twin_matches_whole_sequence_sdpa(dtype, shape):
    case = Case(*shape, page=4, dtype=dtype, seed=1)
    out = ref.paged_prefill_attention(*case.args(), max(case.chunks), D ** -0.5)
    assert out.dtype == dtype and not out.isnan().any()
    assert rel_err(out, case.whole_sdpa()) < (1e-6 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("page", [4, 16])
def test_triton_matches_twin(dtype, page):
    case = Case(*SHAPES[0], page=page, dtype=dtype, seed=2)
    out = run_triton(case)
    assert not out.isnan().any()
    assert rel_err(out, ref.paged_prefill_attention(*case.args(), 33, D ** -0.5)) < \
        (1e-5 if dtype == torch.float32 else 1e-2)


def test_fp8_pages_dequantised_in_registers():
    case = Case(*SHAPES[1], page=4, dtype=torch.float32, seed=3, fp8=True)
    twin = ref.paged_prefill_attention(*case.args(), 64, D ** -0.5, *case.scales())
    assert not twin.isnan().any() and rel_err(twin, case.whole_sdpa()) < 1e-6
    out = run_triton(case)
    assert not out.isnan().any() and rel_err(out, twin) < 1e-5
    api = ops_triton.paged_prefill_attention(*case.args(DEVICE), 64, D ** -0.5, *case.scales(DEVICE)).cpu()
    assert api.dtype == torch.float32 and rel_err(api, twin) < 1e-5
    # V pages as the pool stores fp8 ones (transposed, docs/kv_fp8.md): whole pages read, NaN bytes weigh 0
    args = case.args(DEVICE)
    args[2] = to_transposed_pages(args[2])
    vt = ops_triton.paged_prefill_attention(*args, 64, D ** -0.5, *case.scales(DEVICE)).cpu()
    assert not vt.isnan().any() and rel_err(vt, twin) < 1e-5


def test_public_api_default_tiles():
    case = Case([130, 75], [130, 40], page=16, dtype=torch.bfloat16, seed=4)
    out = ops_triton.paged_prefill_attention(*case.args(DEVICE), 130, D ** -0.5).cpu()
    assert out.dtype == torch.bfloat16 and rel_err(out, case.whole_sdpa()) < 1e-2


def whole_and_chunks(n: int, cuts: list[int], page: int, seed: int):
    """One sequence of ``n`` positions as a whole prompt (q/k/v packed) and as the chunks between ``cuts``."""
    case = Case([n], [n], page=page, dtype=torch.float32, seed=seed)
    chunks = list(zip([0, *cuts], [*cuts, n]))
    return case, chunks


def test_triton_chunks_are_the_whole_prefill_bitwise():
    """The same query rows, as one whole prompt through the varlen path and as odd-sized chunks through the paged
    path at the same tiles: equal bit for bit (key blocks aligned from 0, folded in the same order)."""
    case, chunks = whole_and_chunks(90, [7, 30, 33, 64], page=4, seed=5)
    q = case.q.to(DEVICE)
    whole = torch.empty_like(q)
    prefill(q, case.k[0].to(DEVICE), case.v[0].to(DEVICE), case.cu.to(DEVICE), 90, whole, D ** -0.5 * LOG2E, 32, 16,
            "ieee", 4, 1)
    _, kc, vc, _, table, _ = case.args(DEVICE)
    for a, b in chunks:
        part = torch.empty_like(q[a:b])
        cu = torch.tensor([0, b - a], dtype=torch.int32, device=DEVICE)
        prefill(q[a:b], kc, vc, cu, b - a, part, D ** -0.5 * LOG2E, 32, 16, "ieee", 4, 1,
                page_table=table, lengths=torch.tensor([b], dtype=torch.int32, device=DEVICE))
        assert torch.equal(part, whole[a:b]), (a, b)


@pytest.mark.parametrize("fp8", [False, True])
def test_deterministic_twin_chunks_are_the_whole_prefill_bitwise(fp8):
    """Deterministic mode's CPU ops: every chunk row equals prefill_attention's row of the whole prompt bitwise."""
    case, chunks = whole_and_chunks(70, [1, 16, 23, 48], page=4, seed=6)
    if fp8:
        case = Case([70], [70], page=4, dtype=torch.float32, seed=6, fp8=True)
    ks, vs = case.scales()
    whole = ref_invariant.prefill_attention(case.q, case.k[0], case.v[0], case.cu, 70, D ** -0.5, ks, vs)
    _, kc, vc, _, table, _ = case.args()
    for a, b in chunks:
        part = ref_invariant.paged_prefill_attention(case.q[a:b], kc, vc, torch.tensor([0, b - a], dtype=torch.int32),
                                                     table, torch.tensor([b], dtype=torch.int32), b - a, D ** -0.5,
                                                     ks, vs)
        assert torch.equal(part, whole[a:b]), (a, b)


def test_public_api_chunks_are_the_whole_prefill_bitwise_bf16():
    """Through ops_triton at the default (GPU) tiles in bf16: a whole prompt's varlen prefill and its chunks over the
    pages agree bit for bit (on a GPU this is the check deterministic mode's chunking relies on)."""
    case = Case([200], [200], page=16, dtype=torch.bfloat16, seed=7)
    q, kc, vc, cu, table, _ = case.args(DEVICE)
    whole = ops_triton.prefill_attention(q, case.k[0].to(DEVICE), case.v[0].to(DEVICE), cu, 200, D ** -0.5)
    for a, b in [(0, 7), (7, 100), (100, 130), (130, 200)]:
        part = ops_triton.paged_prefill_attention(q[a:b], kc, vc, torch.tensor([0, b - a], dtype=torch.int32,
                                                  device=DEVICE), table, torch.tensor([b], dtype=torch.int32,
                                                  device=DEVICE), b - a, D ** -0.5)
        assert torch.equal(part, whole[a:b]), (a, b)
