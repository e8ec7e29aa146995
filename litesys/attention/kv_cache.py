"""Paged KV pool ``k``/``v`` [num_layers, num_pages, page_size, Hkv, D] and its ref-counted page allocator; position
``i`` of a sequence is in page ``page_table[i // page_size]`` (docs/engine.md). fp8 pages hold ``K / k_scale``
with fp32 scales per (layer, KV head) (kv_fp8.py)."""
from __future__ import annotations

import torch

from litesys.attention import kv_fp8
from litesys.kernels.common import use_triton


class PageAllocator:
    """Free list plus reference counts, so the ``n`` samples of one prompt can share its full pages."""

    def __init__(self, num_pages: int, reserved: int = 1):
        # Page 0 is a scratch page that is never handed out: padded rows of a CUDA-graph batch write there.
        self.num_pages, self.reserved = num_pages, reserved
        self.reset()

    def reset(self) -> None:
        """Every page free again, as after construction (the engine's recovery after an error mid-run)."""
        self.free = list(range(self.num_pages - 1, self.reserved - 1, -1))  # pop() hands out low ids first
        self.refcount = [0] * self.num_pages

    clear = reset  # the prefix cache's allocator keeps its pages on reset, drops them on clear (prefix_cache.py)

    @property
    def num_free(self) -> int:
        return len(self.free)

    def alloc(self, n: int) -> list[int]:
        if n > len(self.free):
            raise RuntimeError(f"KV pool exhausted: need {n} pages, {len(self.free)} free")
        pages = [self.free.pop() for _ in range(n)]
        self.share(pages)  # free pages count 0 references
        return pages

    def share(self, pages: list[int]) -> None:
        for p in pages:
            self.refcount[p] += 1

    def release(self, pages: list[int]) -> None:
        for p in pages:
            self.refcount[p] -= 1
            if self.refcount[p] == 0:
                self.free.append(p)
            elif self.refcount[p] < 0:
                raise AssertionError(f"page {p} released twice")


class KVCache:
    def __init__(self, num_layers: int, num_pages: int, page_size: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str, kv_dtype: torch.dtype | None = None):
        shape = (num_layers, num_pages, page_size, num_kv_heads, head_dim)
        self.dtype = dtype  # the model's dtype: what reads dequantise to
        self.kv_dtype = kv_dtype or dtype  # what the pages hold
        self.fp8 = kv_fp8.is_fp8(self.kv_dtype)
        store = torch.uint8 if self.fp8 else dtype  # fp8: zero bytes viewed as fp8 zeros (no fp8 fill everywhere)
        self.k = torch.zeros(shape, dtype=store, device=device).view(self.kv_dtype)
        self.v = kv_fp8.v_pages(shape, self.kv_dtype, device)  # fp8: transposed pages (docs/kv_fp8.md)
        scale = dict(size=(num_layers, num_kv_heads), dtype=torch.float32, device=device)
        self.k_scale = torch.ones(**scale) if self.fp8 else None
        self.v_scale = torch.ones(**scale) if self.fp8 else None
        self.calibrated = [not self.fp8] * num_layers  # host flags: fp8 scales fixed (given or from a prefill)
        self.num_layers, self.num_pages, self.page_size = num_layers, num_pages, page_size
        self.num_kv_heads, self.head_dim = num_kv_heads, head_dim
        self.allocator = PageAllocator(num_pages)

    @staticmethod
    def bytes_per_page(num_layers: int, page_size: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype) -> int:
        """K+V bytes of one page (all layers) stored as ``dtype`` (fp8 scales are per layer, not per page)."""
        return 2 * num_layers * page_size * num_kv_heads * head_dim * torch.finfo(dtype).bits // 8

    def scales(self, layer: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(k_scale [Hkv], v_scale [Hkv]) of a layer for the read paths; (None, None) unless fp8."""
        return (self.k_scale[layer], self.v_scale[layer]) if self.fp8 else (None, None)

    def set_scales(self, k_scale: torch.Tensor, v_scale: torch.Tensor) -> None:
        """Fix every layer's scales ([num_layers, Hkv] as ``kv_fp8.load_scales`` checks them); no calibration."""
        self.k_scale.copy_(k_scale)
        self.v_scale.copy_(v_scale)
        self.calibrated = [True] * self.num_layers

    def calibrate(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """First prefill through ``layer``: fix its scales from these tokens' K/V (in place: graphs see them)."""
        if self.calibrated[layer] or k.shape[0] == 0:
            return
        self.k_scale[layer].copy_(kv_fp8.calibrate(k))
        self.v_scale[layer].copy_(kv_fp8.calibrate(v))
        self.calibrated[layer] = True

    def quantize(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """fp8 K/V [T, Hkv, D] of new tokens, exactly as ``write`` stores them."""
        return kv_fp8.quantize(k, self.k_scale[layer]), kv_fp8.quantize(v, self.v_scale[layer])

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        """Store new tokens' K/V ([T, Hkv, D]) at their flat slots (negative slot = padding, skipped)."""
        if use_triton(k) and self.head_dim & (self.head_dim - 1) == 0:  # one launch for K and V (fp8: in registers)
            from litesys.kernels import kv_write
            return kv_write.write(k, v, self.k[layer], self.v[layer], slot_mapping, *self.scales(layer))
        if self.fp8:
            return self.write_quantized(layer, *self.quantize(layer, k, v), slot_mapping)
        for cache, x in ((self.k, k), (self.v, v)):  # padding rows (graph buckets) write the scratch page 0: no mask
            cache[layer].view(-1, self.num_kv_heads, self.head_dim).index_copy_(0, slot_mapping, x.to(cache.dtype))

    def write_quantized(self, layer: int, k8: torch.Tensor, v8: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        """Store already-quantised fp8 K/V (``quantize``); index_copy_ has no fp8 kernel: copy the bytes."""
        for cache, x in ((self.k, k8), (self.v, v8)):  # V pages are transposed: index (page, slot), any strides
            cache[layer].view(torch.uint8)[slot_mapping // self.page_size, slot_mapping % self.page_size] = (
                x.view(torch.uint8))

    def copy_page(self, src: int, dst: int) -> None:
        """Copy-on-write of a partially filled shared page (all layers)."""
        self.k[:, dst].copy_(self.k[:, src])
        self.v[:, dst].copy_(self.v[:, src])
