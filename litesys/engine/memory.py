"""How many KV pages fit: memory left after weights and a profiled activation peak.

The plan is checked against what is free right before the pool is allocated, so a pool that does not fit (another
process took memory, an earlier ``LLM`` is still alive) is a one-line error here, never an out-of-memory later.
"""
from __future__ import annotations

import gc
from collections.abc import Callable

import torch

from litesys.attention.kv_cache import KVCache
from litesys.attention.meta import AttnMeta

CPU_KV_BYTES = 2 << 30  # CPU runs (tests, debugging) get a fixed pool unless num_kv_pages is given


def plan_kv_pages(llm, page_size: int, max_batched_tokens: int, max_seqs: int, utilization: float,
                  extra_bytes_per_page: int = 0) -> int:
    cfg, model = llm.cfg, llm.model
    # pages as stored: fp8 pages (``llm.kv_dtype``) take half the bytes of bf16 ones, so twice as many fit
    per_page = KVCache.bytes_per_page(cfg.num_layers, page_size, model.num_kv_heads, cfg.head_dim,
                                      getattr(llm, "kv_dtype", llm.dtype))
    per_page += extra_bytes_per_page
    # never more than every slot at full length needs (+ the scratch page)
    cap = max_seqs * ((llm.max_seq_len + page_size - 1) // page_size + 1) + 1
    if llm.device.type != "cuda":
        return int(min(cap, max(CPU_KV_BYTES // per_page, 2)))
    release_cached()  # an earlier LLM only kept alive by a reference cycle must not count as "others"
    torch.cuda.reset_peak_memory_stats()
    free, total = torch.cuda.mem_get_info()
    base = torch.cuda.memory_allocated()
    others = total - free - torch.cuda.memory_reserved()  # other processes, CUDA context
    peak = _profile_peak(llm, page_size, max_batched_tokens, max_seqs) - base
    usable = total * utilization - others - base - peak
    pages = int(usable // per_page)
    if pages < 2:
        raise ValueError(f"no GPU memory left for the KV cache (this process holds {base / 2**30:.1f} GiB: weights "
                         f"and any other live LLM; activations {peak / 2**30:.1f} GiB; other processes "
                         f"{others / 2**30:.1f} GiB); raise gpu_memory_utilization, close() other LLMs, lower "
                         "max_num_batched_tokens, or use tensor parallelism")
    pages = min(pages, cap)
    check_fits(pages * per_page + peak, f"a KV pool of {pages} pages plus {peak / 2**30:.1f} GiB of activations")
    return pages


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


def check_fits(need: int, what: str) -> None:
    """One-line ValueError when ``need`` bytes are not free now (measured, not assumed)."""
    avail = free_bytes()
    if need > avail:
        raise ValueError(f"{what} needs {need / 2**30:.2f} GiB but only {avail / 2**30:.2f} GiB of GPU memory is "
                         "free now; lower gpu_memory_utilization or num_kv_pages, or free the GPU (close() other "
                         "LLMs, stop other processes)")


def allocate(make: Callable[[], object], what: str) -> object:
    """``make()`` with an out-of-memory turned into the same one-line error."""
    try:
        return make()
    except torch.OutOfMemoryError:
        release_cached()
        raise ValueError(f"{what} does not fit in the free GPU memory ({free_bytes() / 2**30:.2f} GiB); lower "
                         "gpu_memory_utilization or num_kv_pages, or free the GPU (close() other LLMs, stop other "
                         "processes)") from None


@torch.inference_mode()
def _profile_peak(llm, page_size: int, tokens: int, max_seqs: int) -> int:
    """Peak allocation of the largest prefill step plus the sampler's logits for a full batch."""
    from litesys.attention.backend import Attention, select_ops

    cfg, model, dev = llm.cfg, llm.model, llm.device
    tokens = min(tokens, llm.max_seq_len)
    kv = KVCache(cfg.num_layers, 2, page_size, model.num_kv_heads, cfg.head_dim, llm.dtype, dev,
                 kv_dtype=getattr(llm, "kv_dtype", None))  # fp8: the quantising write path's temporaries too
    attn = Attention(kv, model.num_q_heads, model.num_kv_heads, cfg.head_dim, 1.0, ops=select_ops(dev))
    meta = AttnMeta(True, torch.zeros(tokens, dtype=torch.int64, device=dev), page_size, model.num_q_heads,
                    model.num_kv_heads, cu_seqlens=torch.tensor([0, tokens], dtype=torch.int32, device=dev),
                    max_seqlen=tokens)
    ids = torch.zeros(tokens, dtype=torch.int64, device=dev)
    hidden = model.forward(ids, torch.arange(tokens, device=dev), meta, attn)
    logits = model.compute_logits(hidden[:1].expand(max_seqs, -1).contiguous())
    logits.sort(dim=-1)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del kv, attn, hidden, logits
    torch.cuda.empty_cache()
    return peak
