"""Qwen3 / Qwen3-MoE with ``attention_bias=True``: q/k/v and o_proj biases applied as transformers does (fp32, CPU)."""
from __future__ import annotations

import pytest
import torch
from checkpoints import hf_greedy, load_hf, make_checkpoint, prefill_logits
from dist_utils import run_ranks

from litesys import LLM, SamplingParams
from litesys.models.config import ModelConfig
from litesys.models.loader import Checkpoint
from litesys.models.registry import resolve

VOCAB = 1024
SHAPES = {
    "qwen3": ("qwen3", dict(num_attention_heads=4, num_key_value_heads=2)),
    "qwen3_moe": ("qwen3_moe", dict(num_attention_heads=4, num_key_value_heads=2, num_experts=4,
                                    num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)),
}
GREEDY = SamplingParams(temperature=0, max_new_tokens=16, ignore_eos=True, repeat_check=False)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("bias")
    out = {}
    for name, (mt, kw) in SHAPES.items():
        path = make_checkpoint(root / name, mt, with_tokenizer=False, vocab_size=VOCAB, attention_bias=True, **kw)
        hf = load_hf(path)  # bigger o_proj biases than the fixture's 0.02, so that they move the logits a lot
        with torch.no_grad():
            for layer in hf.model.layers:
                layer.self_attn.o_proj.bias.normal_(0, 0.5)
        hf.save_pretrained(path, safe_serialization=True)
        out[name] = path
    return out


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (3, 17, 40)]


def _model(path):
    cfg = ModelConfig.from_dir(path)
    _, cls = resolve(None, cfg.model_type)
    model = cls(cfg, "cpu", torch.float32, 256)
    model.load(Checkpoint(path))
    return model


@pytest.mark.parametrize("name", list(SHAPES))
def test_o_proj_bias_matches_transformers(ckpts, name):
    path = ckpts[name]
    model = _model(path)
    assert all(w.o_bias is not None and w.o_bias.abs().max() > 0.1 for w in model.layers)
    prompts = _prompts()
    logits = prefill_logits(model, prompts)
    hf = load_hf(path)
    with torch.no_grad():
        ref = torch.cat([hf(torch.tensor([p])).logits[0] for p in prompts])
    assert (logits - ref).abs().max().item() < 1e-4
    # without the o_proj bias the logits are far off: the comparison above can fail
    for w in model.layers:
        w.o_bias = None
    assert (prefill_logits(model, prompts) - ref).abs().max().item() > 0.05
    llm = LLM(str(path), device="cpu", dtype=torch.float32, max_seq_len=128)
    assert [o.token_ids for o in llm.generate(prompts, GREEDY)] == hf_greedy(path, prompts, 16)


def test_qwen2_never_loads_an_o_proj_bias(tmp_path):
    path = make_checkpoint(tmp_path / "q2", "qwen2", with_tokenizer=False, vocab_size=VOCAB)
    assert "model.layers.0.self_attn.o_proj.bias" not in Checkpoint(path)
    assert all(w.o_bias is None and w.qkv_bias is not None for w in _model(path).layers)


def test_random_weights_build_the_bias(ckpts):
    llm = LLM(str(ckpts["qwen3"]), device="cpu", dtype=torch.float32, max_seq_len=64, num_kv_pages=16,
              load_format="random")
    H = llm.cfg.hidden_size
    assert all(w.o_bias is not None and w.o_bias.shape == (H,) and w.qkv_bias is not None for w in llm.model.layers)
    assert len(llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True))[0]
               .token_ids) == 4


def _tp_logits(rank: int, world: int, path: str) -> torch.Tensor:
    llm = LLM(path, device="cpu", dtype=torch.float32, max_seq_len=96, num_kv_pages=32, tensor_parallel_size=world)
    return prefill_logits(llm.model, _prompts())


def test_tensor_parallel_adds_the_bias_once(ckpts):
    # 2 ranks: each holds half of o_proj's input features; the bias must be added after the all-reduce only
    path = str(ckpts["qwen3"])
    ref = prefill_logits(_model(ckpts["qwen3"]), _prompts())
    for logits in run_ranks(_tp_logits, 2, path, timeout=180):
        assert (logits - ref).abs().max().item() < 1e-4
