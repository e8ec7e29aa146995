"""The split-KV merge folded into the split launch (``decode_merge.fold_merge``) vs the merge kernel it replaces: the
same bits on bf16 and fp8 pages (converting and tensor-core paths), the softmax·V path and deterministic mode, one
launch, the counters left at zero; and both against the PyTorch reference (CPU through TRITON_INTERPRET=1)."""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton kernels need the triton package")

from litesys.attention import kv_fp8  # noqa: E402
from litesys.kernels import decode  # noqa: E402
from litesys.kernels.common import to_transposed_pages  # noqa: E402
from litesys.kernels.launch import DecodeConfig  # noqa: E402
from litesys.kernels.ref import ops_torch as ref  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
# ragged rows: length 0 (a padded graph row: zeros), rows that leave trailing splits empty, rows across pages
LENGTHS = [0, 1, 17, 40, 70]
PAGE = 8


def case(hq: int, hkv: int, d: int, fp8: bool, seed: int) -> dict:
    """Shuffled pages of random K/V (fp8: quantised with per-head scales, V also in the pool's transposed layout)."""
    g = torch.Generator().manual_seed(seed)
    n_used = [(n + PAGE - 1) // PAGE for n in LENGTHS]
    num_pages = 1 + sum(n_used)
    ids = (torch.randperm(num_pages - 1, generator=g) + 1).tolist()
    pt = torch.zeros(len(LENGTHS), max(n_used) + 1, dtype=torch.int32)
    for i, n in enumerate(n_used):
        pt[i, :n] = torch.tensor(ids[:n], dtype=torch.int32)
        ids = ids[n:]
    k = torch.randn(num_pages, PAGE, hkv, d, generator=g)
    v = torch.randn(num_pages, PAGE, hkv, d, generator=g)
    q = torch.randn(len(LENGTHS), hq, d, generator=g).to(torch.bfloat16)
    c = dict(q=q, pt=pt, lens=torch.tensor(LENGTHS, dtype=torch.int32), scale=d ** -0.5, ks=None, vs=None)
    if fp8:
        ks, vs = torch.rand(hkv, generator=g) * 0.02 + 0.005, torch.rand(hkv, generator=g) * 0.02 + 0.005
        k8 = kv_fp8.quantize(k.view(-1, hkv, d), ks).view(k.shape)
        v8 = kv_fp8.quantize(v.view(-1, hkv, d), vs).view(v.shape)
        c.update(kc=k8, vc=v8, ks=ks, vs=vs, kref=kv_fp8.dequantize(k8, ks), vref=kv_fp8.dequantize(v8, vs))
    else:
        kb, vb = k.to(torch.bfloat16), v.to(torch.bfloat16)
        c.update(kc=kb, vc=vb, kref=kb.float(), vref=vb.float())
    dev = {n: (x.to(DEVICE) if x is not None else None) for n, x in c.items() if isinstance(x, torch.Tensor)}
    if fp8:
        dev["vc_t"] = to_transposed_pages(dev["vc"])
    c["dev"] = dev
    return c


def reference(c: dict) -> torch.Tensor:
    lens = c["lens"].clamp(min=1)  # the reference gives NaN at length 0; the kernels give zeros
    out = ref.paged_decode_fused(c["q"].float(), c["kref"], c["vref"], c["pt"], lens, c["scale"], max(LENGTHS))
    return torch.where((c["lens"] == 0)[:, None, None], 0.0, out)


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.double() - expected.double()).norm() / expected.double().norm()).item()


def both(fn, cfg: DecodeConfig, monkeypatch) -> tuple[torch.Tensor, torch.Tensor]:
    """``fn(cfg)`` through the merge kernel, then folded (the merge kernel must not run); the counters stay zero."""
    old = fn(dataclasses.replace(cfg, fold_merge=False)).cpu()
    with monkeypatch.context() as m:
        m.setattr(decode, "decode_merge", lambda *a, **k: pytest.fail("the folded path launched the merge kernel"))
        new = fn(dataclasses.replace(cfg, fold_merge=True)).cpu()
    assert not (decode.merge_counter(torch.device(DEVICE), 1) != 0).any()
    return old, new


def splits(c: dict, cfg: DecodeConfig, fp8: bool) -> int:
    d, cfg = c["dev"], cfg.for_fp8() if fp8 else cfg
    resident = cfg.fp8_resident_per_sm if fp8 else cfg.resident_per_sm
    return decode._workspace(len(LENGTHS), c["q"].shape[1], c["q"].shape[2], d["pt"], PAGE, c["kc"].shape[2],
                             torch.device(DEVICE), cfg, resident)[0]


@pytest.mark.parametrize("group,max_splits,split_tokens", [(2, 2, 0), (4, 3, 0), (8, 5, 0), (4, 64, 16)],
                         ids=["g2-2-splits", "g4-3-splits", "g8-5-splits", "g4-deterministic"])
def test_fold_is_bit_identical_bf16(group: int, max_splits: int, split_tokens: int, monkeypatch) -> None:
    """16-bit pages, fused and softmax·V paths: the folded merge gives the merge kernel's bits (same partials, same
    split order, same arithmetic), and both are within bf16 rounding of the reference."""
    c = case(group, 1, 16, fp8=False, seed=group + max_splits)
    d = c["dev"]
    cfg = DecodeConfig(programs_per_sm=64, max_splits=max_splits, block_n=16, split_tokens=split_tokens)
    assert splits(c, cfg, False) == (5 if split_tokens else max_splits)  # the table holds 80 tokens: 5 x 16
    old, new = both(lambda k: decode.fused(d["q"], d["kc"], d["vc"], d["pt"], d["lens"], c["scale"], k), cfg,
                    monkeypatch)
    assert torch.equal(old, new)
    assert (new[0] == 0).all() and not new.isnan().any()
    assert rel_err(new, reference(c)) < 1e-2
    logits = decode.logits(d["q"], d["kc"], d["pt"], d["lens"], c["scale"], max(LENGTHS), cfg)
    old, new = both(lambda k: decode.softmax_v(logits, d["vc"], d["pt"], d["lens"], k), cfg, monkeypatch)
    assert torch.equal(old, new) and (new[0] == 0).all()
    assert rel_err(new, reference(c)) < 1e-2


@pytest.mark.parametrize("group,fp8_mma,split_tokens", [(2, False, 0), (8, False, 32), (2, True, 32), (8, True, 0)],
                         ids=["g2-converted", "g8-converted-deterministic", "g2-tensor-cores-deterministic",
                              "g8-tensor-cores"])
def test_fold_is_bit_identical_fp8(group: int, fp8_mma: bool, split_tokens: int, monkeypatch) -> None:
    """fp8 pages (transposed V; the converting kernel also on token-major V), both fp8 kernels and softmax·V."""
    c = case(group, 1, 32, fp8=True, seed=3 * group + fp8_mma)
    d = c["dev"]
    cfg = DecodeConfig(programs_per_sm=64, max_splits=3, block_n=32, fp8_mma=fp8_mma, split_tokens=split_tokens)
    assert splits(c, cfg, True) == 3
    for vc in (d["vc_t"],) if fp8_mma else (d["vc_t"], d["vc"]):
        old, new = both(lambda k, vc=vc: decode.fused(d["q"], d["kc"], vc, d["pt"], d["lens"], c["scale"], k,
                                                       k_scale=d["ks"], v_scale=d["vs"]), cfg, monkeypatch)
        assert torch.equal(old, new) and (new[0] == 0).all() and not new.isnan().any()
        assert rel_err(new, reference(c)) < 1e-2
    logits = decode.logits(d["q"], d["kc"], d["pt"], d["lens"], c["scale"], max(LENGTHS), cfg, k_scale=d["ks"])
    old, new = both(lambda k: decode.softmax_v(logits, d["vc_t"], d["pt"], d["lens"], k, v_scale=d["vs"],
                                               out_dtype=torch.bfloat16), cfg, monkeypatch)
    assert torch.equal(old, new) and (new[0] == 0).all()
    assert rel_err(new, reference(c)) < 1e-2


def test_merge_counter_is_made_once_and_grown() -> None:
    """One zeroed buffer per device, reused while large enough, replaced by a larger zeroed one when a launch needs
    more (the engine's eager warm-up of each graph bucket grows it before any capture)."""
    dev = torch.device(DEVICE)
    first = decode.merge_counter(dev, 4)
    assert first.dtype == torch.int32 and first.numel() >= 4 and not first.any()
    assert decode.merge_counter(dev, first.numel()) is first
    grown = decode.merge_counter(dev, first.numel() + 1)
    assert grown is not first and grown.numel() >= first.numel() + 1 and not grown.any()
    assert decode.merge_counter(dev, 1) is grown
