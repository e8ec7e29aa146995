"""FP8 (e4m3) KV cache: the storage dtype, per-(layer, KV head) scales, and the PyTorch quantise/dequantise.

A stored value is ``x8 = clamp(x / scale, -448, 448)`` rounded to ``float8_e4m3fn`` (round to nearest even); a
read is ``x8 * scale`` in fp32 (every read path does it in registers; ``dequantize`` is the reference). Scales
come from ``kv_scales=`` (given), or from the first prefill that writes a layer (calibrated):
``scale = CALIBRATION_MARGIN * amax / 448`` over that prefill's tokens and the head's dimensions. See
docs/kv_fp8.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from litesys.kernels.common import FP8_MAX, transposed_pages

KV_CACHE_DTYPES = ("auto", "fp8_e4m3")
FP8_DTYPE = torch.float8_e4m3fn
# Headroom for later prompts whose K/V exceed the first prefill's: values up to 2x its amax stay unclipped. It
# costs one binade at the bottom of e4m3's 2^-9..448 range (values below ~2^-8 * amax lose precision); the relative
# step (3 mantissa bits) is the same everywhere else.
CALIBRATION_MARGIN = 2.0


def storage_dtype(kv_cache_dtype: str, model_dtype: torch.dtype) -> torch.dtype:
    """The pages' dtype: ``auto`` = the model dtype, ``fp8_e4m3`` = float8_e4m3fn."""
    if kv_cache_dtype == "auto":
        return model_dtype
    if kv_cache_dtype == "fp8_e4m3":
        return FP8_DTYPE
    raise ValueError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, got {kv_cache_dtype!r}")


def is_fp8(dtype: torch.dtype) -> bool:
    return dtype == FP8_DTYPE


def page_size(kv_dtype: torch.dtype) -> int:
    """Default tokens per page: 16, fp8 pages 64. fp8 V pages are transposed (``v_pages``), so a page holds each
    dimension's slots as one run of page_size bytes: 16-byte runs held the fused decode to 62-71% of copy bandwidth
    on the H200, 64-byte runs reach 77-88% (results/h200_session5.json, ``fp8_page_size``). 16-bit pages gain
    nothing from larger pages there (their rows are 256 contiguous bytes) and keep the finer prefix-cache grain."""
    return 64 if is_fp8(kv_dtype) else 16


def quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [T, Hkv, D] (any float dtype), scale [Hkv] fp32 -> float8_e4m3fn, clamped to +-448; NaN -> 0 (pages hold
    no NaN bytes, as ``kernels/kv_write.py`` stores them)."""
    return (x.float() / scale[:, None]).nan_to_num_(0.0, FP8_MAX, -FP8_MAX).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def dequantize(x8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x8 [..., Hkv, D] float8 -> fp32 ``x8 * scale`` (scale [Hkv])."""
    return x8.float() * scale[:, None]


def v_pages(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """Zeroed V pages ``[layers, pages, page_size, Hkv, D]``: fp8 ones stored transposed (``[..., Hkv, D, page_size]``,
    ``kernels.common.transposed_pages``: P·V reads contiguous slots), other dtypes as shaped."""
    if is_fp8(dtype):
        return transposed_pages(shape, dtype, device)
    return torch.zeros(shape, dtype=dtype, device=device)


def calibrate(x: torch.Tensor) -> torch.Tensor:
    """[Hkv] fp32 scales for x [T, Hkv, D]: margin * amax / 448 per head (a head of zeros gets 1/448)."""
    amax = x.detach().float().abs().amax(dim=(0, 2))
    return torch.where(amax > 0, amax * (CALIBRATION_MARGIN / FP8_MAX), 1.0 / FP8_MAX)


def load_scales(spec, num_layers: int, num_kv_heads: int, heads: tuple[int, int] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``kv_scales=`` -> (k_scale, v_scale), each [num_layers, local KV heads] fp32 on the CPU.

    ``spec``: a JSON file path, a dict ``{"k_scale": ..., "v_scale": ...}`` (each a number, a per-layer list, or a
    [layers][KV heads] nested list), or a tensor [2, layers, KV heads]. ``heads``: this rank's [start, stop) of
    the model's KV heads (tensor parallelism); the file holds all ``num_kv_heads`` of the checkpoint.
    """
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"kv_scales file {path} does not exist; pass a JSON file with k_scale/v_scale")
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"kv_scales file {path} is not valid JSON ({e})") from None
    if isinstance(spec, torch.Tensor):
        if spec.dim() != 3 or spec.shape[0] != 2:
            raise ValueError(f"kv_scales tensor must be [2, layers, KV heads], got {list(spec.shape)}")
        spec = {"k_scale": spec[0], "v_scale": spec[1]}
    if not isinstance(spec, dict) or not {"k_scale", "v_scale"} <= set(spec):
        raise ValueError("kv_scales must be a dict (or JSON file) with 'k_scale' and 'v_scale', or a "
                         "[2, layers, KV heads] tensor")
    out = []
    for key in ("k_scale", "v_scale"):
        t = torch.as_tensor(spec[key], dtype=torch.float32)
        if t.dim() == 1 and t.shape[0] == num_layers:  # one scale per layer
            t = t[:, None].expand(num_layers, num_kv_heads)
        elif t.dim() == 0:
            t = t.expand(num_layers, num_kv_heads)
        if tuple(t.shape) != (num_layers, num_kv_heads):
            raise ValueError(f"kv_scales {key} has shape {list(t.shape)}; expected [{num_layers}, {num_kv_heads}] "
                             f"(layers, KV heads), [{num_layers}] or a number")
        if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
            raise ValueError(f"kv_scales {key} must be finite and > 0")
        if heads is not None:
            t = t[:, heads[0]:heads[1]]
        out.append(t.contiguous().clone())
    return out[0], out[1]


def scales_to_json(k_scale: torch.Tensor, v_scale: torch.Tensor) -> dict:
    """The scales as ``kv_scales=`` / the JSON file takes them ([layers][KV heads] lists)."""
    return {"k_scale": k_scale.cpu().tolist(), "v_scale": v_scale.cpu().tolist()}
