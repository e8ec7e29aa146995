"""``LLM``: load a checkpoint, plan KV memory, and generate."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from litesys.attention.backend import Attention, select_ops
from litesys.attention.kv_cache import KVCache
from litesys.config import CompletionOutput, RequestOutput, SamplingParams
from litesys.engine.engine import Engine
from litesys.engine.memory import plan_kv_pages
from litesys.engine.sampler import derive_seed
from litesys.engine.sequence import Request, Seq
from litesys.models.config import ModelConfig
from litesys.models.layers import Dist
from litesys.models.loader import Checkpoint, RandomCheckpoint
from litesys.models.registry import resolve

Prompt = list[int] | str | list[dict]


def _resolve_path(model: str) -> Path:
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise FileNotFoundError(f"{p} has no config.json; point model at a Hugging Face checkpoint directory")
        return p
    if p.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise FileNotFoundError(f"model path {model!r} does not exist; give a checkpoint directory or a hub id "
                                "like Qwen/Qwen3-8B")
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as e:  # offline, unknown id, ...
        raise FileNotFoundError(f"could not fetch {model!r} from the hub ({type(e).__name__}); download it and pass "
                                "the local directory") from None


class LLM:
    """Generate with a Qwen2/Qwen3 checkpoint. See README for every argument."""

    def __init__(self, model: str, device: str = "cuda", dtype: torch.dtype = torch.bfloat16,
                 max_seq_len: int = 32768, model_class: str | None = None, gpu_memory_utilization: float = 0.9,
                 *, page_size: int = 16, max_num_seqs: int = 256, max_num_batched_tokens: int = 16384,
                 num_kv_pages: int | None = None, seed: int = 0, enable_thinking: bool | None = None,
                 sparse=None, attention_backend: str = "auto", cuda_graphs: bool = True,
                 check_every: int | None = None, tensor_parallel_size: int = 1, tokenizer: str | None = None,
                 load_format: str = "safetensors"):
        if max_seq_len < 2:
            raise ValueError(f"max_seq_len must be >= 2, got {max_seq_len}")
        if not (0.0 < gpu_memory_utilization <= 1.0):
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        self.path = _resolve_path(model)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA GPU is visible; pass device='cpu' or run on a GPU machine")
        self.dtype, self.max_seq_len, self.seed = dtype, max_seq_len, seed
        self.enable_thinking = enable_thinking
        self.cfg = ModelConfig.from_dir(self.path)
        self.model_name, model_cls = resolve(model_class, self.cfg.model_type)
        self.dist = self._init_dist(tensor_parallel_size)
        if self.dist.world > 1:
            model_cls = self._dist_variant(model_cls)

        check_every = check_every or (4 if self.device.type == "cuda" else 1)
        if sparse is not None and sparse.method == "quest":
            page_size = sparse.quest_page_size  # Quest summarises exactly one KV page per block
        self.model = model_cls(self.cfg, self.device, dtype, max_seq_len + check_every + 1, dist=self.dist)
        if load_format == "random":  # benchmarks: real architecture, random weights made on the device
            self.model.load(RandomCheckpoint(self.cfg.raw, self.device, seed=seed))
        elif load_format == "safetensors":
            self.model.load(Checkpoint(self.path))
        else:
            raise ValueError(f"load_format must be 'safetensors' or 'random', got {load_format!r}")

        n_q, n_kv = self.model.num_q_heads, self.model.num_kv_heads
        if num_kv_pages is None:
            extra = 0
            if sparse is not None and sparse.method == "quest":  # per-page key min/max summaries
                from litesys.attention.sparse.quest import QuestSelector
                extra = QuestSelector.bytes_per_page(self.cfg.num_layers, n_kv, self.cfg.head_dim, dtype)
            num_kv_pages = plan_kv_pages(self, page_size, max_num_batched_tokens, max_num_seqs,
                                         gpu_memory_utilization, extra_bytes_per_page=extra)
            if self.dist.world > 1:  # one pool size per replica, or the ranks' schedules diverge (docs/tp.md)
                from litesys.engine.distributed import agree_min
                num_kv_pages = agree_min(self.dist, num_kv_pages, self.device)
        self.kv = KVCache(self.cfg.num_layers, num_kv_pages, page_size, n_kv, self.cfg.head_dim, dtype, self.device)
        processors, selector = {}, None
        if sparse is not None:
            from litesys.attention.sparse.config import build
            from litesys.engine.distributed import sparse_heads
            processors, selector = build(sparse, self.cfg.num_layers, n_q, n_kv, page_size,
                                         heads=sparse_heads(self.model))  # TP: global heads, split groups
            if selector is not None:
                selector.bind(self.kv)  # allocate its page summaries now, before any graph capture
        self.attn = Attention(self.kv, n_q, n_kv, self.cfg.head_dim, self.cfg.head_dim ** -0.5,
                              ops=select_ops(self.device, attention_backend), processors=processors,
                              selector=selector)
        graphs = None
        if cuda_graphs and self.device.type == "cuda":
            from litesys.engine.cuda_graph import DecodeGraphs
            graphs = DecodeGraphs(max_num_seqs)
        self.engine = Engine(self.model, self.kv, self.attn, max_slots=max_num_seqs, max_seq_len=max_seq_len,
                             max_batched_tokens=max_num_batched_tokens, eos_ids=self.cfg.eos_token_ids,
                             check_every=check_every, graphs=graphs)
        if graphs is not None:
            graphs.capture(self.engine)
        self._tokenizer = None
        self._tokenizer_path = tokenizer or self.path
        self._n_requests = 0

    # ---- setup helpers --------------------------------------------------------------------------------
    def _init_dist(self, tp: int) -> Dist:
        if tp == 1:
            return Dist()
        from litesys.engine.distributed import init_tensor_parallel
        return init_tensor_parallel(tp, self.device)

    def _dist_variant(self, cls: type) -> type:
        from litesys.models.registry import dist_variant
        return dist_variant(self.model_name, cls)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer_path))
            except (OSError, ValueError) as e:
                raise FileNotFoundError(f"no tokenizer in {self._tokenizer_path} ({e}); put tokenizer.json and "
                                        "tokenizer_config.json next to config.json or pass tokenizer=") from None
        return self._tokenizer

    def encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], dict):
            kw = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
            text = self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True, **kw)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            bad = [t for t in prompt if not 0 <= t < self.cfg.vocab_size]
            if bad:
                raise ValueError(f"token id {bad[0]} is outside the vocabulary (size {self.cfg.vocab_size})")
            return list(prompt)
        raise ValueError("each prompt must be a list of token ids, a string, or a chat conversation "
                         "(a list of {'role': ..., 'content': ...} dicts)")

    # ---- generation -----------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], sampling_params: SamplingParams | Sequence[SamplingParams] | None
                 = None, progress: bool = False,
                 on_finish: Callable[[int, RequestOutput], None] | None = None) -> list[RequestOutput]:
        """Generate for every prompt. ``on_finish(i, output)`` is called as soon as request ``i`` is complete."""
        if not isinstance(prompts, (list, tuple)) or len(prompts) == 0:
            raise ValueError("prompts is empty; pass a non-empty list of prompts")
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError(f"got {len(params)} sampling params for {len(prompts)} prompts; pass one or one each")
        for p in params:
            p.validate()
        reqs = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            ids = self.encode(prompt)
            if p.seed is not None:
                seeds = [derive_seed(p.seed, j) for j in range(p.n)]
            else:
                seeds = [derive_seed(self.seed, self._n_requests + i, j) for j in range(p.n)]
            reqs.append(Request(index=i, prompt=ids, params=p, seeds=seeds))
        self._n_requests += len(prompts)
        results: list[RequestOutput | None] = [None] * len(reqs)
        bar = _Progress(len(reqs), progress)

        def seq_done(seq: Seq, out: CompletionOutput) -> None:
            r = seq.req
            out.text = self.decode(out.token_ids) if self._has_tokenizer() else ""
            r.outputs[seq.sample] = out
            r.pending -= 1
            bar.tokens += len(out.token_ids)
            if r.pending == 0:
                results[r.index] = RequestOutput(prompt_token_ids=r.prompt, samples=list(r.outputs))
                bar.done(1)
                if on_finish is not None and self.dist.rank == 0:
                    on_finish(r.index, results[r.index])

        try:
            self.engine.run(reqs, seq_done, on_step=bar.step)
        finally:
            bar.close()
        return results  # type: ignore[return-value]

    def _has_tokenizer(self) -> bool:
        if self._tokenizer is not None:
            return True
        p = Path(self._tokenizer_path)
        return (p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists() or not p.exists()

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class _Progress:
    """tqdm bar: finished requests, generated tokens/s, running batch size."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.tokens, self.t0, self.last = 0, time.time(), 0.0
        if enabled and os.environ.get("LITESYS_NO_PROGRESS") != "1":
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc="generate", unit="req", dynamic_ncols=True)

    def done(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def step(self, batch: int) -> None:
        now = time.time()
        if self.bar is not None and now - self.last > 0.5:
            self.last = now
            self.bar.set_postfix(tok_s=f"{self.tokens / max(now - self.t0, 1e-9):.0f}", batch=batch, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
