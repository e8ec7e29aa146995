"""``LLM``: a tokenizer in front of the engine, ``generate``, progress, and a lifetime.

``engine/build.py`` builds the engine from an ``EngineConfig``. An ``LLM`` survives any exception inside
``generate`` (the engine resets its slots, pages and queues), and ``close()`` / ``with LLM(...) as llm`` /
``del llm`` give its GPU memory back at once: nothing it owns points back at it, so reference counting alone
frees it (no ``gc.collect()`` needed).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch

from litesys.engine import memory, validate
from litesys.engine.build import build
from litesys.engine.config import EngineConfig
from litesys.engine.progress import ProgressBar, ProgressStats
from litesys.engine.sequence import Request, Seq
from litesys.outputs import CompletionOutput, RequestOutput
from litesys.sampling_params import SamplingParams, derive_seed

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
    """Generate with a Qwen2/Qwen3 checkpoint: ``LLM(model, EngineConfig(...))`` or ``LLM(model, **fields)`` with
    EngineConfig's field names (both: the fields override the config). See README for every setting."""

    def __init__(self, model: str, config: EngineConfig | None = None, *, sparse=None, **fields):
        self._closed = False
        self.config = EngineConfig.of(config, fields)
        self.path = _resolve_path(model)
        self.sparse = sparse  # read by the eval cost model (litesys/eval/cost.py)
        self.enable_thinking, self.seed = self.config.enable_thinking, self.config.seed
        self.engine = build(self.path, self.config, sparse)
        self.model, self.kv, self.attn = self.engine.model, self.engine.kv, self.engine.attn
        self.cfg, self.dtype, self.device = self.model.cfg, self.model.dtype, self.model.device
        self.max_seq_len, self.dist = self.engine.max_seq_len, self.engine.dist
        self._tokenizer = None
        self._tokenizer_path = self.config.tokenizer or self.path
        self._n_requests = 0

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
    def generate(self, prompts: Sequence[Prompt] | Iterator, sampling_params: SamplingParams |
                 Sequence[SamplingParams] | None = None, progress: bool = False,
                 on_finish: Callable[[int, RequestOutput], None] | None = None,
                 on_progress: Callable[[ProgressStats], None] | None = None) -> list[RequestOutput]:
        """Generate for every prompt. ``on_finish(i, output)`` is called as soon as request ``i`` is complete;
        ``on_progress(stats)`` at each of the engine's checks (every ``check_every`` steps).

        ``prompts`` is a list (checked and tokenised whole before anything runs) or an iterator, pulled lazily:
        one prompt each time the engine has a free slot, so a caller feeding a shared queue never hoards work.
        An iterator's items are prompts or ``(prompt, SamplingParams)`` pairs; request ``i`` is the i-th pulled."""
        self._check_open()
        lazy = isinstance(prompts, Iterator)
        if not lazy:
            validate.check_prompts(prompts)
        for name, fn in (("on_finish", on_finish), ("on_progress", on_progress)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be a callable or None, got {type(fn).__name__}")
        pulled = [0]  # requests made so far: the run seed's request counter moves by this much
        if lazy:
            default = self._default_params(sampling_params)
            reqs: Iterable[Request] = self._pull(prompts, default, pulled)
        else:
            params = self._params(sampling_params, len(prompts))
            reqs = [self._request(i, prompt, p) for i, (prompt, p) in enumerate(zip(prompts, params))]
            pulled[0] = len(reqs)
        results: dict[int, RequestOutput] = {}
        samples: dict[int, list[CompletionOutput | None]] = {}  # request index -> its samples so far
        bar = ProgressBar(len(prompts) if not lazy else None, "generate", "req", progress)
        has_tok = self._has_tokenizer()
        rank0 = self.dist.rank == 0

        def seq_done(seq: Seq, out: CompletionOutput) -> None:
            r = seq.req
            out.text = self.decode(out.token_ids) if has_tok else ""
            done = samples.setdefault(r.index, [None] * r.params.n)
            done[seq.sample] = out
            if all(o is not None for o in done):
                results[r.index] = RequestOutput(prompt_token_ids=r.prompt, samples=samples.pop(r.index))
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
        self._n_requests += pulled[0]  # only a call that completed moves the run seed's request counter
        return [results[i] for i in range(pulled[0])]

    def _request(self, i: int, prompt: Prompt, p: SamplingParams) -> Request:
        ids = self.encode(prompt, i)
        if p.seed is not None:
            seeds = [derive_seed(p.seed, j) for j in range(p.n)]
        else:
            seeds = [derive_seed(self.seed, self._n_requests + i, j) for j in range(p.n)]
        return Request(index=i, prompt=ids, params=p, seeds=seeds)

    def _pull(self, prompts: Iterator, default: SamplingParams, pulled: list[int]) -> Iterator[Request]:
        """Requests made one at a time, as the engine pulls them."""
        for i, item in enumerate(prompts):
            prompt, p = item if _is_pair(item) else (item, default)
            if not isinstance(p, SamplingParams):
                raise ValueError(f"prompt {i}: the pair's second item must be a SamplingParams, got "
                                 f"{type(p).__name__}")
            p.validate()
            pulled[0] = i + 1
            yield self._request(i, prompt, p)

    @staticmethod
    def _default_params(sampling_params) -> SamplingParams:
        if sampling_params is None:
            return SamplingParams()
        if not isinstance(sampling_params, SamplingParams):
            raise ValueError("with an iterator of prompts, sampling_params must be one SamplingParams or None; give "
                             "a prompt its own as a (prompt, SamplingParams) pair")
        sampling_params.validate()
        return sampling_params

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


def _is_pair(item) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], SamplingParams)


def _describe(x) -> str:
    if isinstance(x, (list, tuple)):
        kinds = sorted({type(t).__name__ for t in x})
        return f"a {type(x).__name__} of {', '.join(kinds)}"
    return type(x).__name__
