"""The eval scripts' model checks, run before the output folder is touched: checkpoint directory, model type,
weights, tokenizer, ``--max_len`` against the model, and prompt lengths.

Nothing here loads weights: a safetensors file is checked by its header (the tensors' byte ranges must fit in
the file), so a bad ``--model`` fails in about a second, with one line naming the flag.
"""
from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litesys.eval.cli_flags import UsageError

INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


@dataclass
class ModelInfo:
    path: Path  # the local checkpoint directory (a hub id resolved to its snapshot)
    config: Any  # litesys.models.config.ModelConfig
    model_class: str  # the registry name the engine will run
    tokenizer: Any  # the transformers tokenizer the engine will load


def check_model(model: str, model_class: str | None, max_len: int, chat: bool = True) -> ModelInfo:
    """Check ``--model``/``--model_class``/``--max_len`` the way ``LLM`` will use them; raises UsageError.

    ``chat``: the prompts are chat conversations, so the tokenizer needs a chat template.
    """
    path = resolve(model)
    cfg = read_config(path)
    name = check_model_class(model_class, cfg.model_type, path)
    check_weights(path)
    tok = load_tokenizer(path, chat)
    check_max_len(max_len, cfg, path)
    return ModelInfo(path, cfg, name, tok)


def resolve(model: str) -> Path:
    """A local checkpoint directory, or a hub id fetched (cached) into one, as ``LLM`` does."""
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UsageError(f"--model {model} has no config.json; point --model at a Hugging Face checkpoint "
                             "directory (config.json + *.safetensors + tokenizer files)")
        return p
    if p.exists():
        raise UsageError(f"--model {model} is a file; pass the checkpoint directory that holds it")
    from litesys.engine.llm import _resolve_path  # the one "path or hub id" rule, the engine's

    try:
        return _resolve_path(model)
    except (FileNotFoundError, OSError) as e:
        raise UsageError(f"--model {model}: {e}") from None


def read_config(path: Path):
    from litesys.models.config import ModelConfig

    try:
        return ModelConfig.from_dir(path)
    except json.JSONDecodeError as e:
        raise UsageError(f"--model {path}/config.json is not valid JSON ({e.msg}, line {e.lineno}); fix or "
                         "re-download it") from None
    except KeyError as e:
        raise UsageError(f"--model {path}/config.json lacks {e.args[0]!r}; is it a causal-LM checkpoint?") from None
    except (TypeError, AttributeError, ValueError) as e:
        raise UsageError(f"--model {path}/config.json is malformed ({e}); fix or re-download it") from None


def check_model_class(model_class: str | None, model_type: str, path: Path) -> str:
    from litesys.models.registry import ALIASES, MODELS

    name = (model_class or model_type or "").lower()
    name = ALIASES.get(name, name)
    if name in MODELS:
        return name
    supported = ", ".join(sorted({*MODELS, *ALIASES}))
    if model_class:
        raise UsageError(f"--model_class {model_class} is not supported; choose one of {supported}")
    raise UsageError(f"--model {path} has model_type {model_type!r}, which LiteSys does not run (supported: "
                     f"{supported}); pass --model_class if it is one of those architectures under another name")


def _safetensors_problem(f: Path) -> str | None:
    """Why ``f`` is not a complete safetensors file, or None: its header must parse and its tensors fit in it."""
    size = f.stat().st_size
    with open(f, "rb") as h:
        head = h.read(8)
        if len(head) < 8:
            return f"is {size} bytes, too short for a safetensors header"
        n = struct.unpack("<Q", head)[0]
        if n > size - 8:
            return f"is truncated ({size} bytes; its header alone needs {n + 8})"
        try:
            header = json.loads(h.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "has an unreadable header (not a safetensors file?)"
    if not isinstance(header, dict):
        return "has an unreadable header (not a safetensors file?)"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
               and "data_offsets" in t), default=0)
    if 8 + n + end > size:
        return f"is truncated ({size} bytes; its tensors need {8 + n + end})"
    return None


def check_weights(path: Path) -> None:
    """Every safetensors file the checkpoint names exists and is complete (headers only: no weight is read)."""
    index = path / INDEX
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise UsageError(f"--model {index} is not a valid safetensors index (no weight_map); re-download "
                             "it") from None
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            raise UsageError(f"--model {path} lacks {len(missing)} of the {len(files)} weight files its index names "
                             f"(first: {missing[0]}); finish the download")
        paths = [path / f for f in files]
    else:
        paths = sorted(path.glob("*.safetensors"))
        if not paths:
            raise UsageError(f"--model {path} has no *.safetensors weights; point --model at a checkpoint saved "
                             "with safetensors (save_pretrained(..., safe_serialization=True))")
    for f in paths:
        problem = _safetensors_problem(f)
        if problem:
            raise UsageError(f"--model {path}: {f.name} {problem}; re-download it")


def load_tokenizer(path: Path, chat: bool = True):
    """The tokenizer ``LLM`` will load (from the checkpoint directory), checked for a chat template."""
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise UsageError(f"--model {path} has no tokenizer ({' / '.join(TOKENIZER_FILES[:2])}); copy the tokenizer "
                         "files of the model next to config.json")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 - transformers raises many types for a broken tokenizer
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--model {path}: its tokenizer does not load ({first}); copy the model's tokenizer "
                         "files next to config.json") from None
    if chat and not getattr(tok, "chat_template", None):
        raise UsageError(f"--model {path}: its tokenizer has no chat template (tokenizer_config.json "
                         "'chat_template'), and the eval prompts are chat conversations; use the instruct/chat "
                         "model's tokenizer files")
    return tok


def check_max_len(max_len: int, cfg, path: Path) -> None:
    """``--max_len`` within the positions the model was made for: max_position_embeddings, or the reach of the RoPE
    scaling in config.json (the engine's own limit, ``validate.context_limit``)."""
    from litesys.engine.validate import context_limit

    limit = context_limit(cfg)
    if limit is None or max_len <= limit:
        return
    if limit == cfg.max_position_embeddings:
        raise UsageError(f"--max_len {max_len} is above the model's max_position_embeddings {limit} "
                         f"({path}/config.json); lower --max_len (it counts prompt + generation), or add a "
                         "rope_scaling entry (e.g. YaRN) to config.json to extend it")
    raise UsageError(f"--max_len {max_len} is above the {limit} positions the RoPE scaling in {path}/config.json "
                     "reaches (original_max_position_embeddings x factor); lower --max_len or raise the factor")


def check_tensor_parallel(model: ModelInfo, tp: int) -> None:
    """A ``--tp`` that the model's tensor-parallel variant can shard (heads, MLP, vocabulary), as its executor will
    check it, but before the output folder is touched; UsageError naming --tp."""
    if tp == 1:
        return
    from litesys.models.registry import dist_variant

    try:
        dist_variant(model.model_class).check_shape(model.config, tp)
    except ValueError as e:
        raise UsageError(f"--tp {tp}: {e}") from None


def prompt_lengths(tok, prompts: list, enable_thinking: bool | None) -> list[int]:
    """Token count of each prompt as ``LLM.encode`` makes it: token ids as they are, text without special tokens,
    a chat conversation through the chat template with the generation prompt."""
    kw = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    lengths: list[int | None] = [None] * len(prompts)
    texts: dict[int, str] = {}
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            texts[i] = p
        elif p and isinstance(p[0], dict):
            texts[i] = tok.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True, **kw)
        else:
            lengths[i] = len(p)
    if texts:
        encoded = tok(list(texts.values()), add_special_tokens=False)["input_ids"]
        for i, ids in zip(texts, encoded):
            lengths[i] = len(ids)
    return lengths  # type: ignore[return-value]


def long_prompts(ids: list[str], lengths: list[int], max_len: int, policy: str, what: str = "problem") -> list[str]:
    """The ids whose prompt leaves no room to generate within ``--max_len`` (the engine would refuse them).

    ``policy`` ``"skip"``: they are returned (to be left out and counted) after one warning line on stderr;
    ``"error"``: UsageError, before anything is written.
    """
    long = [(i, n) for i, n in zip(ids, lengths) if n >= max_len]
    if not long:
        return []
    worst = max(long, key=lambda t: t[1])
    detail = f"{len(long)} {what}(s) have prompts of >= --max_len {max_len} tokens (longest: {worst[0]}, {worst[1]})"
    if len(long) == len(ids):
        raise UsageError(f"every {what}'s prompt has >= --max_len {max_len} tokens (longest: {worst[0]}, "
                         f"{worst[1]}); raise --max_len (it counts prompt + generation)")
    if policy == "error":
        raise UsageError(f"{detail}; raise --max_len or pass --on-long-prompt skip to leave them out")
    if os.environ.get("RANK", "0") == "0":  # once per torchrun job
        print(f"warning: {detail}: skipped, and counted in the summary as skipped_long_prompt; raise --max_len to "
              "include them", file=sys.stderr)
    return [i for i, _ in long]
