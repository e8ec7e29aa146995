"""Qwen3-MoE executor against transformers (float32, CPU): routing variants, dense/sparse layer patterns,
per-expert and stacked checkpoints, greedy generation, and tensor parallelism on 2 gloo ranks."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # triton reads it at import: the kernel tests in this process need the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")
from checkpoints import hf_greedy, load_hf, make_checkpoint, prefill_logits
from dist_utils import run_ranks

from litesys import LLM, SamplingParams
from litesys.models.config import ModelConfig
from litesys.models.loader import Checkpoint
from litesys.models.qwen3_moe import Qwen3MoeForCausalLM

VOCAB = 1024
MOE = dict(vocab_size=VOCAB, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)
SHAPES = {
    "top2_norm": dict(MOE, norm_topk_prob=True),
    "top2_raw": dict(MOE, norm_topk_prob=False, tie_word_embeddings=True),
    # layers 0..3: step 2 makes 1 and 3 sparse, mlp_only_layers turns 3 back to dense -> only layer 1 is MoE
    "step2_mlp_only": dict(MOE, norm_topk_prob=True, num_hidden_layers=4, decoder_sparse_step=2, mlp_only_layers=[3]),
    "top4_of_16": dict(MOE, num_experts=16, num_experts_per_tok=4, norm_topk_prob=True, num_attention_heads=8,
                       num_key_value_heads=2),
}
GREEDY = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True, repeat_check=False)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe_ckpts")
    return {k: str(make_checkpoint(root / k, "qwen3_moe", with_tokenizer=False, **kw)) for k, kw in SHAPES.items()}


def _prompts(seed: int = 0, lens=(1, 5, 17, 40)) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lens]


def _model(path: str) -> Qwen3MoeForCausalLM:
    cfg = ModelConfig.from_dir(Path(path))
    m = Qwen3MoeForCausalLM(cfg, "cpu", torch.float32, 256)
    m.load(Checkpoint(path))
    return m


def _hf_logits(hf, prompts: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([hf(torch.tensor([p])).logits[0] for p in prompts])


@pytest.mark.parametrize("shape", list(SHAPES))
def test_prefill_logits_match_transformers(ckpts, shape):
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    m, hf = _model(ckpts[shape]), load_hf(ckpts[shape])
    assert m.sparse == [isinstance(layer.mlp, Qwen3MoeSparseMoeBlock) for layer in hf.model.layers]
    assert any(m.sparse)
    prompts = _prompts(1)
    err = (prefill_logits(m, prompts) - _hf_logits(hf, prompts)).abs().max().item()
    assert err < 1e-4, f"{shape}: prefill logits differ by {err}"


@pytest.mark.parametrize("shape", list(SHAPES))
def test_checkpoint_table_is_the_checkpoint(ckpts, shape):
    """Every per-expert tensor transformers saved, with its shape, is in the table (what RandomCheckpoint makes)."""
    cfg = ModelConfig.from_dir(Path(ckpts[shape]))
    shapes = Qwen3MoeForCausalLM(cfg, "cpu", torch.float32, 64).checkpoint_shapes()
    ckpt = Checkpoint(ckpts[shape])
    assert set(shapes) == set(ckpt.weight_map)
    assert all(shapes[n] == ckpt.shape(n) for n in shapes)


def test_sparse_layer_pattern(ckpts):
    m = _model(ckpts["step2_mlp_only"])
    assert m.sparse == [False, True, False, False]
    assert m.layers[1].gate_up.shape == (8, 64, 64) and m.layers[1].down.shape == (8, 64, 32)
    assert m.layers[0].gate_up.shape == (256, 64)  # dense MLP: intermediate_size 128, gate and up fused
    assert set(m.routers) == {1}


def test_stacked_expert_checkpoint_loads_the_same(ckpts, tmp_path):
    """transformers 5's own layout (save_original_format=False): experts.gate_up_proj / experts.down_proj."""
    path = ckpts["top2_norm"]
    load_hf(path).save_pretrained(tmp_path, save_original_format=False)
    assert "model.layers.0.mlp.experts.gate_up_proj" in Checkpoint(tmp_path)
    a, b = _model(path), _model(str(tmp_path))
    for la, lb in zip(a.layers, b.layers):
        assert torch.equal(la.gate_up, lb.gate_up) and torch.equal(la.down, lb.down)
    prompts = _prompts(2, lens=(9,))
    # same weights; only BLAS rounding may differ (mmapped tensors land at different alignments)
    assert (prefill_logits(a, prompts) - prefill_logits(b, prompts)).abs().max().item() < 1e-5


@pytest.mark.parametrize("shape", ["top2_norm", "top2_raw", "step2_mlp_only"])
def test_greedy_generation_matches_transformers(ckpts, shape):
    prompts = _prompts(3)
    ref = hf_greedy(ckpts[shape], prompts, GREEDY.max_new_tokens)
    llm = LLM(ckpts[shape], device="cpu", dtype=torch.float32, max_seq_len=128, num_kv_pages=64, max_num_seqs=8)
    assert isinstance(llm.model, Qwen3MoeForCausalLM)
    assert [o.token_ids for o in llm.generate(prompts, GREEDY)] == ref


TP_SHAPES = ["top2_norm", "step2_mlp_only"]


def _run(path: str, tp: int) -> dict:
    llm = LLM(path, device="cpu", dtype=torch.float32, max_seq_len=96, num_kv_pages=64, max_num_seqs=8,
              tensor_parallel_size=tp)
    prompts = _prompts(4)
    return {"logits": prefill_logits(llm.model, prompts),
            "greedy": [o.token_ids for o in llm.generate(prompts, GREEDY)],
            "shapes": [tuple(w.gate_up.shape) + tuple(w.down.shape) for w in llm.model.layers],
            "cls": type(llm.model).__name__}


def _tp_rank(rank: int, world: int, paths: list[str]) -> list[dict]:
    return [_run(p, world) for p in paths]


def test_tp2_matches_single_process(ckpts):
    paths = [ckpts[s] for s in TP_SHAPES]
    per_rank = run_ranks(_tp_rank, 2, paths, timeout=240)
    for i, path in enumerate(paths):
        ref = _run(path, 1)
        for rank, res in enumerate(per_rank):
            r = res[i]
            assert r["cls"] == "Qwen3MoeDistForCausalLM"
            err = (r["logits"] - ref["logits"]).abs().max().item()
            assert err < 1e-4, f"{TP_SHAPES[i]} rank {rank}: prefill logits differ by {err}"
            assert r["greedy"] == ref["greedy"], f"{TP_SHAPES[i]} rank {rank}: greedy tokens differ"
            # each rank holds half of every expert's intermediate dim (and of the dense MLPs)
            for got, full in zip(r["shapes"], ref["shapes"]):
                if len(full) == 6:  # [E, 2I, H] + [E, H, I]
                    assert got == (full[0], full[1] // 2, full[2], full[3], full[4], full[5] // 2)
                else:  # [2I, H] + [H, I]
                    assert got == (full[0] // 2, full[1], full[2], full[3] // 2)


def test_expert_stats_count_routed_experts(ckpts):
    """One sequence decoding: each sparse layer routes to exactly top_k distinct experts per step (the benchmarks'
    hook, benchmarks/moe_stats.py, outside the model)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from moe_stats import ExpertStats

    path = ckpts["step2_mlp_only"]
    assert ExpertStats.of(_model(path)) is None  # built before install: the model alone counts nothing
    uninstall = ExpertStats.install()
    try:
        llm = LLM(path, device="cpu", dtype=torch.float32, max_seq_len=64, num_kv_pages=16, max_num_seqs=2)
        llm.generate(_prompts(5, lens=(7,)), SamplingParams(temperature=0, max_new_tokens=6, ignore_eos=True))
    finally:
        uninstall()
    stats = ExpertStats.of(llm.model)
    steps = int(stats.decode_steps)
    assert steps == 5  # the first token comes from the prefill, which is not counted
    assert stats.expert_hits.tolist() == [0, 2 * steps, 0, 0]
    per_expert = 3 * 32 * 64 * 4  # gate, up, down of one expert in fp32
    assert stats.weight_bytes_per_step() == 8 * 64 * 4 + 2 * per_expert
    stats.reset()
    assert stats.weight_bytes_per_step() == 8 * 64 * 4 + 8 * per_expert  # nothing counted: every expert
    assert [t.shape[0] for t in stats.stacked_tensors()] == [8, 8]
    assert ExpertStats.of(_model(path)) is None  # uninstalled
