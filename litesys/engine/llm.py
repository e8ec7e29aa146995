"""``LLM``: load a checkpoint, plan KV memory, and generate.

An ``LLM`` survives any exception inside ``generate`` (the engine resets its slots, pages and queues), and
``close()`` / ``with LLM(...) as llm`` / ``del llm`` give its GPU memory back at once: nothing it owns points
back at it, so reference counting alone frees it (no ``gc.collect()`` needed).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from litesys.attention import kv_fp8
from litesys.attention.backend import Attention, select_ops
from litesys.attention.kv_cache import KVCache
from litesys.config import CompletionOutput, RequestOutput, SamplingParams
from litesys.engine import memory, validate
from litesys.engine.engine import Engine
from litesys.engine.memory import plan_kv_pages
from litesys.engine.progress import ProgressBar, ProgressStats
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

    def __init__(self, model: str, device: str = "cuda", dtype: torch.dtype | str = "auto",
                 max_seq_len: int | None = None, model_class: str | None = None, gpu_memory_utilization: float = 0.9,
                 *, page_size: int = 16, max_num_seqs: int = 256, max_num_batched_tokens: int = 16384,
                 num_kv_pages: int | None = None, seed: int = 0, enable_thinking: bool | None = None,
                 sparse=None, attention_backend: str = "auto", cuda_graphs: bool = True,
                 check_every: int | None = None, tensor_parallel_size: int = 1, tokenizer: str | None = None,
                 load_format: str = "safetensors", allow_long_max_seq_len: bool = False,
                 kv_cache_dtype: str = "auto", kv_scales=None, swap_space_gb: float = 4.0):
        self._closed = False
        if not swap_space_gb >= 0:
            raise ValueError(f"swap_space_gb must be >= 0 (host memory for preempted sequences), got {swap_space_gb}")
        validate.check_llm_args(
            max_seq_len=32768 if max_seq_len is None else max_seq_len, gpu_memory_utilization=gpu_memory_utilization,
            page_size=page_size, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
            num_kv_pages=num_kv_pages, seed=seed, enable_thinking=enable_thinking, attention_backend=attention_backend,
            cuda_graphs=cuda_graphs, check_every=check_every, tensor_parallel_size=tensor_parallel_size,
            load_format=load_format)
        self.device = validate.resolve_device(device)
        dtype = validate.resolve_dtype(dtype, self.device)
        self.kv_dtype = kv_fp8.storage_dtype(kv_cache_dtype, dtype)  # ValueError on an unknown kv_cache_dtype
        if kv_scales is not None and not kv_fp8.is_fp8(self.kv_dtype):
            raise ValueError("kv_scales needs kv_cache_dtype='fp8_e4m3'; drop kv_scales or set the KV dtype")
        self.path = _resolve_path(model)
        self.enable_thinking = enable_thinking
        self.sparse = sparse  # read by the eval cost model (litesys/eval/cost.py)
        self.cfg = ModelConfig.from_dir(self.path)
        self.model_name, model_cls = resolve(model_class, self.cfg.model_type)
        if max_seq_len is None:  # the model's context length, at most 32K
            max_seq_len = min(32768, validate.context_limit(self.cfg) or 32768)
        validate.check_max_seq_len(self.cfg, max_seq_len, allow_long_max_seq_len)
        self.dtype, self.max_seq_len, self.seed = dtype, max_seq_len, seed
        self.dist = self._init_dist(tensor_parallel_size)
        if self.dist.world > 1:
            model_cls = self._dist_variant(model_cls)

        check_every = check_every or (4 if self.device.type == "cuda" else 1)
        if sparse is not None and sparse.method == "quest":
            page_size = sparse.quest_page_size  # Quest summarises exactly one KV page per block
        self.model = model_cls(self.cfg, self.device, dtype, max_seq_len + check_every + 1, dist=self.dist)
        if load_format == "random":  # benchmarks: real architecture, random weights made on the device
            self.model.load(RandomCheckpoint(self.cfg.raw, self.device, seed=seed))
        else:
            self.model.load(Checkpoint(self.path))

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
        elif self.device.type == "cuda":  # an explicit pool: refuse now rather than run out of memory later
            memory.check_fits(num_kv_pages * KVCache.bytes_per_page(self.cfg.num_layers, page_size, n_kv,
                                                                    self.cfg.head_dim, self.kv_dtype),
                              f"num_kv_pages={num_kv_pages}")
        self.kv = memory.allocate(lambda: KVCache(self.cfg.num_layers, num_kv_pages, page_size, n_kv,
                                                  self.cfg.head_dim, dtype, self.device, kv_dtype=self.kv_dtype),
                                  f"a KV pool of {num_kv_pages} pages")
        if kv_scales is not None:  # fixed fp8 scales (else each layer's first prefill calibrates them)
            self.kv.set_scales(*kv_fp8.load_scales(kv_scales, self.cfg.num_layers, self.cfg.num_kv_heads,
                                                   getattr(self.model, "kv_heads", None)))
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
                             check_every=check_every, graphs=graphs,
                             swap_space_bytes=int(swap_space_gb * 2**30))
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

    # ---- lifetime ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the weights, the KV pool and the CUDA graphs now; any later use raises. Idempotent."""
        self._release()
        memory.release_cached()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:  # reference counting got here: no cycle to collect, only the allocator's cache to hand back
            if not getattr(self, "_closed", True):
                self._release()
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - interpreter shutdown: CUDA may already be gone
            pass

    def _release(self) -> None:
        self._closed = True
        engine = self.__dict__.get("engine")
        if engine is not None and engine.graphs is not None:
            engine.graphs.clear()  # the graphs' private memory pool
        for name in ("engine", "attn", "kv", "model", "_tokenizer"):
            self.__dict__[name] = None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this LLM is closed (close() or the end of its with-block freed it); create a new "
                               "LLM(...) to generate again")

    # ---- tokenizer ----------------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        self._check_open()
        if self._tokenizer is None:
            from transformers import AutoTokenizer
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self._tokenizer_path))
            except (OSError, ValueError) as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise FileNotFoundError(f"no tokenizer in {self._tokenizer_path} ({msg}); put tokenizer.json and "
                                        "tokenizer_config.json next to config.json or pass tokenizer=") from None
        return self._tokenizer

    def encode(self, prompt: Prompt, index: int = 0) -> list[int]:
        """Token ids of one prompt (``index`` only names it in errors)."""
        self._check_open()
        if isinstance(prompt, (list, tuple)) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                                 for t in prompt):
            bad = [t for t in prompt if not 0 <= t < self.cfg.vocab_size]
            if bad:
                raise ValueError(f"prompt {index}: token id {bad[0]} is outside the vocabulary (size "
                                 f"{self.cfg.vocab_size})")
            return list(prompt)
        is_chat = isinstance(prompt, (list, tuple)) and bool(prompt) and isinstance(prompt[0], dict)
        if isinstance(prompt, (list, tuple)) and not prompt:
            return []  # the engine reports it as an empty prompt
        if not isinstance(prompt, str) and not is_chat:
            raise ValueError(f"prompt {index} is not a list of token ids, a string, or a chat conversation (a list "
                             f"of {{'role': ..., 'content': ...}} dicts); got {_describe(prompt)}")
        if is_chat:
            validate.check_conversation(index, prompt)
        if not self._has_tokenizer():
            kind = "a chat conversation" if is_chat else "text"
            raise FileNotFoundError(f"prompt {index} is {kind}, but {self._tokenizer_path} has no tokenizer "
                                    "(tokenizer.json / tokenizer_config.json): put one there or pass tokenizer=DIR; "
                                    "token-id prompts (lists of ints) work without a tokenizer")
        tok = self.tokenizer
        if is_chat:
            prompt = self._chat_text(index, tok, list(prompt))
        return tok(prompt, add_special_tokens=False)["input_ids"]

    def _chat_text(self, index: int, tok, conv: list[dict]) -> str:
        if not getattr(tok, "chat_template", None):
            raise ValueError(f"prompt {index} is a chat conversation, but the tokenizer in {self._tokenizer_path} "
                             "has no chat template; pass the formatted text or token ids instead")
        kw = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        try:
            return tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True, **kw)
        except Exception as e:  # jinja's TemplateError / UndefinedError: the template rejected the conversation
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise ValueError(f"prompt {index}: the chat template rejected the conversation ({type(e).__name__}: "
                             f"{first}); check each message's role and content") from None

    def _has_tokenizer(self) -> bool:
        if self._tokenizer is not None:
            return True
        p = Path(self._tokenizer_path)
        return (p / "tokenizer.json").exists() or (p / "tokenizer_config.json").exists() or not p.exists()

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ---- generation -----------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], sampling_params: SamplingParams | Sequence[SamplingParams] | None
                 = None, progress: bool = False, on_finish: Callable[[int, RequestOutput], None] | None = None,
                 on_progress: Callable[[ProgressStats], None] | None = None) -> list[RequestOutput]:
        """Generate for every prompt. ``on_finish(i, output)`` is called as soon as request ``i`` is complete;
        ``on_progress(stats)`` at each of the engine's checks (every ``check_every`` steps)."""
        self._check_open()
        validate.check_prompts(prompts)
        params = self._params(sampling_params, len(prompts))
        for name, fn in (("on_finish", on_finish), ("on_progress", on_progress)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be a callable or None, got {type(fn).__name__}")
        reqs = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            ids = self.encode(prompt, i)
            if p.seed is not None:
                seeds = [derive_seed(p.seed, j) for j in range(p.n)]
            else:
                seeds = [derive_seed(self.seed, self._n_requests + i, j) for j in range(p.n)]
            reqs.append(Request(index=i, prompt=ids, params=p, seeds=seeds))
        results: list[RequestOutput | None] = [None] * len(reqs)
        bar = ProgressBar(len(reqs), "generate", "req", progress)
        has_tok = self._has_tokenizer()
        rank0 = self.dist.rank == 0

        def seq_done(seq: Seq, out: CompletionOutput) -> None:
            r = seq.req
            out.text = self.decode(out.token_ids) if has_tok else ""
            r.outputs[seq.sample] = out
            r.pending -= 1
            if r.pending == 0:
                results[r.index] = RequestOutput(prompt_token_ids=r.prompt, samples=list(r.outputs))
                bar.done(1)
                if on_finish is not None and rank0:
                    on_finish(r.index, results[r.index])

        def report(stats: ProgressStats) -> None:
            bar.update(stats)
            if on_progress is not None and rank0:
                on_progress(stats)

        try:
            self.engine.run(reqs, seq_done, on_progress=report)
        finally:
            bar.close()
        self._n_requests += len(prompts)  # only a call that completed moves the run seed's request counter
        return results  # type: ignore[return-value]

    @staticmethod
    def _params(sampling_params, n: int) -> list[SamplingParams]:
        if sampling_params is None:
            sampling_params = SamplingParams()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * n
        elif isinstance(sampling_params, (list, tuple)):
            params = list(sampling_params)
            if len(params) != n:
                raise ValueError(f"got {len(params)} sampling params for {n} prompts; pass one or one each")
        else:
            raise ValueError("sampling_params must be a SamplingParams, a list of them (one per prompt) or None, "
                             f"got {type(sampling_params).__name__}")
        for i, p in enumerate(params):
            if not isinstance(p, SamplingParams):
                raise ValueError(f"sampling_params[{i}] must be a SamplingParams, got {type(p).__name__}")
            p.validate()
        return params


def _describe(x) -> str:
    if isinstance(x, (list, tuple)):
        kinds = sorted({type(t).__name__ for t in x})
        return f"a {type(x).__name__} of {', '.join(kinds)}"
    return type(x).__name__
