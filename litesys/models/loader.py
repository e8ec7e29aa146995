"""Read tensors (or this rank's slice of them) straight from safetensors files, single or sharded."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open


class Checkpoint:
    def __init__(self, path: Path):
        self.path = Path(path)
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
        else:
            files = sorted(self.path.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"no *.safetensors weights in {self.path}; point --model at a checkpoint "
                                        "directory saved with safetensors")
            weight_map = {}
            for f in files:
                with safe_open(f, framework="pt") as h:
                    weight_map.update({k: f.name for k in h.keys()})
        self.weight_map: dict[str, str] = weight_map
        self._handles: dict[str, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def _handle(self, name: str):
        if name not in self.weight_map:
            raise KeyError(f"tensor {name!r} missing from checkpoint {self.path}")
        f = self.weight_map[name]
        if f not in self._handles:
            self._handles[f] = safe_open(self.path / f, framework="pt")
        return self._handles[f]

    def get(self, name: str, dim: int | None = None, start: int | None = None, stop: int | None = None
            ) -> torch.Tensor:
        """Whole tensor, or only rows/columns ``[start, stop)`` along ``dim`` (read without loading the rest)."""
        h = self._handle(name)
        if dim is None or start is None:
            return h.get_tensor(name)
        sl = h.get_slice(name)
        idx = [slice(None)] * len(sl.get_shape())
        idx[dim] = slice(start, stop)
        return sl[tuple(idx)]

    def shape(self, name: str) -> list[int]:
        return list(self._handle(name).get_slice(name).get_shape())

    def close(self) -> None:
        self._handles.clear()
