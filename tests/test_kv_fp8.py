"""FP8 KV cache: quantisation by hand, every read kernel vs quantise -> dequantise -> the plain ops_torch reference
(on CPU through TRITON_INTERPRET=1), the engine with fp8 pages vs transformers, the memory plan, and resume."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

if not torch.cuda.is_available():  # must be set before the kernels are defined
    os.environ["TRITON_INTERPRET"] = "1"
pytest.importorskip("triton", reason="Triton kernels need the triton package")

from litesys.attention import kv_fp8  # noqa: E402
from litesys.attention.kv_cache import KVCache  # noqa: E402
from litesys.kernels import decode, ops_triton  # noqa: E402
from litesys.kernels import quest as quest_triton
from litesys.kernels.common import to_transposed_pages, v_layout  # noqa: E402
from litesys.kernels.decode_split import fp8_mma_fits  # noqa: E402
from litesys.kernels.kv_write import write  # noqa: E402
from litesys.kernels.launch import DecodeConfig  # noqa: E402
from litesys.kernels.ref import ops_torch as ref  # noqa: E402
from litesys.kernels.ref import quest as quest_torch  # noqa: E402

DEVICE = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
SMALL = DecodeConfig(programs_per_sm=64, max_splits=4, block_n=16, logits_chunk=32, logits_block_n=16)
F8 = torch.float8_e4m3fn


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.double() - expected.double()).norm() / expected.double().norm()).item()


# ---------------------------------------------------------------- quantisation, by hand


def test_quantize_rounds_to_e4m3_and_clamps() -> None:
    x = torch.tensor([[[0.0, 1.0, 0.3, -0.3, 1000.0, -1000.0, 2 ** -10, 17.0]]])  # [T=1, H=1, D=8]
    q8 = kv_fp8.quantize(x, torch.tensor([1.0]))
    assert q8.dtype == F8
    # e4m3 near 0.3: 0.28125 and 0.3125 (step 2^-5); 17 lies between 16 and 18 (step 2): ties go to even (16)
    assert q8.float().tolist() == [[[0.0, 1.0, 0.3125, -0.3125, 448.0, -448.0, 0.0, 16.0]]]
    # scale 2: values are stored halved and read back doubled
    assert kv_fp8.dequantize(kv_fp8.quantize(x, torch.tensor([2.0])), torch.tensor([2.0])).tolist()[0][0][:5] == \
        [0.0, 1.0, 0.3125, -0.3125, 896.0]


def test_calibration_is_margin_times_amax_over_448() -> None:
    x = torch.zeros(3, 2, 4)
    x[1, 0, 2] = -7.0
    x[2, 0, 0] = 5.0
    assert kv_fp8.calibrate(x).tolist() == pytest.approx([2.0 * 7.0 / 448.0, 1.0 / 448.0])  # head 1 is all zeros
    s = kv_fp8.calibrate(x)
    assert kv_fp8.quantize(x, s)[1, 0, 2].float().item() == -224.0  # amax lands at 448 / margin: headroom kept


def test_load_scales_forms_and_errors(tmp_path) -> None:
    ks, vs = kv_fp8.load_scales({"k_scale": 0.5, "v_scale": [0.1, 0.2]}, 2, 4)
    assert ks.shape == (2, 4) and (ks == 0.5).all() and vs[:, 0].tolist() == pytest.approx([0.1, 0.2])
    t = torch.rand(2, 3, 4) + 0.1
    path = tmp_path / "s.json"
    path.write_text(json.dumps(kv_fp8.scales_to_json(t[0], t[1])))
    ks, vs = kv_fp8.load_scales(str(path), 3, 4, heads=(1, 3))  # a TP rank holding KV heads 1 and 2
    assert torch.equal(ks, t[0][:, 1:3]) and torch.equal(vs, t[1][:, 1:3])
    with pytest.raises(ValueError, match="expected \\[3, 4\\]"):
        kv_fp8.load_scales({"k_scale": [[1.0]], "v_scale": 1.0}, 3, 4)
    with pytest.raises(ValueError, match="> 0"):
        kv_fp8.load_scales({"k_scale": 0.0, "v_scale": 1.0}, 3, 4)
    with pytest.raises(FileNotFoundError, match="kv_scales file"):
        kv_fp8.load_scales(str(tmp_path / "missing.json"), 3, 4)
    with pytest.raises(ValueError, match="kv_cache_dtype must be one of"):
        kv_fp8.storage_dtype("fp8", torch.bfloat16)


def test_write_kernel_stores_what_quantize_gives() -> None:
    """The Triton write (decode steps) and the torch write (prefill) store the same bytes; padding is skipped."""
    g = torch.Generator().manual_seed(0)
    t, hkv, d, pages, page = 7, 2, 16, 4, 4
    k = torch.randn(t, hkv, d, generator=g) * 30  # some values past 448 * scale: clamped
    k[0] *= 1e-4  # e4m3 subnormals (below 2^-6 * scale)
    v = torch.randn(t, hkv, d, generator=g)
    kv = KVCache(1, pages, page, hkv, d, torch.float32, "cpu", kv_dtype=F8)
    kv.k_scale[0] = torch.tensor([0.05, 0.2])
    kv.v_scale[0] = torch.tensor([0.01, 0.02])
    slots = torch.tensor([4, 5, 6, -1, 9, 15, 8])
    keep = slots >= 0
    kv.write(0, k[keep], v[keep], slots[keep])  # CPU tensors: the torch path (the engine never passes padding)
    expect_k, expect_v = kv.k.clone(), kv.v.clone()
    kc = torch.full_like(kv.k[0].view(torch.uint8), 0x7F).view(F8).to(DEVICE)  # NaN: untouched slots stay NaN
    vc = to_transposed_pages(kc)  # V pages as the pool holds them: [P, Hkv, D, page] under the usual shape
    assert kv.v.stride()[2] == 1 and vc.stride(1) == 1  # slots contiguous, in the pool too
    write(k.to(DEVICE), v.to(DEVICE), kc, vc, slots.to(DEVICE), kv.k_scale[0].to(DEVICE), kv.v_scale[0].to(DEVICE))
    flat = slots[slots >= 0]
    for got, want in ((kc, expect_k[0]), (vc, expect_v[0])):  # reshape: the logical order, whatever the strides
        assert torch.equal(got.cpu().view(torch.uint8).reshape(-1, hkv, d)[flat],
                           want.view(torch.uint8).reshape(-1, hkv, d)[flat])
    others = torch.ones(pages * page, dtype=torch.bool)
    others[flat] = False
    assert kc.cpu().view(-1, hkv, d)[others].float().isnan().all()
    assert vc.cpu().view(torch.uint8).reshape(-1, hkv, d)[others].view(F8).float().isnan().all()
    assert expect_k.float().abs().max() == 448  # clamped, not inf/NaN


# ---------------------------------------------------------------- read kernels vs the dequantised reference


def fp8_case(lengths: list[int], hq: int, hkv: int, d: int, page: int, qdtype: torch.dtype, seed: int = 0,
             v_poison: float = float("nan")) -> dict:
    """An fp8 cache with shuffled pages and per-head scales; NaN bytes wherever nothing may be read (transposed V
    pages read them, with weight 0: the kernels must drop them, not compute 0 x NaN). ``v_poison``: V's bytes there
    instead (the tensor-core path multiplies them by their 0 weight: pages never hold NaN, a finite one must vanish)."""
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    n_used = [(n + page - 1) // page for n in lengths]
    num_pages = 2 + sum(n_used)
    poison = num_pages - 1
    ids = (torch.randperm(num_pages - 2, generator=g) + 1).tolist()
    pt = torch.full((b, max(n_used) + 1), poison, dtype=torch.int32)
    for i, n in enumerate(n_used):
        pt[i, :n] = torch.tensor(ids[:n], dtype=torch.int32)
        ids = ids[n:]
    ks, vs = torch.rand(hkv, generator=g) * 0.02 + 0.005, torch.rand(hkv, generator=g) * 0.02 + 0.005
    k = torch.randn(num_pages, page, hkv, d, generator=g) * (torch.arange(hkv) + 1.0)[:, None]  # per-head ranges
    v = torch.randn(num_pages, page, hkv, d, generator=g)
    kc8 = kv_fp8.quantize(k.view(-1, hkv, d), ks).view(k.shape)
    vc8 = kv_fp8.quantize(v.view(-1, hkv, d), vs).view(v.shape)
    kdq = kv_fp8.dequantize(kc8, ks)  # the reference reads these fp32 values through the plain ops_torch
    vdq = kv_fp8.dequantize(vc8, vs)
    kp, vp = kc8.clone(), vc8.clone()
    nan, vbad = torch.tensor(float("nan")).to(F8), torch.tensor(v_poison).to(F8)
    kp[poison], vp[poison] = nan, vbad
    for i, n in enumerate(lengths):
        if n % page:
            kp[pt[i, n // page], n % page:], vp[pt[i, n // page], n % page:] = nan, vbad
    q = torch.randn(b, hq, d, generator=g).to(qdtype)
    lens = torch.tensor(lengths, dtype=torch.int32)
    dev = {n: x.to(DEVICE) for n, x in dict(q=q, kc=kp, vc_rows=vp, pt=pt, lens=lens, ks=ks, vs=vs).items()}
    dev["vc"] = to_transposed_pages(dev["vc_rows"])  # the pool's fp8 V layout; vc_rows: token-major, as bf16 pages
    return dict(q=q, k=k, v=v, kc8=kc8, vc8=vc8, kdq=kdq, vdq=vdq, pt=pt, lens=lens, ks=ks, vs=vs, dev=dev,
                scale=d ** -0.5, max_len=max(lengths))


TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}
LENGTHS = [1, 15, 16, 17, 40]


# fp8 splits that fill whole waves: 10 (sequence, KV head) pairs, 4 resident programs (CPU: 1 SM) -> 2 splits
WAVES = DecodeConfig(max_splits=4, block_n=16, fp8_resident_per_sm=4)


def test_v_layouts() -> None:
    """The pool's fp8 V pages are transposed under the usual shape; kernels tell the layouts apart by the strides."""
    kv = KVCache(2, 3, 16, 2, 8, torch.float32, "cpu", kv_dtype=F8)
    assert kv.v.shape == kv.k.shape and kv.v[1].stride() == (256, 1, 128, 16)
    assert v_layout(kv.v[1], 128) == ((256, 1, 128, 16), True, 16) and v_layout(kv.k[1], 128)[1:] == (False, 1)
    assert v_layout(to_transposed_pages(torch.zeros(3, 4, 2, 8).to(F8)), 128)[2] == 4  # vectors within a page
    with pytest.raises(ValueError, match="pass v_cache.contiguous"):  # transposed bf16: no NaN guard for it
        v_layout(to_transposed_pages(torch.zeros(3, 16, 2, 8)), 64)


def test_wave_splits_by_hand() -> None:
    # 256 pairs, 396 slots (H200: 132 SMs x 3): cost ceil(256 s / 396) / s = 1, 1, 2/3, 3/4, 4/5 for s = 1..5
    # (5 = the first count with 3 waves): 3 splits; 512 pairs: 2, 3/2, 4/3 for s = 1..3 -> 3
    assert decode.wave_splits(256, 396, 64) == 3 and decode.wave_splits(512, 396, 64) == 3
    assert decode.wave_splits(256, 396, 2) == 2  # 1 (one wave) and 2 (two) cost the same: two waves win
    # 528 slots (4 per SM): 256 pairs cost 1, 1/2, 2/3, 1/2, 3/5, 1/2, 4/7 for s = 1..7 -> 4, the fewest with 2 waves;
    # 512 pairs (Qwen3-0.6B heads, 64 sequences): 1, 1, 1 for s = 1..3 -> 2
    assert decode.wave_splits(256, 528, 64) == 4 and decode.wave_splits(512, 528, 64) == 2
    assert decode.wave_splits(3, 528, 1) == 1  # no count gives two waves: the fewest
    assert decode.wave_splits(10, 4, 4) == 2 and decode.wave_splits(1, 1, 1) == 1
    assert decode.wave_splits(8, 396, 64) == 49  # one short batch: 392 of 396 slots in one wave


@pytest.mark.parametrize("qdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group,cfg", [(1, SMALL), (4, SMALL), (2, None), (2, WAVES)],
                         ids=["g1", "g4", "g2-default", "g2-waves"])
def test_fused_decode_fp8(qdtype: torch.dtype, group: int, cfg: DecodeConfig | None) -> None:
    c = fp8_case(LENGTHS, hq=2 * group, hkv=2, d=16, page=8, qdtype=qdtype, seed=group)
    d = c["dev"]
    expected = ref.paged_decode_fused(c["q"].float(), c["kdq"], c["vdq"], c["pt"], c["lens"], c["scale"],
                                      c["max_len"])
    for vc in (d["vc"], d["vc_rows"]) if cfg is None else (d["vc"],):  # both V layouts read the same values
        out = decode.fused(d["q"], d["kc"], vc, d["pt"], d["lens"], c["scale"], cfg or decode.DECODE,
                           k_scale=d["ks"], v_scale=d["vs"]).cpu()
        assert out.dtype == qdtype and not out.isnan().any()
        assert rel_err(out, expected) < TOL[qdtype]
    # the torch path's own fp8 branch is the same reference
    mine = ref.paged_decode_fused(c["q"].float(), c["kc8"], c["vc8"], c["pt"], c["lens"], c["scale"], c["max_len"],
                                  c["ks"], c["vs"])
    assert rel_err(mine, expected) < 1e-6


@pytest.mark.parametrize("group,d,block_n", [(4, 32, 32), (2, 64, 64), (4, 128, 128)],
                         ids=["g4-d32", "g2-d64", "g4-d128"])
def test_fused_decode_fp8_tensor_cores(group: int, d: int, block_n: int) -> None:
    """The e4m3 tensor-core path (q and P as two e4m3 terms, blocks_fp8) stays within bf16 rounding of the dequantised
    reference, as the converting path does, and far inside what a one-term e4m3 q would cost; garbage V bytes past
    each length (the largest e4m3 value) and NaN K bytes there change nothing."""
    c = fp8_case([1, 15, 16, 17, 40, 70, 129], hq=2 * group, hkv=2, d=d, page=8, qdtype=torch.bfloat16, seed=d,
                 v_poison=448.0)
    dv = c["dev"]
    assert fp8_mma_fits(dv["vc"], block_n) and not fp8_mma_fits(dv["vc_rows"], block_n)
    expected = ref.paged_decode_fused(c["q"].float(), c["kdq"], c["vdq"], c["pt"], c["lens"], c["scale"],
                                      c["max_len"])
    q = c["q"].float()
    qs = q.abs().amax(-1, keepdim=True) / 448
    q1 = (q / qs).to(F8).float() * qs  # q as one e4m3 term per value
    one_term = ref.paged_decode_fused(q1, c["kdq"], c["vdq"], c["pt"], c["lens"], c["scale"], c["max_len"])
    for cfg in (DecodeConfig(max_splits=4, block_n=block_n, fp8_resident_per_sm=4, fp8_mma=True),
                DecodeConfig(max_splits=1, block_n=block_n, fp8_mma=True)):  # several splits + merge; one (direct)
        out = decode.fused(dv["q"], dv["kc"], dv["vc"], dv["pt"], dv["lens"], c["scale"], cfg, k_scale=dv["ks"],
                           v_scale=dv["vs"]).cpu()
        assert out.dtype == torch.bfloat16 and not out.isnan().any()
        err = rel_err(out, expected)
        assert err < TOL[torch.bfloat16] and err < rel_err(one_term, expected) / 3, (err, rel_err(one_term, expected))


@pytest.mark.parametrize("mma", [False, True], ids=["converted", "tensor-cores"])
def test_fp8_l2_prefetch_changes_nothing(mma: bool) -> None:
    """``fp8_prefetch`` only asks L2 for blocks ahead (on the GPU; a no-op in the interpreter): same output, bit for
    bit, and the same reference error, whichever kernel and however many splits."""
    c = fp8_case([1, 15, 16, 17, 40, 70, 129], hq=8, hkv=2, d=32, page=8, qdtype=torch.bfloat16, seed=7,
                 v_poison=448.0 if mma else float("nan"))
    dv = c["dev"]
    expected = ref.paged_decode_fused(c["q"].float(), c["kdq"], c["vdq"], c["pt"], c["lens"], c["scale"],
                                      c["max_len"])
    for base in (DecodeConfig(max_splits=4, block_n=32, fp8_resident_per_sm=4, fp8_mma=mma),
                 DecodeConfig(max_splits=1, block_n=32, fp8_mma=mma)):
        outs = [decode.fused(dv["q"], dv["kc"], dv["vc"], dv["pt"], dv["lens"], c["scale"],
                             dataclasses.replace(base, fp8_prefetch=pf), k_scale=dv["ks"], v_scale=dv["vs"]).cpu()
                for pf in (0, 1, 2)]
        assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
        assert rel_err(outs[0], expected) < TOL[torch.bfloat16]


def test_fp8_error_is_fp8_rounding() -> None:
    """Against attention on the unquantised K/V, the fp8 output is off by about e4m3's relative step (2^-4)."""
    c = fp8_case([40, 33], hq=4, hkv=2, d=16, page=8, qdtype=torch.float32, seed=3)
    d = c["dev"]
    out = ops_triton.paged_decode_fused(d["q"], d["kc"], d["vc"], d["pt"], d["lens"], c["scale"], None,
                                        d["ks"], d["vs"]).cpu()
    exact = ref.paged_decode_fused(c["q"], c["k"], c["v"], c["pt"], c["lens"], c["scale"], c["max_len"])
    assert 1e-3 < rel_err(out, exact) < 2 ** -4


@pytest.mark.parametrize("qdtype", [torch.float32, torch.bfloat16])
def test_logits_and_softmax_v_fp8(qdtype: torch.dtype) -> None:
    """Processors see q·(k8 * k_scale) * scale, -inf past each length; softmax·V dequantises V in registers."""
    c = fp8_case(LENGTHS, hq=4, hkv=2, d=16, page=8, qdtype=qdtype, seed=5)
    d = c["dev"]
    width = c["max_len"] + 3
    logits = decode.logits(d["q"], d["kc"], d["pt"], d["lens"], c["scale"], width, SMALL, k_scale=d["ks"]).cpu()
    expected = ref.paged_decode_logits(c["q"].float(), c["kdq"], c["pt"], c["lens"], c["scale"], width)
    past = (torch.arange(width)[None, None, :] >= c["lens"][:, None, None]).expand_as(logits)
    assert (logits[past] == float("-inf")).all()
    assert rel_err(logits[~past], expected[~past]) < TOL[qdtype]
    logits[0, :, :1] = float("-inf")  # a processor's mask (row 0 has only this token: zeros)
    out = ops_triton.paged_softmax_v(logits.to(DEVICE), d["vc"], d["pt"], d["lens"], d["vs"], qdtype).cpu()
    assert out.dtype == qdtype and (out[0] == 0).all()
    exp_out = ref.paged_softmax_v(logits, c["vdq"], c["pt"], c["lens"])
    assert rel_err(out[1:], exp_out[1:]) < TOL[qdtype]
    # one split (the direct store) as well as several
    out2 = decode.softmax_v(logits.to(DEVICE), d["vc"], d["pt"], d["lens"], SMALL, d["vs"], qdtype).cpu()
    assert rel_err(out2[1:], exp_out[1:]) < TOL[qdtype]


@pytest.mark.parametrize("qdtype", [torch.float32, torch.bfloat16])
def test_prefill_fp8(qdtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    lengths, hq, hkv, d = [1, 17, 40], 4, 2, 16
    t = sum(lengths)
    q = torch.randn(t, hq, d, generator=g).to(qdtype)
    k, v = torch.randn(t, hkv, d, generator=g) * 3, torch.randn(t, hkv, d, generator=g)
    ks, vs = kv_fp8.calibrate(k), kv_fp8.calibrate(v)
    k8, v8 = kv_fp8.quantize(k, ks), kv_fp8.quantize(v, vs)
    cu = torch.tensor([0, 1, 18, 58], dtype=torch.int32)
    out = ops_triton.prefill_attention(q.to(DEVICE), k8.to(DEVICE), v8.to(DEVICE), cu.to(DEVICE), 40, d ** -0.5,
                                       ks.to(DEVICE), vs.to(DEVICE)).cpu()
    expected = ref.prefill_attention(q.float(), kv_fp8.dequantize(k8, ks), kv_fp8.dequantize(v8, vs), cu, 40,
                                     d ** -0.5)
    assert out.dtype == qdtype and rel_err(out, expected) < TOL[qdtype]
    mine = ref.prefill_attention(q.float(), k8, v8, cu, 40, d ** -0.5, ks, vs)
    assert rel_err(mine, expected) < 1e-6


def test_quest_fp8_summaries_and_decode() -> None:
    """Page summaries are the min/max of the dequantised keys; Quest decode dequantises the selected pages."""
    c = fp8_case([40, 33, 17], hq=4, hkv=2, d=16, page=8, qdtype=torch.float32, seed=9)
    d = c["dev"]
    kmin = torch.zeros(c["k"].shape[0], 2, 16)
    kmax = torch.zeros_like(kmin)
    slots = torch.tensor([int(c["pt"][i, (n - 1) // 8]) * 8 + (n - 1) % 8 for i, n in enumerate([40, 33, 17])])
    lo, hi = kmin.to(DEVICE), kmax.to(DEVICE)
    quest_triton.quest_update_summaries(d["kc"], slots.to(DEVICE), lo, hi, d["ks"])
    for s in slots.tolist():
        p, n = s // 8, s % 8 + 1
        assert torch.equal(lo.cpu()[p], c["kdq"][p, :n].amin(0)) and torch.equal(hi.cpu()[p], c["kdq"][p, :n].amax(0))
    sel = torch.tensor([[[0, 2, 4, -1], [1, 3, 4, -1]], [[0, 1, 4, -1], [0, 2, 3, 4]], [[0, 2, -1, -1]] * 2],
                       dtype=torch.int32)
    out = quest_triton.quest_decode(d["q"], d["kc"], d["vc"], d["pt"], d["lens"], sel.to(DEVICE), c["scale"],
                                    block_n=16, k_scale=d["ks"], v_scale=d["vs"]).cpu()
    expected = quest_torch.quest_decode(c["q"], c["kdq"], c["vdq"], c["pt"], c["lens"], sel, c["scale"])
    assert out.dtype == torch.float32 and rel_err(out, expected) < 1e-5
    mine = quest_torch.quest_decode(c["q"], c["kc8"], c["vc8"], c["pt"], c["lens"], sel, c["scale"], c["ks"], c["vs"])
    assert rel_err(mine, expected) < 1e-6


# ---------------------------------------------------------------- the engine with fp8 pages (tiny checkpoint, CPU)

# Documented bound (docs/kv_fp8.md): teacher-forced through prefill + decode steps, the fp8-KV logits of the tiny fp32
# checkpoint stay within 5% of the logits' standard deviation of transformers' (measured 2.7%: 0.108 vs std 4.0),
# with mean KL < 2e-4 nats (measured 3.7e-5) and the same top-1 token at >= 95% of positions (measured 100%).
LOGIT_ERR_OF_STD, MEAN_KL = 0.05, 2e-4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from checkpoints import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen3")


def llm(ckpt, **kw):
    from litesys import LLM

    return LLM(str(ckpt), device="cpu", dtype=torch.float32, max_seq_len=256, max_num_seqs=4, **kw)


def teacher_forced(model, tokens: list[int], prompt_len: int, kv_dtype: torch.dtype | None) -> torch.Tensor:
    """Logits at every position: one prefill of the first ``prompt_len`` tokens, then one decode step per token."""
    from litesys.attention.backend import Attention
    from litesys.attention.meta import AttnMeta

    cfg, page, n = model.cfg, 4, len(tokens)
    pages = n // page + 2
    kv = KVCache(cfg.num_layers, pages, page, model.num_kv_heads, cfg.head_dim, torch.float32, "cpu", kv_dtype)
    attn = Attention(kv, model.num_q_heads, model.num_kv_heads, cfg.head_dim, cfg.head_dim ** -0.5)
    slots, ids = torch.arange(page, page + n), torch.tensor(tokens)  # pages 1, 2, ... in order
    meta = AttnMeta(True, slots[:prompt_len], page, model.num_q_heads, model.num_kv_heads,
                    cu_seqlens=torch.tensor([0, prompt_len], dtype=torch.int32), max_seqlen=prompt_len)
    out = [model.compute_logits(model.forward(ids[:prompt_len], torch.arange(prompt_len), meta, attn))]
    table = torch.arange(1, pages, dtype=torch.int32)[None]
    for t in range(prompt_len, n):
        meta = AttnMeta(False, slots[t:t + 1], page, model.num_q_heads, model.num_kv_heads, page_table=table,
                        lengths=torch.tensor([t + 1], dtype=torch.int32), max_len=t + 1)
        out.append(model.compute_logits(model.forward(ids[t:t + 1], torch.tensor([t]), meta, attn)))
    return torch.cat(out)


@torch.inference_mode()
def test_fp8_logits_stay_within_the_documented_bound(ckpt) -> None:
    from checkpoints import load_hf

    tokens = torch.randint(0, 151000, (96,), generator=torch.Generator().manual_seed(0)).tolist()
    expected = load_hf(ckpt)(torch.tensor([tokens])).logits[0]
    model = llm(ckpt, num_kv_pages=4).model
    logits = teacher_forced(model, tokens, 32, F8)
    err = (logits - expected).abs()
    kl = torch.nn.functional.kl_div(logits.log_softmax(-1), expected.log_softmax(-1), log_target=True,
                                    reduction="none").sum(-1)
    assert 1e-3 < err.max() < LOGIT_ERR_OF_STD * expected.std()  # really quantised, and within the bound
    assert err[32:].max() > 1e-3  # the decode steps read fp8 pages too
    assert kl.mean() < MEAN_KL
    assert (logits.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.95
    exact = teacher_forced(model, tokens, 32, None)  # the same harness with full-precision pages: exact
    assert (exact - expected).abs().max() < 1e-4


def test_engine_fp8_greedy_matches_transformers(ckpt) -> None:
    from checkpoints import hf_greedy

    from litesys import SamplingParams

    prompts = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10] * 3, list(range(100, 137))]
    engine = llm(ckpt, kv_cache_dtype="fp8_e4m3", page_size=16)  # 16-token pages: the prompts fill whole ones
    assert engine.kv.k.dtype == F8 and engine.kv.k.element_size() == 1
    params = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True, repeat_check=False, n=2)
    outs = engine.generate(prompts, params)
    expected = hf_greedy(ckpt, prompts, 12)
    for out, exp in zip(outs, expected):
        assert [s.token_ids for s in out.samples] == [exp, exp]  # n=2: the second sample shares the prompt pages
    # scales: calibrated on the first prefill, margin * amax / 448 of some K, so neither 1 nor tiny
    assert all(engine.kv.calibrated) and bool(((engine.kv.k_scale > 1e-4) & (engine.kv.k_scale < 1)).all())


def test_fp8_pages_default_to_64_tokens(ckpt) -> None:
    from checkpoints import hf_greedy

    from litesys import SamplingParams

    assert llm(ckpt).kv.page_size == 16 and llm(ckpt, kv_cache_dtype="fp8_e4m3", page_size=32).kv.page_size == 32
    engine = llm(ckpt, kv_cache_dtype="fp8_e4m3")
    assert engine.kv.page_size == 64 and engine.kv.v[0].stride()[1] == 1  # transposed V: 64-byte runs of slots
    prompt = list(range(300, 370))  # 70 tokens: one whole page the two samples share, then a partial one
    params = SamplingParams(temperature=0, max_new_tokens=10, ignore_eos=True, repeat_check=False, n=2)
    out = engine.generate([prompt], params)[0]
    assert [s.token_ids for s in out.samples] == [hf_greedy(ckpt, [prompt], 10)[0]] * 2
    with pytest.raises(ValueError, match="page_size must be >= 1 or None"):
        llm(ckpt, page_size=0)


def test_given_scales_are_used_and_kept(ckpt, tmp_path) -> None:
    from litesys import SamplingParams

    path = tmp_path / "scales.json"
    path.write_text(json.dumps({"k_scale": [[0.02, 0.03], [0.02, 0.03]], "v_scale": 0.004}))
    engine = llm(ckpt, kv_cache_dtype="fp8_e4m3", kv_scales=str(path))
    engine.generate([[5, 6, 7, 8]], SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True))
    assert engine.kv.k_scale.tolist() == [[pytest.approx(0.02), pytest.approx(0.03)]] * 2
    assert (engine.kv.v_scale == torch.tensor(0.004)).all()


def test_quest_over_fp8_pages_follows_quest_over_full_pages(ckpt) -> None:
    from litesys import SamplingParams
    from litesys.attention.sparse.config import SparseConfig

    sparse = SparseConfig(quest_topk_blocks=2, quest_block_size=4, attn_sink=4, attn_local=4)
    prompt = list(range(200, 245))  # 12 pages: the selection really drops pages
    params = SamplingParams(temperature=0, max_new_tokens=8, ignore_eos=True, repeat_check=False)
    full = llm(ckpt, sparse=sparse).generate([prompt], params)[0].token_ids
    assert llm(ckpt, sparse=sparse, kv_cache_dtype="fp8_e4m3").generate([prompt], params)[0].token_ids == full


def test_memory_plan_counts_fp8_pages() -> None:
    from litesys.engine.memory import CPU_KV_BYTES, plan_kv_pages

    # the plan is a pure function of one page's bytes as stored (engine/build.py passes the KV dtype's)
    bf16 = plan_kv_pages(KVCache.bytes_per_page(2, 16, 2, 16, torch.bfloat16), 16, 1 << 20, 1024, 0.9, None)
    fp8 = plan_kv_pages(KVCache.bytes_per_page(2, 16, 2, 16, F8), 16, 1 << 20, 1024, 0.9, None)
    assert bf16 == CPU_KV_BYTES // (2 * 2 * 16 * 2 * 16 * 2) and fp8 == 2 * bf16  # K+V x layers x page x Hkv x D


def test_bad_kv_arguments_are_one_line_errors(ckpt) -> None:
    with pytest.raises(ValueError, match="kv_cache_dtype must be one of auto, fp8_e4m3"):
        llm(ckpt, kv_cache_dtype="int8")
    with pytest.raises(ValueError, match="kv_scales needs kv_cache_dtype='fp8_e4m3'"):
        llm(ckpt, kv_scales={"k_scale": 1.0, "v_scale": 1.0})
    with pytest.raises(ValueError, match="kv_scales k_scale has shape"):
        llm(ckpt, kv_cache_dtype="fp8_e4m3", kv_scales={"k_scale": [1.0, 1.0, 1.0], "v_scale": 1.0})


def test_resume_refuses_a_changed_kv_dtype(ckpt, tmp_path, capsys) -> None:
    from litesys.eval.tasks.math.main import main

    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(2)))
    out = tmp_path / "run"
    base = ["--model", str(ckpt), "--task", "custom", "--data-file", str(data), "--max_len", "256", "--gen_len", "4",
            "--device", "cpu", "--grade_workers", "1", "--output_dir", str(out)]
    assert main([*base, "--kv-cache-dtype", "fp8_e4m3"])["samples"] == 2
    assert json.loads((out / "run_config.json").read_text())["kv_cache_dtype"] == "fp8_e4m3"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(base)  # default: the model dtype
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "kv_cache_dtype: 'fp8_e4m3' there, None now" in err and "refusing to mix results" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*base, "--kv_cache_dtype", "fp8_e4m3"])["samples"] == 2  # the same flags resume
    with pytest.raises(SystemExit) as e:
        main([*base, "--kv_scales", str(tmp_path / "s.json")])  # scales without fp8: refused before anything runs
    assert e.value.code == 2 and "--kv_scales needs --kv_cache_dtype fp8_e4m3" in capsys.readouterr().err


@pytest.mark.gpu
def test_gpu_engine_fp8_pages_with_cuda_graphs(ckpt) -> None:
    """On the GPU: the Triton write kernel inside the decode graphs (captured before any calibration: the scales
    are updated in place), dense and Quest, greedy tokens vs bf16 pages."""
    from litesys import LLM, SamplingParams
    from litesys.attention.sparse.config import SparseConfig

    prompts = [list(range(300, 345)), [7, 8, 9] * 11]
    params = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True, repeat_check=False)
    for sparse in (None, SparseConfig(quest_topk_blocks=2, quest_block_size=4, attn_sink=4, attn_local=4)):
        kw = dict(device="cuda", dtype=torch.bfloat16, max_seq_len=128, max_num_seqs=4, sparse=sparse,
                  gpu_memory_utilization=0.2)
        bf16 = [o.token_ids for o in LLM(str(ckpt), **kw).generate(prompts, params)]
        engine = LLM(str(ckpt), kv_cache_dtype="fp8_e4m3", **kw)
        assert engine.engine.graphs is not None and engine.kv.k.dtype == F8
        fp8 = [o.token_ids for o in engine.generate(prompts, params)]
        assert all(engine.kv.calibrated) and float(engine.kv.k_scale.min()) < 1
        assert [t[:4] for t in fp8] == [t[:4] for t in bf16], (sparse, fp8, bf16)
