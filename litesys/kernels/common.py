"""Host-side helpers of every kernel: the one ``cdiv``, the one dispatch rule ``use_triton``, dot precision, PDL,
SM counts and split sizing. Importable without triton (the engine and the CPU paths use it)."""
from __future__ import annotations

import functools
import importlib.util
import math
import os

import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None  # without importing it (TRITON_INTERPRET is read then)
LOG2E = math.log2(math.e)
FP8_MAX = 448.0  # largest finite float8_e4m3fn
PDL_ENV = "LITESYS_PDL"  # "0": no programmatic dependent launch (e.g. to time the kernels apart under a profiler)


def cdiv(a, b):
    """Ceiling division of non-negative ints or int tensors (pages for ``a`` tokens, blocks for ``a`` rows...)."""
    return (a + b - 1) // b


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def use_triton(x: torch.Tensor | torch.device, backend: str = "auto") -> bool:
    """The one dispatch rule: Triton kernels for CUDA data (``auto``), always (``triton``: also CPU tensors under
    ``TRITON_INTERPRET=1``) or never (``torch``: the twins of ``kernels/ref/``)."""
    if backend == "triton":
        if not HAS_TRITON:
            raise ImportError("attention_backend='triton' needs triton installed; pip install triton or use 'auto'")
        return True
    device = x.device if isinstance(x, torch.Tensor) else torch.device(x)
    return backend == "auto" and HAS_TRITON and device.type == "cuda"


def fp8_compute_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """What fp8 K/V tiles are converted to for the dots: fp16 for a 16-bit model (e4m3 -> fp16 is one cvt per two
    values on Hopper and exact; -> bf16 goes through fp32 and measured 2x slower), fp32 for an fp32 model."""
    return torch.float32 if model_dtype == torch.float32 else torch.float16


def dot_precision(dtype: torch.dtype) -> str:
    """The ``DOT_PREC`` constexpr of the kernels (see ``blocks.mma``)."""
    if dtype == torch.float32:
        return "ieee"  # exact fp32 products: tf32 would cost ~3e-4 relative error
    if dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1":
        return "upcast"  # the CPU interpreter multiplies bf16 tiles wrongly (numpy has no bf16)
    return "tf32"  # ignored for 16-bit inputs


def group_pad(group: int) -> int:
    """Rows of the [G, D] query tile: tl.dot needs at least 16 rows."""
    return max(16, next_pow2(group))


@functools.cache
def _pdl_capable(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) >= (9, 0)


def use_pdl(device: torch.device) -> bool:
    """Programmatic dependent launch for a chain of kernels: the next kernel of the chain is launched while the
    previous one drains, and waits (``blocks.pdl_wait``) before reading anything. Hopper and later, never under the
    CPU interpreter; off with ``LITESYS_PDL=0`` (``PDL_ENV``)."""
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1" or os.environ.get(PDL_ENV) == "0":
        return False
    return _pdl_capable(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _num_sms(device_index: int) -> int:
    if not torch.cuda.is_available():
        return 1
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 1 elsewhere (the CPU interpreter)."""
    return _num_sms(device.index or 0) if device.type == "cuda" else 1


def choose_num_splits(batch: int, num_kv_heads: int, capacity: int, device: torch.device, programs_per_sm: int,
                      max_splits: int, block_n: int) -> int:
    """Splits per (sequence, KV head), from shapes only, so CUDA-graph replays see one grid and workspace.

    Enough programs to give every SM ``programs_per_sm`` of them; no more than ``max_splits`` (merge cost) or
    than the table's capacity has blocks. The split *length* adapts to each sequence at run time
    (``blocks.split_bounds``), so every split of a sequence has work and a wide page table costs nothing.
    """
    wanted = cdiv(programs_per_sm * num_sms(device), max(1, batch * num_kv_heads))
    return max(1, min(wanted, max_splits, cdiv(capacity, block_n)))


def transposed_pages(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Zeroed V pages ``[..., num_pages, page_size, Hkv, D]`` stored transposed, ``[..., num_pages, Hkv, D, page_size]``
    (a permuted view: indexing, copies and the torch reference see the usual shape; kernels read the strides).
    fp8 pages use it: P·V contracts along the slots, which are then contiguous (``blocks.paged_v_tile``)."""
    *lead, pages, page, hkv, d = shape
    raw = torch.zeros((*lead, pages, hkv, d, page), dtype=torch.uint8 if dtype.itemsize == 1 else dtype, device=device)
    n = len(lead)
    return raw.view(dtype).permute(*range(n), n, n + 3, n + 1, n + 2)


def to_transposed_pages(v: torch.Tensor) -> torch.Tensor:
    """A copy of V pages ``[..., P, page, Hkv, D]`` in the ``transposed_pages`` layout (tests, benchmarks)."""
    out = transposed_pages(tuple(v.shape), v.dtype, v.device)
    if v.element_size() == 1:  # no fp8 copy kernel on every device: copy the bytes
        out.view(torch.uint8).copy_(v.view(torch.uint8))
    else:
        out.copy_(v)
    return out


def v_layout(v_cache: torch.Tensor, block_n: int) -> tuple[tuple[int, int, int, int], bool, int]:
    """A layer's V pages ``[P, page, Hkv, D]`` (any strides) as the paged-V kernels take them: the four strides
    (page, slot, head, dim), ``V_T`` (slots contiguous: ``transposed_pages``) and ``VEC``, the slots one vector
    load may cover (a power of two <= 16 bytes dividing the page size, ``block_n`` and the strides)."""
    strides = tuple(v_cache.stride())[-4:]
    if strides[3] == 1:
        return strides, False, 1
    if strides[1] != 1 or v_cache.element_size() != 1:  # blocks.paged_v_tile's NaN guard is a no-op on e4m3 only
        raise ValueError(f"V pages need a contiguous head dim, or (fp8) contiguous slots; got strides {strides} "
                         f"of {v_cache.dtype}: pass v_cache.contiguous()")
    g = math.gcd(v_cache.shape[-3], block_n, strides[0], strides[2], strides[3], 16 // v_cache.element_size())
    return strides, True, g & -g
