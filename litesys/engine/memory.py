"""How many KV pages fit: ``measure`` reads the GPU once, ``plan_kv_pages`` is a pure function of that and the
shapes. A pool that does not fit what is free now is a one-line error, never an out-of-memory later."""
from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass

import torch

from litesys.kernels.common import cdiv

CPU_KV_BYTES = 2 << 30  # CPU runs (tests, debugging) get a fixed pool unless num_kv_pages is given
GiB = 2**30


@dataclass(frozen=True)
class GpuMemory:  # bytes, measured once before the pool is planned
    total: int
    others: int  # other processes and the CUDA context
    held: int  # this process: weights and any other live LLM
    activations: int  # peak of the largest step (a full decode batch + a prefill chunk), above ``held``
    free_now: int  # what this process could allocate now


def plan_kv_pages(page_bytes: int, page_size: int, max_seq_len: int, max_seqs: int, utilization: float,
                  gpu: GpuMemory | None) -> int:
    """Pages of ``page_bytes`` (K+V of all layers as stored + a method's per-page bytes) in ``utilization`` of the
    GPU (``gpu=None``: CPU, CPU_KV_BYTES), at most what every slot at full length needs (+ the scratch page)."""
    cap = max_seqs * (cdiv(max_seq_len, page_size) + 1) + 1
    if gpu is None:
        return int(min(cap, max(CPU_KV_BYTES // page_bytes, 2)))
    pages = int((gpu.total * utilization - gpu.others - gpu.held - gpu.activations) // page_bytes)
    if pages < 2:
        raise ValueError(f"no GPU memory left for the KV cache (this process holds {gpu.held / GiB:.1f} GiB: weights "
                         f"and any other live LLM; activations {gpu.activations / GiB:.1f} GiB; other processes "
                         f"{gpu.others / GiB:.1f} GiB); raise gpu_memory_utilization, close() other LLMs, lower "
                         "max_num_batched_tokens, or use tensor parallelism")
    pages = min(pages, cap)
    check_fits(pages * page_bytes + gpu.activations, f"a KV pool of {pages} pages plus "
               f"{gpu.activations / GiB:.1f} GiB of activations", gpu.free_now)
    return pages


def measure(profile: Callable[[], None]) -> GpuMemory:
    """The GPU's memory around ``profile()`` (one run of the largest step): see ``GpuMemory``."""
    release_cached()  # an earlier LLM only kept alive by a reference cycle must not count as "others"
    torch.cuda.reset_peak_memory_stats()
    free, total = torch.cuda.mem_get_info()
    held = torch.cuda.memory_allocated()
    others = total - free - torch.cuda.memory_reserved()
    profile()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - held
    torch.cuda.empty_cache()
    return GpuMemory(total, others, held, peak, free_bytes())


def release_cached() -> None:
    """Collect garbage, then hand the allocator's cached blocks back to the driver."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def free_bytes() -> int:
    """Bytes this process can still allocate: free on the device plus the allocator's unused cached blocks."""
    free, _ = torch.cuda.mem_get_info()
    return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()


def check_fits(need: int, what: str, avail: int | None = None) -> None:
    """One-line ValueError when ``need`` bytes are not free (``avail``, else measured now)."""
    avail = free_bytes() if avail is None else avail
    if need > avail:
        raise ValueError(f"{what} needs {need / GiB:.2f} GiB but only {avail / GiB:.2f} GiB of GPU memory is "
                         "free now; lower gpu_memory_utilization or num_kv_pages, or free the GPU (close() other "
                         "LLMs, stop other processes)")


def allocate(make: Callable[[], object], what: str) -> object:
    """``make()`` with an out-of-memory turned into the same one-line error."""
    try:
        return make()
    except torch.OutOfMemoryError:
        release_cached()
        raise ValueError(f"{what} does not fit in the free GPU memory ({free_bytes() / GiB:.2f} GiB); lower "
                         "gpu_memory_utilization or num_kv_pages, or free the GPU (close() other LLMs, stop other "
                         "processes)") from None
