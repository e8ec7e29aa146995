"""Read tensors (or this rank's slice of them) straight from safetensors files, single or sharded; or make random
ones of the shapes in a model's checkpoint table (benchmarks)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open


def open_safetensors(path: Path):
    """``safe_open`` with one-line errors naming the file (a truncated download fails here, at its header)."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} is missing (listed in model.safetensors.index.json); "
                                "download the checkpoint again")
    try:
        return safe_open(path, framework="pt")
    except Exception as e:  # SafetensorError: header too small, incomplete metadata, ...
        raise ValueError(f"cannot read weights file {path} ({e}); it is truncated or corrupt: download it "
                         "again") from None


class Checkpoint:
    def __init__(self, path: Path):
        self.path = Path(path)
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"cannot read {index} ({type(e).__name__}: {e}); it should be JSON with a "
                                 "weight_map: download the checkpoint again") from None
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in self.path.glob("*.safetensors"))
            if not files:
                raise FileNotFoundError(f"no *.safetensors weights in {self.path}; point --model at a checkpoint "
                                        "directory saved with safetensors")
            weight_map = {}
        self._handles: dict[str, object] = {}
        for f in files:  # open (check) every file before any weight is loaded: fail fast, name the file
            h = self._handles[f] = open_safetensors(self.path / f)
            if not index.exists():
                weight_map.update({k: f for k in h.keys()})
        self.weight_map: dict[str, str] = weight_map

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def _handle(self, name: str):
        if name not in self.weight_map:
            raise ValueError(f"checkpoint {self.path} has no tensor {name!r}; it is incomplete, or its weights do "
                             "not match its config.json (model_type / --model_class)")
        return self._handles[self.weight_map[name]]

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


Dims = tuple  # a tensor's dimensions by symbol, e.g. ("q", "hidden"); a tuple entry: blocks packed along one dim


def table_shapes(table: dict[str, Dims], sizes: dict[str, int]) -> dict[str, list[int]]:
    """Checkpoint name -> shape, from a model's table of dimension symbols and the config's sizes of them."""
    def size(sym) -> int:
        return sum(sizes[s] for s in sym) if isinstance(sym, tuple) else sizes[sym]
    return {name: [size(s) for s in dims] for name, dims in table.items()}


class RandomCheckpoint:
    """Random weights with a real architecture's names and shapes, made directly on the device.

    For benchmarks: a forward pass costs the same whatever the weights' values, so no 16 GB download is needed.
    ``shapes`` is the executor's own checkpoint table (``model.checkpoint_shapes()``): exactly the tensors its
    ``load`` reads. Norm weights are ones and the rest N(0, 0.02), which keeps activations finite.
    """

    def __init__(self, shapes: dict[str, list[int]], device: torch.device | str, seed: int = 0):
        self.shapes, self.device = shapes, torch.device(device)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)

    def __contains__(self, name: str) -> bool:
        return name in self.shapes

    def shape(self, name: str) -> list[int]:
        return list(self.shapes[name])

    def get(self, name: str, dim: int | None = None, start: int | None = None, stop: int | None = None
            ) -> torch.Tensor:
        shape = self.shape(name)
        if dim is not None and start is not None:
            shape[dim] = stop - start
        if name.endswith("norm.weight"):
            return torch.ones(shape, device=self.device)
        return torch.empty(shape, device=self.device).normal_(0, 0.02, generator=self.gen)

    def close(self) -> None:
        pass
