"""kernels/kv_write.py for bf16/fp16/fp32 pages (Triton, interpreted on CPU) against KVCache.write's torch path
(``index_copy_`` of ``x.to(cache.dtype)``): the same bits, page layout of any strides, negative slots skipped."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported: kernels run on the CPU interpreter
pytest.importorskip("triton")

from litesys.attention.kv_cache import KVCache  # noqa: E402
from litesys.kernels import kv_write  # noqa: E402
from litesys.kernels.common import to_transposed_pages  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
T, HKV, D, PAGES, PAGE = 6, 2, 16, 5, 4


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[x.element_size()])


def new_tokens(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(T, (4 + 2 * HKV) * D, generator=g).to(dtype)  # k/v as views of a fused qkv, as the model
    k = qkv[:, 4 * D:(4 + HKV) * D].view(T, HKV, D) * 3
    return k, qkv[:, (4 + HKV) * D:].view(T, HKV, D)


CASTS = [(torch.bfloat16, torch.bfloat16), (torch.float32, torch.float32), (torch.float16, torch.float16)]
if DEVICE == "cuda":  # a cast on the way (never in the engine: pages hold the model dtype); the CPU interpreter's
    CASTS.append((torch.float32, torch.bfloat16))  # fp32 -> bf16 truncates where the GPU rounds to nearest even


@pytest.mark.parametrize("src,cache", CASTS)
def test_kernel_stores_the_torch_bits(src, cache):
    k, v = new_tokens(src)
    slots = torch.tensor([4, 5, 19, 0, 0, 9])  # two padding rows on the scratch page's slot 0
    kv = KVCache(2, PAGES, PAGE, HKV, D, cache, "cpu")
    kv.write(1, k, v, slots)  # CPU tensors: the torch path, the reference
    kc = torch.full((PAGES, PAGE, HKV, D), float("nan"), dtype=cache, device=DEVICE)
    vc = to_transposed_pages(kc)  # the kernel honours strides (fp8 V pages are transposed; bf16 are not)
    kv_write.write(k.to(DEVICE), v.to(DEVICE), kc, vc, slots.to(DEVICE))
    used = slots.unique()
    real = used[used != 0]  # slot 0: two padding rows race for the scratch page (on the GPU)
    for got, want, x in ((kc, kv.k[1], k), (vc, kv.v[1], v)):
        got = got.cpu().reshape(-1, HKV, D)
        assert torch.equal(bits(got[real]), bits(want.reshape(-1, HKV, D)[real]))
        a, b = (bits(x[i].to(cache)) for i in (3, 4))  # each element is one of theirs (programs race per head)
        assert ((bits(got[0]) == a) | (bits(got[0]) == b)).all()
        others = torch.ones(PAGES * PAGE, dtype=torch.bool)
        others[used] = False
        assert got[others].isnan().all()  # nothing else written


def test_negative_slots_are_skipped_and_kvcache_uses_the_kernel():
    k, v = new_tokens(torch.bfloat16, seed=1)
    slots = torch.tensor([7, -1, 8, -1, 12, 13], device=DEVICE)
    kv = KVCache(1, PAGES, PAGE, HKV, D, torch.bfloat16, DEVICE)
    if DEVICE == "cpu":  # under the interpreter KVCache takes the torch path: call the kernel as it would on CUDA
        kv_write.write(k, v, kv.k[0], kv.v[0], slots)
    else:
        kv.write(0, k.to(DEVICE), v.to(DEVICE), slots)
    keep = slots.cpu() >= 0
    assert torch.equal(kv.k[0].cpu().reshape(-1, HKV, D)[slots.cpu()[keep]], k[keep])
    assert torch.equal(kv.v[0].cpu().reshape(-1, HKV, D)[slots.cpu()[keep]], v[keep])
    written = torch.zeros(PAGES * PAGE, dtype=torch.bool)
    written[slots.cpu()[keep]] = True
    assert (kv.k[0].cpu().reshape(-1, HKV, D)[~written] == 0).all()  # the pool starts zeroed; -1 wrote nowhere
