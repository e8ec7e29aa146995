"""Read tensors (or this rank's slice of them) straight from safetensors files, single or sharded."""
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


class RandomCheckpoint:
    """Random weights with a real architecture's names and shapes, made directly on the device.

    For benchmarks: a forward pass costs the same whatever the weights' values, so no 16 GB download is needed.
    Norm weights are ones and the rest N(0, 0.02), which keeps activations finite.
    """

    def __init__(self, raw: dict, device: torch.device | str, seed: int = 0):
        self.raw, self.device = raw, torch.device(device)
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        H, heads = raw["hidden_size"], raw["num_attention_heads"]
        D = raw.get("head_dim") or H // heads
        kv = raw.get("num_key_value_heads") or heads
        inter, moe_inter = raw.get("intermediate_size", 0), raw.get("moe_intermediate_size", 0)
        self.shapes = {
            "embed_tokens.weight": [raw["vocab_size"], H], "lm_head.weight": [raw["vocab_size"], H],
            "q_proj.weight": [heads * D, H], "k_proj.weight": [kv * D, H], "v_proj.weight": [kv * D, H],
            "q_proj.bias": [heads * D], "k_proj.bias": [kv * D], "v_proj.bias": [kv * D],
            "o_proj.weight": [H, heads * D], "o_proj.bias": [H], "q_norm.weight": [D], "k_norm.weight": [D],
            "mlp.gate.weight": [raw.get("num_experts", 0), H],
            "gate_proj.weight": [inter, H], "up_proj.weight": [inter, H], "down_proj.weight": [H, inter],
            "expert.gate_proj.weight": [moe_inter, H], "expert.up_proj.weight": [moe_inter, H],
            "expert.down_proj.weight": [H, moe_inter], "norm.weight": [H], "layernorm.weight": [H],
        }
        self.bias = raw.get("model_type") == "qwen2" or bool(raw.get("attention_bias"))
        self.tied = bool(raw.get("tie_word_embeddings"))

    def _key(self, name: str) -> str:
        if ".experts." in name:
            return "expert." + ".".join(name.split(".")[-2:])
        for k in sorted(self.shapes, key=len, reverse=True):
            if name.endswith(k):
                return k
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        if name == "lm_head.weight":
            return not self.tied
        if name.endswith(".bias"):
            return self.bias
        if "experts.gate_up_proj" in name:
            return False
        try:
            self._key(name)
        except KeyError:
            return False
        return True

    def shape(self, name: str) -> list[int]:
        return list(self.shapes[self._key(name)])

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
