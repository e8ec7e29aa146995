"""The decode step as one CUDA graph on the GPU (run on a GPU machine: ``python -m pytest -m gpu tests/``): token for
token what the same step gives run eagerly at the same padded shapes (sampled, mixed per-row params, refills,
preemption, dense and Quest), and a steady step is one graph launch plus a few small launches and copies."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from checkpoints import make_checkpoint
from test_decode_step import MIXED, QUEST, PaddedSteps, prompts

from litesys import LLM, SamplingParams

pytestmark = pytest.mark.gpu
SETTINGS = dict(device="cuda", dtype=torch.bfloat16, max_seq_len=64, page_size=4, max_num_seqs=6, check_every=3,
                num_kv_pages=24)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(make_checkpoint(tmp_path_factory.mktemp("graph") / "m", "qwen3", with_tokenizer=False, vocab_size=96,
                               num_hidden_layers=2, hidden_size=64, intermediate_size=128, head_dim=32,
                               eos_token_id=7))


def run(ckpt, graphs: bool, sparse=None):
    llm = LLM(ckpt, **SETTINGS, sparse=sparse, swap_space_gb=0 if sparse is None else 1)
    if not graphs:
        llm.engine.graphs = PaddedSteps(llm.engine)  # the graph's shapes, run eagerly
    outs = llm.generate(prompts(len(MIXED)) * 2, MIXED * 2)
    eng = llm.engine
    assert eng.stats["preemptions"] > 0
    if graphs:
        assert eng.graphs.graphs and not eng.graphs.eager_only
    return [[(s.token_ids, s.finish_reason) for s in o.samples] for o in outs]


@pytest.mark.parametrize("sparse", [None, QUEST], ids=["dense", "quest"])
def test_graph_replays_equal_the_eager_step_at_the_same_shapes(ckpt, sparse):
    assert run(ckpt, True, sparse) == run(ckpt, False, sparse)


def test_a_sampled_step_is_one_graph_launch(ckpt):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from throughput import profile_steps

    llm = LLM(ckpt, **{**SETTINGS, "num_kv_pages": 300, "max_num_seqs": 16})
    sp = SamplingParams(temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=40, ignore_eos=True,
                        repeat_check=False)
    ids, params = prompts(16), [sp] * 16
    llm.generate(ids, [dataclasses.replace(sp, max_new_tokens=4)] * 16)  # captures the bucket of 16
    got = profile_steps(llm, ids, params)
    print(got)
    graph_launches = sum(c for name, c in got["calls_per_step"].items() if name.startswith(("cudaGraph", "cuGraph")))
    assert graph_launches == pytest.approx(1.0)
    assert got["launches_per_step"] <= 4  # the graph, the page table update when a page starts, the check's copies
