"""Sparse attention under tensor parallelism (CPU, gloo, fp32): every layout selects what one process selects.

8 query / 2 KV heads: at TP 2 each rank holds one whole KV group (the random methods must hash the global head),
at TP 4 each KV head is replicated on 2 ranks holding 2 of its 4 query heads (group scores must be reduced over
both). One spawn per TP size runs every method (tests/sparse_cases.py): first each processor / selector on the rank's
slice of shared random logits against the single-process result on all heads (exact), then greedy generation
with a tiny model against the single-process run (identical tokens).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from checkpoints import make_checkpoint
from dist_utils import run_ranks
from sparse_cases import METHODS, PAGE

from litesys import LLM, SamplingParams
from litesys.attention.meta import AttnMeta
from litesys.attention.sparse import SparseConfig, build
from litesys.attention.sparse.base import PageSelector
from litesys.attention.sparse.common import AttnShape

VOCAB, HQ, HKV, LAYERS = 1024, 8, 2, 2
GREEDY = SamplingParams(temperature=0, max_new_tokens=10, ignore_eos=True, repeat_check=False)
LENGTHS, WIDTH = [40, 29, 12], 40


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("sparse_tp") / "m"
    return str(make_checkpoint(path, "qwen3", with_tokenizer=False, vocab_size=VOCAB, num_attention_heads=HQ,
                               num_key_value_heads=HKV, head_dim=16))


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (37, 22, 5)]


def _inputs() -> dict:
    """Shared random decode inputs: logits over all query heads, q, and Quest summaries over all KV heads."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(len(LENGTHS), HQ, WIDTH, generator=g) * 2
    for b, n in enumerate(LENGTHS):
        logits[b, :, n:] = float("-inf")
    n_pages = WIDTH // PAGE
    kmin = torch.randn(LAYERS, 64, HKV, 16, generator=g)
    return dict(logits=logits, q=torch.randn(len(LENGTHS), HQ, 16, generator=g), kmin=kmin,
                kmax=kmin + torch.rand(LAYERS, 64, HKV, 16, generator=g),
                page_table=torch.randperm(63, generator=g)[:len(LENGTHS) * n_pages].view(-1, n_pages).int() + 1)


def _meta() -> AttnMeta:
    return AttnMeta(False, torch.zeros(len(LENGTHS), dtype=torch.int64), PAGE, HQ, HKV,
                    lengths=torch.tensor(LENGTHS, dtype=torch.int32), max_len=WIDTH,
                    seq_ids=torch.tensor([5, 11, 17]))


def _selections(shape: AttnShape, q_slice: slice, kv_slice: slice) -> dict[str, torch.Tensor]:
    """Every method on this rank's heads of the shared inputs: processed logits, or a selector's pages."""
    x, meta, out = _inputs(), _meta(), {}
    for name, kw in METHODS.items():
        method = build(SparseConfig(**kw), shape)
        if isinstance(method, PageSelector):
            if name == "quest":  # shared summaries: this rank's KV heads of them
                method.kmin = x["kmin"][:, :, kv_slice].contiguous()
                method.kmax = x["kmax"][:, :, kv_slice].contiguous()
            out[name] = method.select(1, x["q"][:, q_slice].contiguous(), AttnMeta(
                False, meta.slot_mapping, PAGE, shape.num_q_heads, shape.num_kv_heads, page_table=x["page_table"],
                lengths=meta.lengths, max_len=WIDTH))
            continue
        logits = x["logits"][:, q_slice].contiguous()
        for p in method.processors[1]:
            logits = p(logits, meta.lengths, 1, meta)
        out[name] = logits
    return out


def _generate(path: str, tp: int) -> dict[str, list[list[int]]]:
    out = {}
    for name, kw in {"dense": None, **METHODS}.items():
        llm = LLM(path, device="cpu", dtype=torch.float32, max_seq_len=64, num_kv_pages=64, max_num_seqs=4,
                  tensor_parallel_size=tp, sparse=None if kw is None else SparseConfig(**kw))
        out[name] = [o.token_ids for o in llm.generate(_prompts(), GREEDY)]
    return out


def _rank(rank: int, world: int, path: str) -> dict:
    from litesys.distributed import init_tensor_parallel, sparse_heads
    from litesys.models.tp import kv_head_shard

    d = init_tensor_parallel(world, "cpu")
    q0, q1 = rank * HQ // world, (rank + 1) * HQ // world
    k0, k1 = kv_head_shard(d, HKV)
    cfg = SimpleNamespace(num_heads=HQ, num_kv_heads=HKV, num_layers=LAYERS)
    model = SimpleNamespace(cfg=cfg, dist=d, q_heads=(q0, q1), kv_heads=(k0, k1), num_q_heads=q1 - q0,
                            num_kv_heads=k1 - k0)
    heads = sparse_heads(model)
    assert (heads.split is not None) == (world > HKV)  # a collective only where a group is split
    return {"sel": _selections(heads, slice(q0, q1), slice(k0, k1)), "q": (q0, q1), "kv": (k0, k1),
            "tokens": _generate(path, world)}


@pytest.fixture(scope="module")
def single(ckpt):
    return {"sel": _selections(AttnShape(HQ, HKV, LAYERS), slice(None), slice(None)), "tokens": _generate(ckpt, 1)}


def _check(per_rank: list[dict], single: dict) -> None:
    for rank, r in enumerate(per_rank):
        (q0, q1), (k0, k1) = r["q"], r["kv"]
        for name, got in r["sel"].items():
            ref = single["sel"][name]
            ref = ref[:, q0:q1] if ref.is_floating_point() else ref[:, k0:k1]  # logits per query head, pages per KV
            assert torch.equal(got.isinf(), ref.isinf()) if got.is_floating_point() else torch.equal(got, ref), \
                f"{name}, rank {rank}: a different selection than one process over all heads"
            if got.is_floating_point():
                assert torch.allclose(got, ref, atol=1e-6, rtol=0, equal_nan=True), name
        assert r["tokens"] == single["tokens"], f"rank {rank}: greedy tokens differ from TP 1"


def test_single_process_methods_are_sparse(single):
    # the comparisons below mean something: every method drops positions of the shared logits,
    # and most of them change the greedy tokens of the tiny model
    for name, sel in single["sel"].items():
        if sel.is_floating_point():
            assert sel.isinf().sum() > (~torch.isfinite(_inputs()["logits"])).sum(), name
    changed = [n for n in METHODS if single["tokens"][n] != single["tokens"]["dense"]]
    assert len(changed) >= len(METHODS) // 2, changed


def test_tp2_whole_groups_hash_global_heads(ckpt, single):
    _check(run_ranks(_rank, 2, ckpt, timeout=300), single)


def test_tp4_replicated_kv_heads_reduce_over_the_group(ckpt, single):
    _check(run_ranks(_rank, 4, ckpt, timeout=400), single)


def test_split_groups_without_the_reduction_would_differ(single):
    # the reference of a rank holding query heads 0-1 of KV head 0's group 0-3 alone, without the reduction:
    # topk and quest pick other positions / pages, so the TP 4 test above can fail
    alone = _selections(AttnShape(2, 1, LAYERS), slice(0, 2), slice(0, 1))
    assert not torch.equal(alone["topk"].isinf(), single["sel"]["topk"][:, 0:2].isinf())
    assert not torch.equal(alone["quest"], single["sel"]["quest"][:, 0:1])


def test_triton_paths_take_global_heads_and_reduced_scores():
    # the Triton selections (CUDA; the interpreter on CPU) hash global heads and rank by given group scores,
    # exactly as the torch paths do
    from litesys.attention.sparse.common import SplitGroups
    from litesys.attention.sparse.oracle_sample import OracleSampleProcessor
    from litesys.attention.sparse.random_nsample import RandomNSampleProcessor
    from litesys.attention.sparse.topk import TopKProcessor

    class Twice:  # a "peer rank" holding the same two query heads: the all-reduce doubles the partial sum
        def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    x, meta = _inputs(), _meta()
    meta.lengths, meta.seq_ids = meta.lengths.to(dev), meta.seq_ids.to(dev)
    logits = x["logits"][:, :4].contiguous().to(dev)
    for make in (lambda be: RandomNSampleProcessor(6, 2, 4, 2, backend=be, head_start=1),
                 lambda be: OracleSampleProcessor(16, 2, 4, backend=be, head_start=4),
                 lambda be: TopKProcessor(6, 2, 4, 2, backend=be, split=SplitGroups(Twice(), 4))):
        ref = make("torch")(logits.clone(), meta.lengths, 1, meta)
        got = make("triton")(logits.clone(), meta.lengths, 1, meta)
        assert torch.equal(ref.isinf(), got.isinf()) and torch.allclose(ref, got, atol=1e-5, equal_nan=True)
