"""The sampler's row-wise top-k (``kernels/topk.py``, CPU: TRITON_INTERPRET=1) and its torch twin against
``torch.topk`` (values) and a Python sort by (value desc, index asc) (indices): hand-made ties inside and across
chunks, -inf rows, -0.0 vs +0.0, vocabularies that no chunk divides, k not a power of two, bf16 / fp16 / fp32,
B = 1 and B = 300. On the GPU (``pytest -m gpu``): the real shape (151,936 bf16 logits, up to 300 rows), graph
capture included."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton kernels need the triton package")

from litesys.kernels.ref.topk import topk_torch  # noqa: E402
from litesys.kernels.topk import topk  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def by_contract(x: torch.Tensor, k: int) -> list[list[int]]:
    """Each row's k indices by (value desc, index asc), sorted in Python (-0.0 == +0.0 as floats compare)."""
    return [sorted(range(len(row)), key=lambda i: (-row[i], i))[:k] for row in x.float().tolist()]


def check(x: torch.Tensor, k: int, chunk: int = 8192, group: int = 16, sup: int = 1) -> None:
    want_idx = by_contract(x, k)
    want_vals = x.float().topk(k, dim=-1).values
    for vals, idx in (topk(x, k, backend="triton", config=(chunk, group, sup, 4)), topk_torch(x, k)):
        assert vals.dtype == x.dtype and idx.dtype == torch.int64 and vals.shape == idx.shape == (x.shape[0], k)
        assert idx.tolist() == want_idx
        assert torch.equal(vals.float(), want_vals)
        assert torch.equal(vals, x.gather(1, idx))  # the logits themselves, bit for bit


def ties(B: int, V: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Random rows whose largest values repeat: every 7th logit equals the row's best, and a few exact copies of
    lower values, so ties fall inside chunks and across them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, generator=g).to(dtype)
    x[:, ::7] = x.max(dim=1, keepdim=True).values
    x[:, 3::11] = x[:, 1:2]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_across_chunks_by_index(dtype):
    # 5 chunks, the last short; k 40 (bucket 64): the tied best logits (every 7th) span the first three chunks
    check(ties(1, 600, dtype).to(DEVICE), 40, chunk=128)
    check(ties(1, 3000, dtype).to(DEVICE), 20, chunk=1024, group=4, sup=8)  # two levels


@pytest.mark.parametrize("B,V,k,chunk,group,sup", [(1, 37, 5, 4096, 16, 1), (2, 8, 8, 4096, 16, 4),
                                                    (2, 600, 1, 128, 16, 1), (1, 700, 64, 128, 16, 1),
                                                    (1, 900, 16, 256, 1, 1), (1, 5000, 64, 4096, 16, 1),
                                                    (1, 3000, 8, 1024, 4, 8), (2, 1100, 20, 1024, 4, 4),
                                                    (1, 700, 64, 1024, 4, 8)])
def test_shapes(B, V, k, chunk, group, sup):
    """V below one chunk, V == k, k = 1, k > the chunk's groups (group shrinks), group 1, V past one chunk, two
    levels (super-groups of 8 and 4 groups; and super-groups that must shrink to leave k of them)."""
    g = torch.Generator().manual_seed(V)
    x = (torch.randn(B, V, generator=g) * 3).bfloat16()
    x[:, 3::5] = x[:, :1]
    check(x.to(DEVICE), k, chunk=chunk, group=group, sup=sup)


def test_infinite_and_signed_zero_rows():
    V = 300
    x = torch.full((4, V), float("-inf"))
    x[0, [250, 7, 130]] = torch.tensor([1.0, 2.0, 1.0])  # 3 finite logits, k = 8: then -inf by index
    x[1] = torch.randn(V)
    x[1, [5, 299]] = float("inf")
    x[2] = 0.0
    x[2, ::2] = -0.0  # -0.0 and +0.0 are equal: by index
    x[3, 200:] = 0.5  # the best values all in the last chunk
    check(x.to(DEVICE), 8, chunk=128)
    check(x.to(DEVICE).float(), 8, chunk=128)
    check(x.to(DEVICE), 8, chunk=128, group=4, sup=4)
    vals, idx = topk(x[2:3].to(DEVICE), 4, backend="triton")
    assert idx.tolist() == [[0, 1, 2, 3]] and torch.equal(vals.cpu().view(torch.int16), x[2:3, :4].view(torch.int16))


def test_strided_rows_and_batch_independence():
    """A row's result is bitwise the same alone, in a batch, and read through a strided view."""
    x = ties(3, 700, torch.bfloat16, seed=1).to(DEVICE)
    wide = torch.zeros(3, 768, dtype=x.dtype, device=DEVICE)
    wide[:, :700] = x
    vals, idx = topk(wide[:, :700], 32, backend="triton", config=(256, 4, 2, 4))
    v1, i1 = topk(x[2:3], 32, backend="triton", config=(256, 4, 2, 4))
    assert torch.equal(vals[2:3], v1) and torch.equal(idx[2:3], i1)
    assert idx.tolist() == by_contract(x, 32)


def test_twin_at_300_rows():
    x = ties(300, 5000, torch.bfloat16, seed=2)
    vals, idx = topk_torch(x, 64)
    assert idx.tolist() == by_contract(x, 64)
    assert torch.equal(vals.float(), x.float().topk(64).values)
    g = torch.Generator().manual_seed(3)
    u = torch.randn(300, 5000, generator=g)  # fp32 random rows: no ties, so torch.topk's indices are the answer
    assert torch.equal(topk_torch(u, 20)[1], u.topk(20).indices)


def test_bad_arguments():
    x = torch.randn(2, 10)
    with pytest.raises(ValueError, match=r"k must be in \[1, 10\]"):
        topk_torch(x, 11)
    with pytest.raises(TypeError, match="bfloat16, float16 and float32"):
        topk_torch(x.double(), 3)


@pytest.mark.gpu
@pytest.mark.parametrize("B", [1, 64, 300])
def test_gpu_vocab_shape(B):
    V = 151_936
    for dtype in (torch.bfloat16, torch.float32):
        x = ties(B, V, dtype, seed=B).cuda()
        for k in (20, 64):
            vals, idx = topk(x, k)
            tv, ti = topk_torch(x, k)
            assert torch.equal(vals, tv) and torch.equal(idx, ti)
            assert torch.equal(vals, x.topk(k).values)
            assert (idx[:, 1:] > idx[:, :-1])[vals[:, 1:] == vals[:, :-1]].all()  # equal values: by index


@pytest.mark.gpu
def test_gpu_graph_capture():
    # untied rows: with ties() every 7th logit is the best, so the top-20 indices would not depend on the seed
    x = torch.randn(64, 151_936, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16).cuda()
    want = topk(x, 20)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = topk(x, 20)
    x.copy_(torch.randn(64, 151_936, generator=torch.Generator().manual_seed(9)).to(torch.bfloat16))
    graph.replay()
    assert not torch.equal(got[1], want[1])
    assert torch.equal(got[0], topk_torch(x, 20)[0]) and torch.equal(got[1], topk_torch(x, 20)[1])


def test_benchmark_smoke(tmp_path):
    """benchmarks/sampler_topk.py --smoke: every timing of every row and a sweep entry land in the JSON."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sampler_topk.py"
    subprocess.run([sys.executable, str(script), "--smoke", "--sweep", "--out", str(tmp_path)], check=True,
                   capture_output=True, timeout=120)
    res = json.loads((tmp_path / "sampler_topk.json").read_text())
    (row,) = res["rows"].values()
    assert {"torch_chunked", "kernel_k20", "kernel_k64", "sample_default", "sample_deterministic",
            "sample_deterministic_with_top_k_0", "sample_previous_deterministic"} <= set(row)
    assert all(v > 0 for v in row.values() if v is not None) and res["sweep"] and all(r["exact"] for r in res["sweep"])



def test_benchmark_bad_sweep_seconds_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "sampler_topk.py"
    r = subprocess.run([sys.executable, str(script), "--smoke", "--sweep-seconds", "0", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["sampler_topk.py: --sweep-seconds must be > 0 "
                                                                    "(got 0.0)"]
    assert not list(tmp_path.iterdir())  # nothing written

@pytest.mark.gpu
def test_gpu_deterministic_draws_do_not_depend_on_mates():
    """sample() on the GPU in deterministic mode's flags (151,936 random bf16 logits): a top_k 20 row's 20
    draws are the same alone, among 255 mates with top_k 20 (the kernel's 64 candidates only) and among mates with
    top_k 0 / 65 (the full sort, and the first 64 of it for the row)."""
    from litesys.engine.sampler import SamplingTensors, sample, seed_hash
    from litesys.kernels.topk import TOPK_MAX

    logits = (torch.randn(256, 151_936, generator=torch.Generator().manual_seed(4)) * 3).bfloat16().cuda()

    def draws(B: int, mate_k: int) -> torch.Tensor:
        top_k = torch.full((B,), mate_k, device="cuda")
        top_k[0] = 20
        p = SamplingTensors(torch.full((B,), 0.8, device="cuda"), top_k, torch.full((B,), 0.95, device="cuda"),
                            torch.zeros(B, device="cuda"), seed_hash(torch.arange(B, device="cuda") + 3))
        full = not 1 <= mate_k <= TOPK_MAX
        return torch.stack([sample(logits[:B], p, torch.full((B,), s, device="cuda"), False, full, TOPK_MAX)[0]
                            for s in range(20)])

    alone = draws(1, 20)
    assert len(set(alone.tolist())) > 1
    for mate_k in (20, 0, 65):
        assert torch.equal(draws(256, mate_k), alone), mate_k
