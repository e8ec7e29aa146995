"""Fused MoE Triton kernels and the expert sort/alignment vs the PyTorch reference (CPU: TRITON_INTERPRET=1)."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton kernels need the triton package")

from litesys.kernels.moe import MoeKernelConfig, fused_moe, pick_config  # noqa: E402
from litesys.kernels.moe_align import align_block_size, padded_capacity  # noqa: E402
from litesys.kernels.ref.gemm_invariant import linear_ref  # noqa: E402
from litesys.kernels.ref.moe import moe_reference, sum_slots  # noqa: E402
from litesys.kernels.ref.moe_align import align_block_size_torch  # noqa: E402
from litesys.models.moe.routing import route  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.double() - expected.double()).norm() / expected.double().norm()).item()


def skewed_ids(T: int, k: int, E: int, empty: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """[T, k] distinct experts per token; expert 0 in most tokens, the ``empty`` experts in none."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([e for e in range(E) if e not in empty])
    rows = []
    for t in range(T):
        perm = allowed[torch.randperm(len(allowed), generator=g)]
        if t % 4 != 3:  # 3 of 4 tokens route to expert 0 first
            perm = torch.cat([torch.tensor([0]), perm[perm != 0]])
        rows.append(perm[:k])
    return torch.stack(rows)


def make_case(T: int, H: int, inter: int, E: int, k: int, dtype: torch.dtype, empty=(3, 5), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).to(dtype)
    w13 = (torch.randn(E, 2 * inter, H, generator=g) / H ** 0.5).to(dtype)
    w2 = (torch.randn(E, H, inter, generator=g) / inter ** 0.5).to(dtype)
    ids = skewed_ids(T, k, E, empty, seed)
    w = torch.softmax(torch.randn(T, k, generator=g), -1).to(dtype)
    return x, w13, w2, w, ids


def check_alignment(ids: torch.Tensor, E: int, block_m: int) -> None:
    a = align_block_size(ids, E, block_m)
    flat = ids.reshape(-1)
    n = flat.numel()
    sorted_ids = a.sorted_ids.tolist()
    used = a.num_padded.item()
    assert used % block_m == 0 and a.sorted_ids.numel() == padded_capacity(n, E, block_m) >= used
    counts = torch.bincount(flat, minlength=E)
    assert used == int(((counts + block_m - 1) // block_m * block_m).sum())
    assert sorted(p for p in sorted_ids[:used] if p < n) == list(range(n))  # every pair exactly once
    assert all(p == n for p in sorted_ids[used:])
    for b in range(used // block_m):
        rows = [p for p in sorted_ids[b * block_m:(b + 1) * block_m] if p < n]
        assert rows, "a block in use holds at least one pair"
        assert all(flat[p].item() == a.block_expert[b].item() for p in rows)
        assert rows == sorted(rows)  # token order kept inside an expert
    assert set(a.block_expert[:used // block_m].tolist()) == set(flat.tolist())


@pytest.mark.parametrize("T,k,E,block_m", [(1, 1, 4, 16), (1, 8, 16, 16), (13, 2, 8, 16), (40, 3, 8, 4),
                                           (64, 2, 8, 32)])
def test_alignment(T, k, E, block_m):
    check_alignment(skewed_ids(T, k, E, empty=(1,) if E > k + 1 else ()), E, block_m)


@pytest.mark.parametrize("T,k,E,block_m", [(1, 1, 4, 16), (1, 8, 16, 16), (13, 2, 8, 16), (40, 3, 8, 4),
                                           (64, 2, 8, 32), (700, 2, 6, 16), (128, 8, 128, 16)])
def test_alignment_kernel_equals_twin(T, k, E, block_m):
    """The one-launch Triton alignment gives the twin's tensors exactly (pairs over several scan chunks too)."""
    ids = skewed_ids(T, k, E, empty=(1,) if E > k + 1 else ()).to(DEVICE)
    got = align_block_size(ids, E, block_m, backend="triton")
    want = align_block_size_torch(ids, E, block_m)
    for name in ("sorted_ids", "block_expert", "num_padded"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    check_alignment(ids, E, block_m)


FP32 = [
    # (T, H, I, E, k, config): uneven routing with experts 3 and 5 empty throughout
    (13, 64, 48, 8, 2, MoeKernelConfig(16, 32, 32, 4, 2)),  # I not a multiple of block_n: masked columns
    (13, 48, 32, 8, 2, MoeKernelConfig(16, 32, 32, 4, 2)),  # H not a multiple of block_k: masked K loop
    (33, 64, 32, 8, 3, MoeKernelConfig(32, 32, 64, 4, 2)),  # several row blocks for expert 0
    (1, 64, 32, 8, 2, MoeKernelConfig(16, 32, 32, 4, 2)),  # one token (sorted path)
    (1, 64, 32, 8, 2, MoeKernelConfig(16, 32, 32, 4, 2, pair_mode=True)),  # one token, decode path
    (6, 48, 48, 8, 3, MoeKernelConfig(16, 32, 32, 4, 2, pair_mode=True)),  # decode path, masked N and K
    (5, 64, 32, 8, 1, MoeKernelConfig(16, 32, 32, 4, 2)),  # top-1: no sum over slots
]


@pytest.mark.parametrize("T,H,inter,E,k,cfg", FP32)
def test_fused_matches_reference_fp32(T, H, inter, E, k, cfg):
    x, w13, w2, w, ids = make_case(T, H, inter, E, k, torch.float32)
    ref = moe_reference(x, w13, w2, w, ids)
    dev = [t.to(DEVICE) for t in (x, w13, w2, w, ids)]
    out = fused_moe(*dev, config=cfg).cpu()
    assert out.shape == ref.shape and rel_err(out, ref) < 1e-5


@pytest.mark.parametrize("pair_mode", [False, True])
def test_fused_matches_reference_bf16(pair_mode):
    x, w13, w2, w, ids = make_case(9, 64, 32, 8, 2, torch.bfloat16)
    ref = moe_reference(*(t.float() for t in (x, w13, w2, w)), ids)
    cfg = MoeKernelConfig(16, 32, 32, 4, 2, pair_mode=pair_mode)
    out = fused_moe(*(t.to(DEVICE) for t in (x, w13, w2, w, ids)), config=cfg).cpu()
    assert out.dtype == torch.bfloat16 and rel_err(out, ref) < 1e-2


def test_routed_end_to_end_with_default_config():
    """route() feeding the kernels with pick_config's choice, vs the reference on the same routing."""
    g = torch.Generator().manual_seed(3)
    T, H, inter, E, k = 11, 64, 32, 16, 4
    x = torch.randn(T, H, generator=g)
    gate = torch.randn(E, H, generator=g)
    w13, w2 = torch.randn(E, 2 * inter, H, generator=g) / 8, torch.randn(E, H, inter, generator=g) / 6
    w, ids = route(x, gate, k, norm_topk_prob=True)
    assert torch.allclose(w.sum(-1), torch.ones(T))
    ref = moe_reference(x, w13, w2, w, ids)
    for n_pairs_max in (0, 64):  # sorted path, then the pair (decode) path
        cfg = pick_config(T * k, E, torch.float32, pair_max=n_pairs_max)
        assert cfg.pair_mode == (n_pairs_max > 0)
        out = fused_moe(*(t.to(DEVICE) for t in (x, w13, w2, w, ids)), config=cfg).cpu()
        assert rel_err(out, ref) < 1e-5


def test_per_slot_outputs_summed_by_the_norm():
    """fused_moe(per_slot=True) -> add+RMSNorm (the Triton kernel summing the k slots) equals the summed output
    -> add+RMSNorm, and the CPU twin sums them in slot order too."""
    from litesys.kernels import norm_rope
    from litesys.kernels.ref import norm_rope as ref_norm

    x, w13, w2, w, ids = make_case(9, 64, 32, 8, 3, torch.float32)
    args = [t.to(DEVICE) for t in (x, w13, w2, w, ids)]
    cfg = MoeKernelConfig(16, 32, 32, 4, 2)
    parts = fused_moe(*args, config=cfg, per_slot=True)
    assert parts.shape == (3, 9, 64)
    summed = fused_moe(*args, config=cfg)
    torch.testing.assert_close(parts.sum(0), summed, atol=1e-5, rtol=1e-5)
    res, ln = torch.randn(9, 64, device=DEVICE), 1 + torch.rand(64, device=DEVICE)
    y, r = norm_rope.add_rms_norm_triton(parts, res, ln, 1e-6)
    y_ref, r_ref = ref_norm.add_rms_norm(summed, res, ln, 1e-6)
    torch.testing.assert_close(r, r_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    y_cpu, _ = norm_rope.add_rms_norm(parts.cpu(), res.cpu(), ln.cpu(), 1e-6)
    torch.testing.assert_close(y_cpu, y_ref.cpu(), atol=1e-5, rtol=1e-5)


def test_slots_are_summed_in_slot_order():
    # fp32: 1e8 + 1 and 1 - 1e8 round to +-1e8, so the 1 survives only where the 1e8s cancel before it comes
    per_pair = torch.tensor([[1e8, 1.0, -1e8, 2.0], [1.0, 1e8, -1e8, 2.0], [1e8, -1e8, 1.0, 2.0]]).unsqueeze(-1)
    assert sum_slots(per_pair).squeeze(-1).tolist() == [2.0, 2.0, 3.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_invariant_experts_rows_do_not_depend_on_the_batch(dtype):
    """Deterministic mode's experts (fused with ``invariant_config`` tiles, and the 16-row twin): a token's row is
    bitwise the same alone, among a few others and among all 40, whatever else routes to its experts."""
    T, H, inter, E, k = 40, 64, 48, 8, 4
    x, w13, w2, w, ids = make_case(T, H, inter, E, k, dtype)
    ref = moe_reference(*(t.float() for t in (x, w13, w2, w)), ids)
    picks = [[7], [0, 7, 30], list(range(7, 33))]  # alone; with 2 others; 26 rows: several blocks for expert 0
    for name, run in (("fused", lambda *a: fused_moe(*(t.to(DEVICE) for t in a), invariant=True).cpu()),
                      ("twin", lambda *a: moe_reference(*a, linear=linear_ref))):
        full = run(x, w13, w2, w, ids)
        assert rel_err(full, ref) < (1e-5 if dtype == torch.float32 else 1e-2), name
        for rows in picks:
            part = run(x[rows], w13, w2, w[rows], ids[rows])
            assert torch.equal(part[rows.index(7)], full[7]), f"{name}: row 7 changed with its batch {rows}"


@pytest.mark.gpu
def test_fused_moe_in_cuda_graph():
    """Routing + alignment + kernels replay in a CUDA graph (no host sync) and follow new routing."""
    T, H, inter, E, k = 16, 256, 128, 32, 4
    x, w13, w2, _, _ = (t.cuda() for t in make_case(T, H, inter, E, k, torch.bfloat16, empty=()))
    gate = torch.randn(E, H, device="cuda", dtype=torch.bfloat16)
    cfg = MoeKernelConfig(16, 64, 64, 4, 2)  # the sorted path (pair mode has no sort to capture)

    def step():
        w, ids = route(x, gate, k, True)
        return fused_moe(x, w13, w2, w, ids, config=cfg)

    step()  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    for seed in range(3):
        x.copy_(torch.randn(T, H, generator=torch.Generator().manual_seed(seed)).to(x))
        graph.replay()
        w, ids = route(x, gate, k, True)
        ref = moe_reference(x.float(), w13.float(), w2.float(), w.float(), ids)
        assert rel_err(out, ref) < 1e-2


def test_executor_with_fused_kernels_matches_transformers(tmp_path, monkeypatch):
    """The Qwen3-MoE executor running the Triton path (as on CUDA) against transformers, fp32 prefill logits."""
    from checkpoints import load_hf, make_checkpoint

    import litesys.models.qwen3_moe as qm
    from litesys.attention.backend import Attention
    from litesys.attention.kv_cache import KVCache
    from litesys.attention.meta import AttnMeta
    from litesys.models.config import ModelConfig
    from litesys.models.loader import Checkpoint

    path = make_checkpoint(tmp_path, "qwen3_moe", with_tokenizer=False, vocab_size=512, num_experts=8,
                           num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=True)
    calls = []

    def fused(x, *args, per_slot=False):
        calls.append((x.shape[0], per_slot))
        return fused_moe(x.to(DEVICE), *(a.to(DEVICE) for a in args), per_slot=per_slot).to(x.device)

    monkeypatch.setattr(qm, "moe_experts", fused)
    cfg = ModelConfig.from_dir(path)
    m = qm.Qwen3MoeForCausalLM(cfg, "cpu", torch.float32, 64)
    m.load(Checkpoint(path))
    ids = torch.randint(0, 512, (13,), generator=torch.Generator().manual_seed(0))
    kv = KVCache(cfg.num_layers, 4, 16, m.num_kv_heads, cfg.head_dim, torch.float32, "cpu")
    attn = Attention(kv, m.num_q_heads, m.num_kv_heads, cfg.head_dim, cfg.head_dim ** -0.5)
    meta = AttnMeta(True, torch.arange(16, 29), 16, m.num_q_heads, m.num_kv_heads,
                    cu_seqlens=torch.tensor([0, 13], dtype=torch.int32), max_seqlen=13)
    logits = m.compute_logits(m.forward(ids, torch.arange(13), meta, attn))
    assert calls == [(13, True), (13, True)]  # both layers through the kernels, slots summed by the next norm
    with torch.no_grad():
        ref = load_hf(path)(ids[None]).logits[0]
    assert (logits - ref).abs().max().item() < 1e-4
