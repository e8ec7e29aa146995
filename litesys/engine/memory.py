"""How many KV pages fit: memory left after weights and a profiled activation peak."""
from __future__ import annotations

import torch

from litesys.attention.kv_cache import KVCache
from litesys.attention.meta import AttnMeta

CPU_KV_BYTES = 2 << 30  # CPU runs (tests, debugging) get a fixed pool unless num_kv_pages is given


def plan_kv_pages(llm, page_size: int, max_batched_tokens: int, max_seqs: int, utilization: float,
                  extra_bytes_per_page: int = 0) -> int:
    cfg, model = llm.cfg, llm.model
    per_page = KVCache.bytes_per_page(cfg.num_layers, page_size, model.num_kv_heads, cfg.head_dim, llm.dtype)
    per_page += extra_bytes_per_page
    # never more than every slot at full length needs (+ the scratch page)
    cap = max_seqs * ((llm.max_seq_len + page_size - 1) // page_size + 1) + 1
    if llm.device.type != "cuda":
        return int(min(cap, max(CPU_KV_BYTES // per_page, 2)))
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    free, total = torch.cuda.mem_get_info()
    base = torch.cuda.memory_allocated()
    others = total - free - torch.cuda.memory_reserved()  # other processes, CUDA context
    peak = _profile_peak(llm, page_size, max_batched_tokens, max_seqs) - base
    usable = total * utilization - others - base - peak
    pages = int(usable // per_page)
    if pages < 2:
        raise ValueError(f"no GPU memory left for the KV cache (weights {base / 2**30:.1f} GiB, activations "
                         f"{peak / 2**30:.1f} GiB); raise gpu_memory_utilization, lower max_num_batched_tokens, "
                         "or use tensor parallelism")
    return min(pages, cap)


@torch.inference_mode()
def _profile_peak(llm, page_size: int, tokens: int, max_seqs: int) -> int:
    """Peak allocation of the largest prefill step plus the sampler's logits for a full batch."""
    from litesys.attention.backend import Attention, select_ops

    cfg, model, dev = llm.cfg, llm.model, llm.device
    tokens = min(tokens, llm.max_seq_len)
    kv = KVCache(cfg.num_layers, 2, page_size, model.num_kv_heads, cfg.head_dim, llm.dtype, dev)
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
