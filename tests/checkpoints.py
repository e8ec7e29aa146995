"""Tiny random-weight checkpoints built with transformers' own config/model classes (the reference)."""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"

BASE = dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
            rms_norm_eps=1e-6, tie_word_embeddings=False)


def make_checkpoint(path: Path, model_type: str = "qwen3", seed: int = 0, with_tokenizer: bool = True,
                    **overrides) -> Path:
    """Write a random ``model_type`` checkpoint (config.json + safetensors) into ``path`` and return it.

    The vocabulary is the real Qwen3 one so that the shipped tokenizer and chat template work with it.
    """
    import transformers

    cfg_cls, model_cls = {
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
        "qwen3_moe": (transformers.Qwen3MoeConfig, transformers.Qwen3MoeForCausalLM),
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    }[model_type]
    kw = dict(BASE)
    kw.update(overrides)
    v = kw["vocab_size"]
    # real Qwen ids (<|endoftext|>, <|im_end|>) when the vocabulary is the real one, else the last two ids
    eos, im_end = (151643, 151645) if v > 151645 else (v - 1, v - 2)
    kw = {**dict(bos_token_id=eos, eos_token_id=[im_end, eos], pad_token_id=eos), **kw}
    cfg = cfg_cls(**kw)
    torch.manual_seed(seed)
    model = model_cls(cfg).float().eval()
    # Random init leaves norms at 1 and biases at 0: perturb them so the tests see them used.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith(".bias"):
                p.normal_(0, 0.02)
            elif "embed_tokens" in name or "lm_head" in name:
                p.normal_(0, 0.5)  # larger logits spread: fewer near-ties in greedy comparisons
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    if with_tokenizer:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(FIXTURES / f, path / f)
    return path


def load_hf(path: Path):
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def prefill_logits(model, prompts: list[list[int]]) -> torch.Tensor:
    """Logits at every position of the prompts through an executor directly, one packed prefill: [sum(len), V]."""
    from litesys.attention.backend import Attention
    from litesys.attention.kv_cache import KVCache
    from litesys.attention.meta import AttnMeta

    cfg = model.cfg
    lens = [len(p) for p in prompts]
    pages = (sum(lens) + 15) // 16 + 2
    kv = KVCache(cfg.num_layers, pages, 16, model.num_kv_heads, cfg.head_dim, torch.float32, "cpu")
    attn = Attention(kv, model.num_q_heads, model.num_kv_heads, cfg.head_dim, cfg.head_dim ** -0.5)
    ids = torch.tensor([t for p in prompts for t in p])
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32)
    meta = AttnMeta(True, torch.arange(16, 16 + len(ids)), 16, model.num_q_heads, model.num_kv_heads,
                    cu_seqlens=cu, max_seqlen=max(lens))
    pos = torch.cat([torch.arange(n) for n in lens])
    return model.compute_logits(model.forward(ids, pos, meta, attn))


def hf_greedy(path, prompts: list[list[int]], n_new: int) -> list[list[int]]:
    """transformers' own greedy continuation of each prompt (no EOS stop)."""
    hf = load_hf(path)
    outs = []
    for p in prompts:
        o = hf.generate(torch.tensor([p]), max_new_tokens=n_new, do_sample=False, eos_token_id=None, pad_token_id=0,
                        attention_mask=torch.ones(1, len(p), dtype=torch.long))
        outs.append(o[0, len(p):].tolist())
    return outs
