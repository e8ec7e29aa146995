"""The Kinetics cost model (litesys/eval/cost.py) against hand-computed FLOPs and bytes (dense, GQA, MoE, sparse),
against transformers' own parameter counts, against Kinetics' published closed form, and the runner's cost
records, cost_model.json and timing written with real generations."""
from __future__ import annotations

import json
import math
import random

import pytest

from litesys.eval.cost import GPUS, CostModel, Method, ModelShape, arith_intensity, gpu_key

# a tiny shape: 2 layers, hidden 8, MLP 16, vocab 10
TINY = dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, head_dim=4,
            intermediate_size=16, vocab_size=10)


def test_dense_by_hand():
    sh = ModelShape.from_config(TINY)
    # per layer: q 8x8 + k,v 2 x 8x8 + o 8x8 = 256; MLP 3 x 8x16 = 384
    assert sh.active_params == 2 * (256 + 384) == 1280
    c = CostModel(sh, kv_elem_bytes=2, arith_intensity=100.0).sample(3, 4)
    # linear: prefill 3 positions + 3 decode steps through 1280 weights, LM head (10x8) for 4 sampled tokens
    assert c.linear_flops == 2 * 1280 * 6 + 2 * 10 * 8 * 4 == 16000
    # attention, per layer (q heads x dim = 8): prefill causal 4*8*(1+2+3); decode contexts 4, 5, 6
    assert c.attn_flops == 2 * (4 * 8 * 6 + 4 * 8 * (4 + 5 + 6)) == 1344
    # KV bytes per layer (kv heads x dim = 8, bf16): prefill writes 3 positions' K+V; each decode step reads its
    # context's K+V and writes one position
    assert c.kv_bytes == 2 * (2 * 8 * 2 * 3 + 2 * 8 * 2 * (4 + 5 + 6 + 3)) == 1344
    assert c.flops == 17344 and c.eflops == pytest.approx(17344 + 100.0 * 1344)
    assert c.to_json()["eflops"] == pytest.approx(c.eflops)


def test_gqa_by_hand():
    # 8 query heads share 2 KV heads of dim 4: attention FLOPs follow the query heads, bytes the KV heads
    raw = dict(TINY, num_attention_heads=8, num_key_value_heads=2, hidden_size=32)
    sh = ModelShape.from_config(raw)
    assert sh.active_params == 2 * (32 * 32 + 2 * 32 * 8 + 32 * 32 + 3 * 32 * 16)
    c = CostModel(sh, kv_elem_bytes=2, arith_intensity=1.0).sample(2, 3)  # decode contexts 3, 4
    assert c.attn_flops == 2 * (4 * 32 * (1 + 2) + 4 * 32 * (3 + 4)) == 2560
    assert c.kv_bytes == 2 * (2 * 8 * 2 * 2 + 2 * 8 * 2 * (3 + 4 + 2)) == 704


def test_moe_counts_only_routed_and_shared_experts_by_hand():
    raw = dict(TINY, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=6, decoder_sparse_step=1,
               mlp_only_layers=[1])
    # layer 0: attention 256 + router 8x4 + 2 of the 4 experts (3 x 8x6 each); layer 1 (mlp_only): dense 384
    assert ModelShape.from_config(raw).active_params == 256 + 32 + 2 * 144 + 256 + 384 == 1216
    shared = dict(raw, shared_expert_intermediate_size=5)  # Qwen2-MoE: + shared expert (3 x 8x5) + its 8x1 gate
    assert ModelShape.from_config(shared).active_params == 1216 + 120 + 8
    c = CostModel(ModelShape.from_config(raw)).sample(5, 1)  # one generated token: prefill only
    assert c.linear_flops == 2 * 1216 * 5 + 2 * 10 * 8


def _matmul_params(model, skip: tuple[str, ...] = ("lm_head",)) -> int:
    import torch

    return sum(m.weight.numel() for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and not name.endswith(skip))


def test_active_params_match_transformers_models():
    import torch
    import transformers

    dense = transformers.Qwen3Config(**dict(TINY, hidden_size=64, intermediate_size=96, num_attention_heads=4,
                                            num_key_value_heads=2, head_dim=16, vocab_size=64))
    assert ModelShape.from_config(dense.to_dict()).active_params == _matmul_params(
        transformers.Qwen3ForCausalLM(dense))
    moe_cfg = transformers.Qwen3MoeConfig(**dict(TINY, hidden_size=64, intermediate_size=96, num_attention_heads=4,
                                                 num_key_value_heads=2, head_dim=16, vocab_size=64, num_experts=8,
                                                 num_experts_per_tok=2, moe_intermediate_size=32))
    moe = transformers.Qwen3MoeForCausalLM(moe_cfg)
    total = sum(p.numel() for n, p in moe.named_parameters() if "embed" not in n and "lm_head" not in n
                and p.dim() >= 2)  # matmul weights (expert weights may be fused 3-d tensors), no norms
    per_expert = 3 * 64 * 32
    active = total - moe_cfg.num_hidden_layers * (8 - 2) * per_expert  # all but the routed 2 of 8 experts
    assert ModelShape.from_config(moe_cfg.to_dict()).active_params == active
    assert isinstance(moe, torch.nn.Module)


# ---------------------------------------------------------------- sparse methods

SPARSE_SHAPE = ModelShape(num_layers=2, hidden=16, num_q_heads=4, num_kv_heads=2, head_dim=4, vocab=10,
                          active_params=0)  # attention only; layer 0 stays dense (attn_layer_skip default)


def _attn(method: Method, p: int, g: int):
    c = CostModel(SPARSE_SHAPE, method, kv_elem_bytes=2, arith_intensity=1.0).sample(p, g)
    return c.attn_flops, c.kv_bytes


# prompt 10, 12 generated: decode contexts 11..21; q heads x dim = 16, kv heads x dim = 8
PRE_F, PRE_B = 2 * 4 * 16 * 55, 2 * 2 * 8 * 2 * 10  # dense prefill of 10 positions, both layers
DENSE_F, DENSE_B = 4 * 16 * 176, 2 * 8 * 2 * (176 + 11)  # layer 0: sum of contexts 11..21 = 176, + 11 writes
KEPT16 = (11 + 12 + 13 + 14 + 15 + 16) + 5 * 16  # sum of min(c, 16) over 11..21 = 161


def test_quest_by_hand():
    m = Method.from_sparse({"quest_topk_blocks": 2, "quest_block_size": 4, "attn_sink": 4})
    # pages: 1 of sinks + 2 selected + 1 local (the current partial page) = 4 pages of 4 = 16 positions
    assert (m.name, m.budget, m.score, m.block, m.per_block, m.dense_layers) == ("quest", 16, "summaries", 4, 2, (0,))
    # summaries (min and max per page) scored while c > 16: pages ceil(c/4) for c = 17..21 = 5+5+5+5+6 = 26
    f, b = _attn(m, 10, 12)
    assert f == PRE_F + DENSE_F + 4 * 16 * KEPT16 + 2 * 16 * (2 * 26)
    assert b == PRE_B + DENSE_B + 2 * 8 * 2 * KEPT16 + 8 * 2 * (2 * 26) + 2 * 8 * 2 * 11


def test_topk_scores_every_key_by_hand():
    m = Method.from_sparse({"attn_topk": 8, "attn_local": 4, "attn_sink": 4})
    assert (m.budget, m.score) == (16, "keys")
    # K+V of 16 kept positions; once c > 16 the other c - 16 keys are read and dotted too: 1+2+3+4+5 = 15
    f, b = _attn(m, 10, 12)
    assert f == PRE_F + DENSE_F + 4 * 16 * KEPT16 + 2 * 16 * 15
    assert b == PRE_B + DENSE_B + 2 * 8 * 2 * KEPT16 + 8 * 2 * 15 + 2 * 8 * 2 * 11


def test_block_topk_local_and_dense_by_hand():
    m = Method.from_sparse({"attn_block_topk": 2, "attn_block_size": 4, "attn_local": 4, "attn_sink": 4})
    assert (m.budget, m.score, m.block, m.per_block) == (16, "summaries", 4, 1)  # ceil((4+4+8)/4)*4
    f, b = _attn(m, 10, 12)
    assert f == PRE_F + DENSE_F + 4 * 16 * KEPT16 + 2 * 16 * 26
    local = Method.from_sparse({"attn_local": 12, "attn_sink": 4, "attn_layer_skip": []})  # every layer sparse
    f, b = _attn(local, 10, 12)
    assert f == PRE_F + 2 * 4 * 16 * KEPT16 and b == PRE_B + 2 * (2 * 8 * 2 * KEPT16 + 2 * 8 * 2 * 11)
    # short contexts never exceed the budget: a sparse method then costs exactly what dense does
    assert _attn(m, 3, 5) == _attn(Method(), 3, 5)
    # data-dependent keep sets are charged as dense
    assert _attn(Method.from_sparse({"attn_oracle_topp": 0.9, "attn_local": 4}), 10, 12) == _attn(Method(), 10, 12)


def _brute(model: CostModel, p: int, g: int) -> tuple[int, int, int]:
    """The same model, one Python step at a time (the independent check of the closed-form sums)."""
    sh, m, b = model.shape, model.method, model.kv_elem_bytes
    qd, kvd = sh.num_q_heads * sh.head_dim, sh.num_kv_heads * sh.head_dim
    lin = 2 * sh.active_params * p + 2 * sh.vocab * sh.hidden  # prefill + the first sampled token
    flops = sum(4 * qd * i for i in range(1, p + 1)) * sh.num_layers
    byts = 2 * kvd * b * p * sh.num_layers
    sparse = m.budget is not None or m.score != "none"
    for step in range(1, g):
        c = p + step
        lin += 2 * sh.active_params + 2 * sh.vocab * sh.hidden
        for layer in range(sh.num_layers):
            byts += 2 * kvd * b  # the new position's K/V
            if not sparse or layer in m.dense_layers:
                flops += 4 * qd * c
                byts += 2 * kvd * b * c
                continue
            kept = c if m.budget is None else min(c, m.budget)
            flops += 4 * qd * kept
            byts += 2 * kvd * b * kept
            if m.budget is not None and c > m.budget:
                if m.score == "keys":
                    flops += 2 * qd * (c - kept)
                    byts += kvd * b * (c - kept)
                elif m.score == "summaries":
                    flops += 2 * qd * m.per_block * math.ceil(c / m.block)
                    byts += kvd * b * m.per_block * math.ceil(c / m.block)
    return lin, flops, byts


def test_closed_form_sums_match_a_step_by_step_loop():
    rng = random.Random(0)
    methods = [Method(), Method.from_sparse({"quest_topk_blocks": 3, "quest_block_size": 8}),
               Method.from_sparse({"attn_topk": 20, "attn_local": 8}),
               Method.from_sparse({"attn_block_topk": 3, "attn_block_size": 8, "attn_local": 8, "attn_stride": 4}),
               Method.from_sparse({"attn_random_select": 9, "attn_local": 3, "attn_layer_skip": [0, 2]})]
    for _ in range(60):
        shape = ModelShape(rng.randint(1, 4), 16, 4, rng.choice([1, 2, 4]), 4, 7, rng.randint(0, 500))
        model = CostModel(shape, rng.choice(methods), rng.choice([1, 2, 4]), 3.0)
        p, g = rng.randint(0, 120), rng.randint(0, 200)
        if p + g == 0:
            continue
        c = model.sample(p, g)
        lin, flops, byts = _brute(model, p, g)
        assert (c.linear_flops, c.attn_flops, c.kv_bytes) == (lin if g else 2 * shape.active_params * p, flops, byts)


def test_dense_decode_matches_kinetics_published_formula():
    # Kinetics (cost_model/utils.py dense_cost, one trial): attention 2 (2P + G) G Hq D L FLOPs and
    # 2 (2P + G) G Hkv D L bytes in bf16 -- decode only, so compare without our prefill and write terms
    raw = {"hidden_size": 4096, "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
           "head_dim": 128, "intermediate_size": 12288, "vocab_size": 151936}  # Qwen3-8B
    sh = ModelShape.from_config(raw)
    p, g = 1000, 30000
    c = CostModel(sh).sample(p, g)
    prefill = CostModel(sh).sample(p, 1)
    d_l = 128 * 36
    kin_flops = 2 * (2 * p + g) * g * 32 * d_l
    kin_bytes = 2 * (2 * p + g) * g * 8 * d_l
    assert (c.attn_flops - prefill.attn_flops) / kin_flops == pytest.approx(1.0, rel=1e-3)
    assert (c.kv_bytes - prefill.kv_bytes) / kin_bytes == pytest.approx(1.0, rel=1e-3)
    assert sh.active_params / 1e9 == pytest.approx(6.95, abs=0.01)  # Qwen3-8B: 8.19B with embeddings + head


def test_gpu_table_and_names():
    assert arith_intensity("NVIDIA H100 80GB HBM3") == (pytest.approx(989.4 / 3.35), "H100")
    names = {"NVIDIA H100 PCIe": "H100 PCIe", "NVIDIA H100 NVL": "H100 NVL", "NVIDIA H200": "H200",
             "NVIDIA A100-SXM4-80GB": "A100", "NVIDIA A100-SXM4-40GB": "A100 40GB", "NVIDIA A100 80GB PCIe":
             "A100 PCIe", "NVIDIA L40S": "L40S", "NVIDIA L40": "L40", "NVIDIA L4": "L4", "NVIDIA B200": "B200",
             "NVIDIA GH200 480GB": "GH200", "NVIDIA A10G": "A10", "AMD Instinct MI300X": "MI300X"}
    for name, key in names.items():
        assert gpu_key(name) == key, name
    assert gpu_key("Some CPU") is None and gpu_key(None) is None
    value, source = arith_intensity(None)
    assert value == pytest.approx(GPUS["H100"][0] / GPUS["H100"][1]) and "default" in source
    assert arith_intensity("NVIDIA B200")[0] == pytest.approx(281.25)  # Kinetics quotes 562.5: 2:4-sparse FLOP/s


def test_cost_model_round_trips_through_json():
    m = CostModel(SPARSE_SHAPE, Method.from_sparse({"quest_topk_blocks": 2}), 2, 200.0)
    back = CostModel.from_json(json.loads(json.dumps(m.to_json())))
    assert back == m and CostModel.from_json(m.to_json(), 10.0).arith_intensity == 10.0
    with pytest.raises(ValueError, match="token counts"):
        m.sample(-1, 3)


def test_runner_records_cost_timing_and_cost_model(tmp_path):
    """Real generations on a tiny Quest model: each record's cost is the model's cost of its own lengths."""
    import torch
    from checkpoints import make_checkpoint

    from litesys import LLM, SamplingParams
    from litesys.attention.sparse import SparseConfig
    from litesys.eval import run_info
    from litesys.eval.runner import Job, WorkItem, read_samples, run_shard

    ckpt = make_checkpoint(tmp_path / "ckpt", "qwen3", with_tokenizer=False)
    sparse = SparseConfig(quest_topk_blocks=1, quest_block_size=4)
    prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [5, 6, 7]]
    items = [WorkItem(f"p{i}", 0, ids, SamplingParams(temperature=0, max_new_tokens=14, ignore_eos=True))
             for i, ids in enumerate(prompts)]
    job = Job(items, lambda dev: LLM(str(ckpt), device=dev, dtype=torch.float32, max_seq_len=64, sparse=sparse))
    out = tmp_path / "run"
    out.mkdir()
    run_shard(job, items, out, 0, "cpu")
    recs = {r["problem_id"]: r for r in read_samples(out)}
    saved = json.loads((out / run_info.COST_MODEL).read_text())
    model = CostModel(ModelShape.from_config(json.loads((ckpt / "config.json").read_text())),
                      Method.from_sparse(sparse.to_dict()), 4, arith_intensity(None)[0])
    assert CostModel.from_json(saved) == model and saved["gpu"] == "cpu"
    for i, ids in enumerate(prompts):
        r = recs[f"p{i}"]
        assert r["prompt_tokens"] == len(ids) and r["num_tokens"] == 14
        assert r["cost"] == pytest.approx(model.sample(len(ids), 14).to_json())
    (entry,) = json.loads((out / "timing.0.json").read_text())
    assert entry["samples"] == 2 and entry["generated_tokens"] == 28 and entry["end"] > entry["start"]
    t = run_info.timing(out)
    assert t["gpu_s"] == pytest.approx(entry["end"] - entry["start"], abs=1e-3) and t["tok_s"] > 0
    info = run_info.collect(out)
    assert info["versions"]["torch"] and info["versions"]["transformers"] and info["versions"]["litesys"]
    assert info["gpu"] == "cpu" and info["cost_model"]["method"]["name"] == "quest"


def test_eval_scripts_price_with_arith_intensity_or_gpu(tmp_path, capsys):
    """eval_math.py --arith-intensity / --gpu: the recorded costs, cost_model.json and summary.json use that I (the
    same definition as the report's flags); bad values exit 2 before writing; a resume with another I is refused."""
    from checkpoints import make_checkpoint

    from litesys.eval.tasks.math.main import main

    ckpt = make_checkpoint(tmp_path / "ckpt", "qwen3")
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(2)))
    out = tmp_path / "run"
    base = ["--model", str(ckpt), "--task", "custom", "--data-file", str(data), "--max_len", "256", "--gen_len", "6",
            "--device", "cpu", "--grade_workers", "1", "--output_dir", str(out)]
    for extra, msg in ((["--gpu", "H999"], "--gpu 'H999' is not in the table"),
                       (["--arith-intensity", "0"], "--arith-intensity must be > 0"),
                       (["--gpu", "H200", "--arith-intensity", "5"], "pass --arith-intensity or --gpu, not both")):
        with pytest.raises(SystemExit) as e:
            main([*base, *extra])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert not out.exists()
    s = main([*base, "--arith-intensity", "562.5"])
    recs = [json.loads(line) for line in (out / "samples.0.jsonl").read_text().splitlines()]
    assert [r["cost"]["arith_intensity"] for r in recs] == [562.5, 562.5]
    for r in recs:
        assert r["cost"]["eflops"] == pytest.approx(r["cost"]["flops"] + 562.5 * r["cost"]["kv_bytes"])
    saved = json.loads((out / "cost_model.json").read_text())
    assert saved["arith_intensity"] == 562.5 and saved["intensity_source"] == "--arith-intensity"
    assert s["cost"]["arith_intensity"] == 562.5 and s["config"]["arith_intensity"] == 562.5
    assert s["cost"]["eflops_per_sample"] == pytest.approx(sum(r["cost"]["eflops"] for r in recs) / 2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # the recorded eFLOPs would mix two I
        main([*base, "--gpu", "H200"])
    assert e.value.code == 2 and "arith_intensity: 562.5 there, 206.125 now" in capsys.readouterr().err
