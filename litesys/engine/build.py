"""Build an engine in one direction: checkpoint -> model -> sparse method -> KV plan -> KV pool -> attention ->
``Engine`` (which makes its own CUDA graphs). Nothing built here points back at what built it."""
from __future__ import annotations

from pathlib import Path

import torch

from litesys.attention import kv_fp8
from litesys.attention.backend import Attention, select_ops
from litesys.attention.kv_cache import KVCache
from litesys.attention.meta import AttnMeta
from litesys.attention.sparse import build as build_sparse
from litesys.distributed import Dist, agree_min, init_tensor_parallel, sparse_heads
from litesys.engine import deterministic, memory, validate
from litesys.engine.config import CHECK_EVERY_CPU, CHECK_EVERY_CUDA, EngineConfig
from litesys.engine.engine import Engine
from litesys.models.config import ModelConfig
from litesys.models.loader import Checkpoint, RandomCheckpoint
from litesys.models.registry import build_model, resolve


def build(path: Path, config: EngineConfig, sparse=None) -> Engine:
    """The engine for the checkpoint in ``path`` (``sparse``: a SparseConfig or None for dense attention); it holds
    the model (``engine.model.cfg``, ``.dtype``), the KV pool and the attention."""
    device = validate.resolve_device(config.device)
    dtype = validate.resolve_dtype(config.dtype, device)
    kv_dtype = kv_fp8.storage_dtype(config.kv_cache_dtype, dtype)
    cfg = ModelConfig.from_dir(path)
    name, _ = resolve(config.model_class, cfg.model_type)
    max_seq_len = config.max_seq_len or min(32768, validate.context_limit(cfg) or 32768)  # None: the model's
    validate.check_max_seq_len(cfg, max_seq_len, config.allow_long_max_seq_len)
    dist = init_tensor_parallel(config.tensor_parallel_size, device) if config.tensor_parallel_size > 1 else Dist()
    check_every = config.check_every or (CHECK_EVERY_CUDA if device.type == "cuda" else CHECK_EVERY_CPU)

    model = build_model(name, cfg, device, dtype, max_seq_len + check_every + 1, dist)
    model.load(RandomCheckpoint(model.checkpoint_shapes(), device, seed=config.seed)  # benchmarks: random weights
               if config.load_format == "random" else Checkpoint(path))
    n_q, n_kv, L, D = model.num_q_heads, model.num_kv_heads, cfg.num_layers, cfg.head_dim
    method = build_sparse(sparse, sparse_heads(model) if sparse is not None else None,  # TP: global heads
                          config.attention_backend)
    page_size = method.kv_page_size() or config.page_size or kv_fp8.page_size(kv_dtype)  # a selector: its blocks
    extra = method.extra_bytes_per_page(L, n_kv, D, dtype)  # e.g. per-page key summaries
    page_bytes = KVCache.bytes_per_page(L, page_size, n_kv, D, kv_dtype)
    num_pages = config.num_kv_pages
    if num_pages is None:
        gpu = None
        if device.type == "cuda":
            tokens = min(config.max_num_batched_tokens, max_seq_len)
            max_pages = -(-(max_seq_len + check_every) // page_size)  # the engine's page-table width
            gpu = memory.measure(lambda: _largest_step(model, cfg, device, dtype, kv_dtype, page_size, tokens,
                                                            config.max_num_seqs, max_pages))
        num_pages = memory.plan_kv_pages(page_bytes + extra, page_size, max_seq_len, config.max_num_seqs,
                                         config.gpu_memory_utilization, gpu)
        if dist.world > 1:  # one pool size per replica, or the ranks' schedules diverge (docs/tp.md)
            num_pages = agree_min(dist, num_pages, device)
    elif device.type == "cuda":  # an explicit pool: refuse now rather than run out of memory later
        memory.check_fits(num_pages * page_bytes, f"num_kv_pages={num_pages}")
    kv = memory.allocate(lambda: KVCache(L, num_pages, page_size, n_kv, D, dtype, device, kv_dtype=kv_dtype),
                         f"a KV pool of {num_pages} pages")
    if config.kv_scales is not None:  # fixed fp8 scales (else each layer's first prefill calibrates them)
        kv.set_scales(*kv_fp8.load_scales(config.kv_scales, L, cfg.num_kv_heads, getattr(model, "kv_heads", None)))

    method.bind(kv)  # its per-page state now, before any graph capture
    deterministic.apply(config, model, method)  # batch-invariant GEMMs and recompute path (docs/reproducibility.md)
    attn = Attention(kv, n_q, n_kv, D, D ** -0.5, ops=deterministic.attention_ops(device, config), method=method)
    return Engine(model, kv, attn, max_slots=config.max_num_seqs, max_seq_len=max_seq_len,
                    max_batched_tokens=config.max_num_batched_tokens, eos_ids=cfg.eos_token_ids,
                    check_every=check_every, cuda_graphs=config.cuda_graphs,
                    swap_space_bytes=int(config.swap_space_gb * 2**30), prefix_cache=config.enable_prefix_cache,
                    deterministic=config.deterministic)


@torch.inference_mode()
def _largest_step(model, cfg: ModelConfig, dev: torch.device, dtype: torch.dtype, kv_dtype: torch.dtype,
                  page_size: int, tokens: int, max_seqs: int, max_pages: int) -> None:
    """The activation peak of the largest step the engine runs (a mixed one): a full decode batch and the sampler's
    sort of its logits, then, those logits kept, a prefill chunk of ``tokens`` over paged K/V (every page the
    scratch page: only the shapes count)."""
    kv = KVCache(cfg.num_layers, 2, page_size, model.num_kv_heads, cfg.head_dim, dtype, dev,
                 kv_dtype=kv_dtype)  # fp8: the quantising write path's temporaries too
    attn = Attention(kv, model.num_q_heads, model.num_kv_heads, cfg.head_dim, 1.0, ops=select_ops(dev))
    zeros = torch.zeros(max(tokens, max_seqs), dtype=torch.int64, device=dev)  # token ids and slots (scratch page)
    table = torch.zeros(max_seqs, max_pages, dtype=torch.int32, device=dev)
    decode = AttnMeta(False, zeros[:max_seqs], page_size, model.num_q_heads, model.num_kv_heads, page_table=table,
                      lengths=torch.ones(max_seqs, dtype=torch.int32, device=dev), max_len=max_pages * page_size)
    logits = model.compute_logits(model.forward(zeros[:max_seqs], zeros[:max_seqs], decode, attn))
    logits.sort(dim=-1)
    chunk = AttnMeta(True, zeros[:tokens], page_size, model.num_q_heads, model.num_kv_heads,
                     cu_seqlens=torch.tensor([0, tokens], dtype=torch.int32, device=dev), max_seqlen=tokens,
                     page_table=table[:1], lengths=torch.tensor([tokens], dtype=torch.int32, device=dev))
    model.forward(zeros[:tokens], torch.arange(tokens, device=dev), chunk, attn)
