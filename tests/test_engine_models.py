"""Executors and the engine against transformers (float32, CPU): prefill logits and greedy generation."""
from __future__ import annotations

import pytest
import torch
from checkpoints import hf_greedy, load_hf, make_checkpoint, prefill_logits

from litesys import LLM, SamplingParams
from litesys.models.config import ModelConfig
from litesys.models.loader import Checkpoint
from litesys.models.registry import resolve

SMALL = dict(vocab_size=1024)
SHAPES = {
    "qwen3_gqa1": ("qwen3", dict(num_attention_heads=4, num_key_value_heads=4)),
    "qwen3_gqa2_tied": ("qwen3", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3_gqa4_hd32": ("qwen3", dict(num_attention_heads=8, num_key_value_heads=2, head_dim=32)),
    "qwen3_yarn": ("qwen3", dict(head_dim=32, rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e6,
                                                               "original_max_position_embeddings": 64})),
    "qwen3_linear": ("qwen3", dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4})),
    "qwen2_bias_gqa2": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=2)),
    "qwen2_bias_gqa4": ("qwen2", dict(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True)),
    "llama_gqa2": ("llama", dict(num_attention_heads=4, num_key_value_heads=2)),
    # Llama 3.1 RoPE: with head_dim 16 and an original context of 64 its frequencies fall in all three bands
    "llama3_rope_tied": ("llama", dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
                                       rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                        "high_freq_factor": 4.0, "rope_theta": 5e5,
                                                        "original_max_position_embeddings": 64})),
}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    return {k: make_checkpoint(root / k, mt, with_tokenizer=False, **SMALL, **kw) for k, (mt, kw) in SHAPES.items()}


def _prompts(n: int, seed: int = 0, vocab: int = 1024) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lens = [1, 3, 9, 16, 17, 31, 40, 64, 70, 5][:n]
    return [torch.randint(0, vocab, (L,), generator=g).tolist() for L in lens]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_prefill_logits_match_transformers(ckpts, shape):
    path = ckpts[shape]
    cfg = ModelConfig.from_dir(path)
    _, cls = resolve(None, cfg.model_type)
    model = cls(cfg, "cpu", torch.float32, 512)
    model.load(Checkpoint(path))
    prompts = _prompts(4, seed=1)[1:] + [torch.randint(0, 1024, (200,)).tolist()]  # 200 > yarn's original 64
    logits = prefill_logits(model, prompts)
    hf = load_hf(path)
    start = 0
    with torch.no_grad():
        for p in prompts:
            ref = hf(torch.tensor([p])).logits[0]
            assert (logits[start:start + len(p)] - ref).abs().max().item() < 1e-4
            start += len(p)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_checkpoint_table_is_the_checkpoint(ckpts, shape):
    """The executor's table names every tensor transformers saved, with its shape: what RandomCheckpoint makes."""
    path = ckpts[shape]
    cfg = ModelConfig.from_dir(path)
    _, cls = resolve(None, cfg.model_type)
    shapes = cls(cfg, "cpu", torch.float32, 64).checkpoint_shapes()
    ckpt = Checkpoint(path)
    assert set(shapes) == set(ckpt.weight_map)
    assert all(shapes[n] == ckpt.shape(n) for n in shapes)


def test_llama_refuses_mlp_bias(ckpts):
    from litesys.models.llama import LlamaForCausalLM

    cfg = ModelConfig.from_dir(ckpts["llama_gqa2"])
    cfg = ModelConfig(**{**vars(cfg), "raw": {**cfg.raw, "mlp_bias": True}})
    with pytest.raises(ValueError, match="mlp_bias=true .* the llama executor does not load") as e:
        LlamaForCausalLM(cfg, "cpu", torch.float32, 64)
    assert "\n" not in str(e.value)


GREEDY = SamplingParams(temperature=0, max_new_tokens=32, ignore_eos=True, repeat_check=False)


@pytest.mark.parametrize("shape", ["qwen3_gqa4_hd32", "qwen2_bias_gqa2", "qwen3_yarn", "llama3_rope_tied"])
def test_greedy_generation_matches_transformers(ckpts, shape):
    prompts = _prompts(10)
    ref = hf_greedy(ckpts[shape], prompts, 32)
    llm = LLM(str(ckpts[shape]), device="cpu", dtype=torch.float32, max_seq_len=256)
    outs = llm.generate(prompts, GREEDY)
    assert [o.token_ids for o in outs] == ref
    assert all(o.finish_reason == "length" for o in outs)


def test_refill_and_preemption_keep_greedy_exact(ckpts):
    path = ckpts["qwen3_gqa2_tied"]
    prompts = _prompts(10)
    ref = hf_greedy(path, prompts, 32)
    # more prompts than slots: finished sequences are replaced by waiting ones
    llm = LLM(str(path), device="cpu", dtype=torch.float32, max_seq_len=256, max_num_seqs=3)
    assert [o.token_ids for o in llm.generate(prompts, GREEDY)] == ref
    assert llm.engine.stats["prefill_steps"] >= 4
    # a pool far too small for all sequences at once forces preemption and recomputation
    llm = LLM(str(path), device="cpu", dtype=torch.float32, max_seq_len=128, page_size=8, num_kv_pages=20)
    assert [o.token_ids for o in llm.generate(prompts, GREEDY)] == ref
    assert llm.engine.stats["preemptions"] > 0


def test_n_samples_share_prompt_pages(ckpts, monkeypatch):
    from litesys.engine.engine import Engine

    path = ckpts["qwen3_gqa1"]
    llm = LLM(str(path), device="cpu", dtype=torch.float32, max_seq_len=256, page_size=16, num_kv_pages=64)
    prompt = _prompts(8)[6]  # 40 tokens: 2 full pages + 1 partial page
    used = []
    orig = Engine.place_new_sequences

    def spy(self, new, logits):
        used.append(self.kv.num_pages - 1 - self.allocator.num_free)
        return orig(self, new, logits)

    monkeypatch.setattr(Engine, "place_new_sequences", spy)
    single = llm.generate([prompt], GREEDY)[0]
    out = llm.generate([prompt], SamplingParams(temperature=0, max_new_tokens=32, ignore_eos=True, n=4,
                                                repeat_check=False))[0]
    # prefilled once: 3 prompt pages, the 2 full ones shared, the partial one copied for samples 2..4
    assert used == [3, 3 + 3]
    assert len(out.samples) == 4 and all(s.token_ids == single.token_ids for s in out.samples)
    assert llm.engine.allocator.num_free == llm.kv.num_pages - 1  # everything returned


def test_sampling_is_independent_of_the_batch(ckpts):
    llm = LLM(str(ckpts["qwen3_gqa2_tied"]), device="cpu", dtype=torch.float32, max_seq_len=256)
    p = SamplingParams(temperature=4.0, top_p=0.9, top_k=50, max_new_tokens=24, seed=1234, ignore_eos=True,
                       repeat_check=False)
    prompts = _prompts(6, seed=3)
    alone = llm.generate([prompts[2]], p)[0].token_ids
    others = SamplingParams(temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=40, ignore_eos=True, repeat_check=False)
    mixed = llm.generate(prompts, [others, others, p, others, others, others])
    assert mixed[2].token_ids == alone
    other_seed = llm.generate([prompts[2]], SamplingParams(**{**p.__dict__, "seed": 99}))[0].token_ids
    assert other_seed != alone


def test_max_seq_len_caps_generation(ckpts):
    llm = LLM(str(ckpts["qwen3_gqa1"]), device="cpu", dtype=torch.float32, max_seq_len=48)
    out = llm.generate([_prompts(8)[6]], GREEDY)[0]  # 40-token prompt, 32 asked, 8 fit
    assert len(out.token_ids) == 8 and out.finish_reason == "length"


def test_on_finish_reports_every_request_once(ckpts):
    llm = LLM(str(ckpts["qwen3_gqa1"]), device="cpu", dtype=torch.float32, max_seq_len=256, max_num_seqs=2)
    seen = []
    prompts = _prompts(5)
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True),
                        on_finish=lambda i, o: seen.append((i, o.token_ids)))
    assert sorted(i for i, _ in seen) == list(range(5))
    assert dict(seen) == {i: o.token_ids for i, o in enumerate(outs)}
