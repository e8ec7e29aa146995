"""The sparse-method protocol: ``build`` and what the engine asks, the attention_backend reaching every method,
and the example page selector (``local_pages``) against dense attention over exactly its positions (plain torch)."""
from __future__ import annotations

import math

import pytest
import torch
from sparse_cases import METHODS

from litesys.attention.backend import Attention
from litesys.attention.kv_cache import KVCache
from litesys.attention.meta import AttnMeta
from litesys.attention.sparse import SparseConfig, build
from litesys.attention.sparse.base import DenseMethod, PageSelector, ProcessorMethod
from litesys.attention.sparse.common import AttnShape
from litesys.kernels.ref import ops_torch

HQ, HKV, D, PAGE, LAYERS = 4, 2, 16, 4, 2
G = HQ // HKV
SCALE = D ** -0.5
LENGTHS = [1, 2, 4, 5, 8, 9, 17, 26, 41]  # after the decode token: inside the first page, page edges, long
SHAPE = AttnShape(HQ, HKV, LAYERS)
TRITON_PATH = {"topk", "block_topk", "stride", "random_select", "random_nsample", "oracle_sample", "oracle_topp",
               "quest", "local_pages"}  # methods with a Triton path (local and threshold are torch ops only)


def test_build_tells_the_engine_what_it_needs() -> None:
    dense = build(None, SHAPE, "auto")
    assert isinstance(dense, DenseMethod) and not dense.graph_by_length and not dense.needs_replay
    assert dense.kv_page_size() is None and dense.extra_bytes_per_page(2, HKV, D, torch.float32) == 0
    for name, kw in METHODS.items():
        m = build(SparseConfig(**kw), SHAPE, "auto")
        assert m.needs_replay and m.graph_safe, name
        assert m.kv_page_size() == (PAGE if name == "quest" else None), name
        assert m.paged_state() == [], name  # nothing before bind
        # per-page state only for Quest: key min and max per page, layer and KV head
        assert m.extra_bytes_per_page(LAYERS, HKV, D, torch.bfloat16) == (2 * LAYERS * HKV * D * 2
                                                                         if name == "quest" else 0), name
        assert m.graph_by_length == (name != "local_pages"), name  # processors' raw logits are [B, Hq, max_len]
    assert isinstance(build(SparseConfig(attn_local=4), AttnShape(HQ, HKV, 1), "auto"), DenseMethod)  # all skipped


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_attention_backend_reaches_every_method(backend: str) -> None:
    for name, kw in METHODS.items():
        m = build(SparseConfig(**kw), SHAPE, backend)
        parts = [p for ps in m.processors.values() for p in ps] if isinstance(m, ProcessorMethod) else [m]
        for p in parts:
            assert getattr(p, "backend", None) == (backend if name in TRITON_PATH else None), name


def test_backend_decides_which_path_runs(monkeypatch) -> None:
    # on the CPU "auto" means torch: only a passed-through "triton" reaches the Triton selection
    from litesys.kernels import sparse_ops as triton_ops

    calls = []
    real = triton_ops.topk_apply
    monkeypatch.setattr(triton_ops, "topk_apply", lambda *a, **k: calls.append(1) or real(*a, **k))
    logits = torch.randn(2, HQ, 40)
    meta = AttnMeta(False, torch.zeros(2, dtype=torch.int64), PAGE, HQ, HKV, lengths=torch.tensor([40, 33]),
                    max_len=40, seq_ids=torch.tensor([3, 4]))
    for backend, expect in (("auto", 0), ("torch", 0), ("triton", 1)):
        proc = build(SparseConfig(attn_topk=6, attn_local=4), SHAPE, backend).processors[1][0]
        calls.clear()
        proc(logits.clone(), meta.lengths, 1, meta)
        assert len(calls) == expect, backend


def _scenario(seed: int = 0) -> tuple[KVCache, torch.Tensor, AttnMeta, torch.Tensor]:
    """A pool of stale large values with every sequence's K/V written at its pages (interleaved, shuffled)."""
    g = torch.Generator().manual_seed(seed)
    n_pages = [math.ceil(n / PAGE) for n in LENGTHS]
    kv = KVCache(LAYERS, 2 + sum(n_pages), PAGE, HKV, D, torch.float32, "cpu")
    kv.k.copy_(torch.randn(kv.k.shape, generator=g) * 50)
    kv.v.copy_(torch.randn(kv.v.shape, generator=g) * 50)
    ids = (torch.randperm(kv.num_pages - 1, generator=g) + 1).tolist()
    pt = torch.zeros(len(LENGTHS), max(n_pages) + 1, dtype=torch.int32)
    for b, n in enumerate(n_pages):
        pt[b, :n] = torch.tensor(ids[:n])
        ids = ids[n:]
    meta = AttnMeta(False, torch.tensor([int(pt[b, (n - 1) // PAGE]) * PAGE + (n - 1) % PAGE
                                         for b, n in enumerate(LENGTHS)]), PAGE, HQ, HKV, page_table=pt,
                    lengths=torch.tensor(LENGTHS, dtype=torch.int32), max_len=max(LENGTHS))
    return kv, pt, meta, torch.randn(len(LENGTHS), HQ, D, generator=g)


def _kept(n: int, sink: int, local: int) -> list[int]:
    """local_pages by its definition: positions on the pages of the first ``sink`` and the last ``local`` ones."""
    pages = {p // PAGE for p in range(min(sink, n))} | {p // PAGE for p in range(max(n - max(local, 1), 0), n)}
    return [p for p in range(n) if p // PAGE in pages]


def _reference(kv: KVCache, layer: int, pt: torch.Tensor, q: torch.Tensor, b: int, positions: list[int]):
    """[Hq, D]: softmax(q·k * scale)·v over exactly ``positions`` of sequence ``b``, read one by one."""
    k = torch.stack([kv.k[layer, int(pt[b, p // PAGE]), p % PAGE] for p in positions])  # [n, Hkv, D]
    v = torch.stack([kv.v[layer, int(pt[b, p // PAGE]), p % PAGE] for p in positions])
    out = []
    for h in range(HQ):
        w = torch.softmax(k[:, h // G] @ q[b, h] * SCALE, dim=0)
        out.append(w @ v[:, h // G])
    return torch.stack(out)


@pytest.mark.parametrize("sink,local,backend", [(4, 0, "torch"), (0, 5, "torch"), (6, 9, "torch"), (2, 40, "torch"),
                                                (6, 9, "triton")])
def test_local_pages_equals_dense_over_its_positions(sink: int, local: int, backend: str) -> None:
    kv, pt, meta, q = _scenario(sink + local)
    cfg = SparseConfig(attn_custom="local_pages", attn_sink=sink, attn_local=local, attn_layer_skip=[0])
    method = build(cfg, SHAPE, backend)
    assert isinstance(method, PageSelector)
    attn = Attention(kv, HQ, HKV, D, SCALE, ops_torch, method=method)
    dense = ops_torch.paged_decode_fused(q, kv.k[0], kv.v[0], pt, meta.lengths, SCALE)
    torch.testing.assert_close(method.decode(0, q, kv, meta, ops_torch, SCALE), dense)  # a skipped layer
    n_poisoned = 0
    for b, n in enumerate(LENGTHS):  # poison every page the method must not read
        for p in set(range(math.ceil(n / PAGE))) - {x // PAGE for x in _kept(n, sink, local)}:
            kv.k[1, int(pt[b, p])] = float("nan")
            kv.v[1, int(pt[b, p])] = float("nan")
            n_poisoned += 1
    assert n_poisoned > 0 or local == 40  # 40: the window covers every sequence (then equal to dense)
    k_new = kv.k[1].view(-1, HKV, D)[meta.slot_mapping]  # rewrite the last token's K/V as the step does
    v_new = kv.v[1].view(-1, HKV, D)[meta.slot_mapping]
    out = attn(1, q, k_new, v_new, meta)
    for b, n in enumerate(LENGTHS):
        torch.testing.assert_close(out[b], _reference(kv, 1, pt, q, b, _kept(n, sink, local)), rtol=1e-4, atol=1e-3)


def test_llm_hands_its_attention_backend_to_the_method(tmp_path) -> None:
    from checkpoints import make_checkpoint

    from litesys import LLM

    ckpt = make_checkpoint(tmp_path / "m", "qwen3", num_hidden_layers=2, head_dim=16, with_tokenizer=False)
    # "auto" on the CPU is torch: only a passed-through backend can make these "triton"
    for kw in (dict(attn_topk=4, attn_local=4), dict(quest_topk_blocks=2, quest_block_size=PAGE)):
        llm = LLM(str(ckpt), device="cpu", dtype=torch.float32, max_seq_len=64, num_kv_pages=16,
                  attention_backend="triton", sparse=SparseConfig(**kw))
        method = llm.engine.attn.method
        parts = method.processors[1] if isinstance(method, ProcessorMethod) else [method]
        assert [p.backend for p in parts] == ["triton"], kw
        llm.close()


def test_engine_never_names_a_method() -> None:
    # the engine, its builder and graph runner reach sparse attention only through build() and the protocol:
    # no method module imported, no method-specific attribute read
    import ast
    from pathlib import Path

    allowed = {"litesys.attention.sparse", "litesys.attention.sparse.base"}
    bad = []
    for path in sorted((Path(__file__).parents[1] / "litesys" / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("litesys.attention.sparse"):
                if node.module not in allowed:
                    bad.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.Attribute) and node.attr in ("processors", "selector", "kmin", "kmax",
                                                                   "quest_page_size"):
                bad.append(f"{path.name}:{node.lineno}: .{node.attr}")
            elif isinstance(node, ast.Constant) and node.value in ("quest", "seq_ids"):
                bad.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert bad == [], bad
