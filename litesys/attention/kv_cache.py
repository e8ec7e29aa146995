"""Paged KV pool: fixed-size pages shared by all layers, a ref-counted page allocator.

Layout: ``k``/``v`` are ``[num_layers, num_pages, page_size, num_kv_heads, head_dim]``; layer ``l`` uses
``k[l]`` (contiguous ``[P, page, Hkv, D]``). A token at position ``i`` of a sequence lives in page
``page_table[i // page_size]`` at offset ``i % page_size``; its flat slot is ``page * page_size + offset``.
"""
from __future__ import annotations

import torch


class PageAllocator:
    """Free list plus reference counts, so the ``n`` samples of one prompt can share its full pages."""

    def __init__(self, num_pages: int, reserved: int = 1):
        # Page 0 is a scratch page that is never handed out: padded rows of a CUDA-graph batch write there.
        self.num_pages = num_pages
        self.free: list[int] = list(range(num_pages - 1, reserved - 1, -1))  # pop() hands out low ids first
        self.refcount = [0] * num_pages

    @property
    def num_free(self) -> int:
        return len(self.free)

    def alloc(self, n: int) -> list[int]:
        if n > len(self.free):
            raise RuntimeError(f"KV pool exhausted: need {n} pages, {len(self.free)} free")
        pages = [self.free.pop() for _ in range(n)]
        for p in pages:
            self.refcount[p] = 1
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
                 dtype: torch.dtype, device: torch.device | str):
        shape = (num_layers, num_pages, page_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_layers, self.num_pages, self.page_size = num_layers, num_pages, page_size
        self.num_kv_heads, self.head_dim = num_kv_heads, head_dim
        self.allocator = PageAllocator(num_pages)

    @staticmethod
    def bytes_per_page(num_layers: int, page_size: int, num_kv_heads: int, head_dim: int,
                       dtype: torch.dtype) -> int:
        return 2 * num_layers * page_size * num_kv_heads * head_dim * torch.finfo(dtype).bits // 8

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor) -> None:
        """Store new tokens' K/V ([T, Hkv, D]) at their flat slots (negative slot = padding, skipped)."""
        kc = self.k[layer].view(-1, self.num_kv_heads, self.head_dim)
        vc = self.v[layer].view(-1, self.num_kv_heads, self.head_dim)
        # Padding rows (CUDA-graph buckets) point at the scratch page 0, so no mask is needed here.
        kc.index_copy_(0, slot_mapping, k.to(kc.dtype))
        vc.index_copy_(0, slot_mapping, v.to(vc.dtype))

    def copy_page(self, src: int, dst: int) -> None:
        """Copy-on-write of a partially filled shared page (all layers)."""
        self.k[:, dst].copy_(self.k[:, src])
        self.v[:, dst].copy_(self.v[:, src])
