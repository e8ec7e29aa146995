"""The whole engine on CPU (fp32) with ``deterministic=True``: a request gives bitwise the same logits at every step,
and the same tokens, alone, among 7 or among 64 random requests, and when the KV pool is so small that it is
preempted (swapped out and back, or recomputed); for Qwen3 and Qwen3-MoE (whose deterministic experts still match
transformers).

The logits are recorded at the model's ``compute_logits`` (every row of every step) and the request's rows from
its solo run must all appear, bit for bit, among the rows of the batched run. Without the invariant kernels the
same check fails at the first step (docs/reproducibility.md, "What breaks it today").
"""
from __future__ import annotations

import random

import pytest
import sparse_cases
import torch
from checkpoints import hf_greedy, load_hf, make_checkpoint, prefill_logits

from litesys import LLM, SamplingParams
from litesys.attention.sparse import SparseConfig
from litesys.kernels.gemm_invariant import invariant_linear
from litesys.kernels.ref import ops_invariant

VOCAB = 1024  # a small vocabulary: every logits row of a run is kept
MOE = dict(num_experts=8, num_experts_per_tok=4, moe_intermediate_size=32, norm_topk_prob=True)  # 4 slots summed


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("det") / "m", "qwen3", with_tokenizer=False, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def moe_ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("det_moe") / "m", "qwen3_moe", with_tokenizer=False,
                           vocab_size=VOCAB, **MOE)


def _ckpt(request, model: str):
    return request.getfixturevalue({"qwen3": "ckpt", "qwen3_moe": "moe_ckpt"}[model])


def _run(llm: LLM, prompts, params) -> tuple[list, set[bytes], list[bytes]]:
    """Outputs, the set of every logits row computed (as bytes) and the rows in order."""
    rows: list[bytes] = []
    model = llm.model
    compute = model.compute_logits

    def record(hidden):
        out = compute(hidden)
        rows.extend(r.numpy().tobytes() for r in out.float())
        return out

    model.compute_logits = record
    try:
        outs = llm.generate(prompts, params)
    finally:
        del model.compute_logits
    return outs, set(rows), rows


TARGET = [7, 300, 12, 999, 45, 45, 100, 3, 800, 64, 1, 2, 500]


def _target_params(temperature: float) -> SamplingParams:
    return SamplingParams(temperature=temperature, top_p=0.95, max_new_tokens=40, ignore_eos=True, seed=4242)


def _others(n: int, seed: int) -> tuple[list[list[int]], list[SamplingParams]]:
    rng = random.Random(seed)
    prompts = [[rng.randrange(VOCAB) for _ in range(rng.randrange(1, 40))] for _ in range(n)]
    params = [SamplingParams(temperature=rng.choice([0.0, 0.6, 0.8, 1.0]), top_k=rng.choice([0, 20]),
                             top_p=rng.choice([1.0, 0.9]), max_new_tokens=rng.randrange(5, 40), ignore_eos=True,
                             n=rng.choice([1, 1, 2]), seed=rng.randrange(1 << 30)) for _ in range(n)]
    return prompts, params


def _assert_same_as_alone(alone, alone_rows: list[bytes], out, seen: set[bytes]) -> None:
    assert out.token_ids == alone.token_ids
    missing = [step for step, row in enumerate(alone_rows) if row not in seen]
    assert not missing, f"steps whose logits are not bitwise those of the solo run: {missing[:10]}"


def _alone_and_in_batches(llm: LLM, temperature: float, batches=((6, 1), (63, 2))) -> list[int]:
    """The target alone, then among ``n`` random others per batch: its tokens identical; the solo steps whose
    logits rows are missing from each batched run (all must be found)."""
    (alone,), _, alone_rows = _run(llm, [TARGET], [_target_params(temperature)])
    assert len(alone_rows) == 40
    missing = []
    for n, seed in batches:
        prompts, params = _others(n, seed)
        at = random.Random(seed).randrange(n + 1)
        prompts.insert(at, TARGET)
        params.insert(at, _target_params(temperature))
        outs, seen, _ = _run(llm, prompts, params)
        assert outs[at].token_ids == alone.token_ids
        missing.append(sum(row not in seen for row in alone_rows))
    return missing


@pytest.mark.parametrize("model", ["qwen3", "qwen3_moe"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_alone_in_7_and_in_64(request, model, one_thread, temperature):
    llm = LLM(str(_ckpt(request, model)), device="cpu", dtype=torch.float32, max_seq_len=128, deterministic=True)
    assert _alone_and_in_batches(llm, temperature) == [0, 0], "steps whose logits are not bitwise the solo run's"


def test_moe_experts_of_the_default_path_fail_the_check(moe_ckpt, one_thread):
    # invariant GEMMs everywhere else, but the experts' F.linear over however many rows route to an expert
    llm = LLM(str(moe_ckpt), device="cpu", dtype=torch.float32, max_seq_len=128, deterministic=True)
    llm.model.invariant = False
    assert min(_alone_and_in_batches(llm, 0.8, batches=((63, 2),))) > 0


def _preempted_run(ckpt, swap_space_gb: float, pages: int, **kw) -> None:
    """The target alone, then last of 64 requests in a pool of ``pages`` (the target itself preempted)."""
    solo = LLM(str(ckpt), device="cpu", dtype=torch.float32, max_seq_len=128, deterministic=True, **kw)
    (alone,), _, alone_rows = _run(solo, [TARGET], [_target_params(0.8)])
    llm = LLM(str(ckpt), device="cpu", dtype=torch.float32, max_seq_len=128, deterministic=True, num_kv_pages=pages,
              swap_space_gb=swap_space_gb, **kw)
    prefills: list[tuple[list[int], list[int]]] = []
    forward = llm.model.forward

    def record(ids, positions, *args, **kwargs):
        prefills.append((ids.tolist(), positions.tolist()))
        return forward(ids, positions, *args, **kwargs)

    llm.model.forward = record
    prompts, params = _others(63, 3)
    outs, seen, _ = _run(llm, prompts + [TARGET], params + [_target_params(0.8)])  # last: the newest, preempted
    del llm.model.forward
    _assert_same_as_alone(alone, alone_rows, outs[-1], seen)
    # a recomputation: a prefill of the prompt's last token and a generated token at their positions (the prompt's
    # full pages may come from the prefix cache)
    resumed, at = TARGET[-1:] + alone.token_ids[:1], len(TARGET) - 1
    recomputed = any(ids[i:i + 2] == resumed and pos[i:i + 2] == [at, at + 1] for ids, pos in prefills
                     for i in range(len(ids)))
    if swap_space_gb:
        assert llm.engine.swap.stats["swapped_out"] > 0 and not recomputed
    else:  # the pool size is chosen so that the target itself is preempted (retune it if scheduling changes)
        assert recomputed, "the target request was not preempted: retune num_kv_pages"


@pytest.mark.parametrize("model", ["qwen3", "qwen3_moe"])
@pytest.mark.parametrize("swap_space_gb", [0.0, 4.0])  # 0: preempted sequences are recomputed
def test_preempted_request(request, model, one_thread, swap_space_gb):
    _preempted_run(_ckpt(request, model), swap_space_gb, 24)


@pytest.mark.parametrize("method", list(sparse_cases.METHODS))
def test_sparse_methods_in_a_batch_of_64_with_recompute(ckpt, one_thread, method):
    """Every sparse method: alone == last of 64 requests in a pool of 80 pages of 4 tokens (recomputed: replayed)."""
    _preempted_run(ckpt, 0.0, 80, page_size=sparse_cases.PAGE, sparse=SparseConfig(**sparse_cases.METHODS[method]))


def test_the_flag_selects_the_invariant_kernels(ckpt):
    llm = LLM(str(ckpt), device="cpu", dtype=torch.float32, max_seq_len=64, deterministic=True)
    assert llm.model.linear is invariant_linear and llm.attn.ops is ops_invariant
    assert llm.attn.method.needs_replay  # a recomputed sequence replays its decode steps
    plain = LLM(str(ckpt), device="cpu", dtype=torch.float32, max_seq_len=64)
    assert plain.model.linear is torch.nn.functional.linear and plain.attn.ops is not ops_invariant
    assert not plain.attn.method.needs_replay


def test_deterministic_moe_matches_transformers(moe_ckpt, one_thread):
    llm = LLM(str(moe_ckpt), device="cpu", dtype=torch.float32, max_seq_len=128, deterministic=True)
    assert llm.model.invariant and llm.model.linear is invariant_linear
    assert not LLM(str(moe_ckpt), device="cpu", dtype=torch.float32, max_seq_len=64).model.invariant
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (1, 6, 17, 40)]
    hf = load_hf(moe_ckpt)
    with torch.no_grad():
        ref = torch.cat([hf(torch.tensor([p])).logits[0] for p in prompts])
    assert (prefill_logits(llm.model, prompts) - ref).abs().max().item() < 1e-4
    greedy = SamplingParams(temperature=0, max_new_tokens=24, ignore_eos=True, repeat_check=False)
    assert [o.token_ids for o in llm.generate(prompts, greedy)] == hf_greedy(moe_ckpt, prompts, 24)
