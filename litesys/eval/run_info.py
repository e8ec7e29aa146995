"""What every run's ``summary.json`` records besides accuracy: wall time, GPU-seconds, tok/s, versions, GPU.

The runner appends one entry per shard and invocation to ``timing.<rank>.json`` (its own file, so data-parallel
workers never share one; not ``*.jsonl``, so grade_lcb.py's sample search skips it) and writes the cost model
of the run to ``cost_model.json``. ``collect(output_dir)`` folds them into the summary block every summary
writer (eval_math.py, eval_lcb.py, ...) adds under ``"run_info"``.
"""
from __future__ import annotations

import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path

from litesys.eval.fileio import atomic_write

TIMING_GLOB = "timing.*.json"
COST_MODEL = "cost_model.json"
PACKAGES = ("litesys", "torch", "transformers", "math-verify", "triton", "numpy")


def versions() -> dict[str, str | None]:
    """Installed versions of the packages a result depends on (None when absent)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    if out["litesys"] is None:  # a source checkout that was never pip-installed
        import litesys

        out["litesys"] = litesys.__version__
    return out


def device_name(device) -> str:
    """``torch.cuda.get_device_name`` of a CUDA device, else ``"cpu"``."""
    import torch

    try:
        dev = torch.device(device)
        return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    except (RuntimeError, AssertionError, ValueError):  # a test double's device, a CUDA error
        return str(device)


def record_timing(output_dir: Path, rank: int, entry: dict) -> None:
    """Append one shard invocation (``start``/``end`` epoch seconds, ``gpus``, token counts...) to its file."""
    path = Path(output_dir) / f"timing.{rank}.json"
    entries = json.loads(path.read_text()) if path.is_file() else []
    entries.append(entry)
    atomic_write(path, json.dumps(entries, indent=1) + "\n")


def write_cost_model(output_dir: Path, cost_model: dict) -> None:
    """The run's cost model (docs/cost.md), once: the report recomputes truncated costs from it."""
    path = Path(output_dir) / COST_MODEL
    if not path.is_file():
        atomic_write(path, json.dumps(cost_model, indent=2, sort_keys=True) + "\n")


def timing_entries(output_dir: Path) -> list[dict]:
    out = []
    for path in sorted(Path(output_dir).glob(TIMING_GLOB)):
        try:
            out += [e for e in json.loads(path.read_text()) if isinstance(e, dict)]
        except (json.JSONDecodeError, OSError):
            continue  # a report never fails on a bookkeeping file
    return out


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def timing(output_dir: Path) -> dict:
    """Measured cost of every generation session in the folder, resumed ones included.

    ``wall_s``: time during which at least one shard was generating (model loading included); ``gpu_s``: the sum
    of each shard's wall time x the GPUs it held (TP ranks count); ``tok_s``: generated tokens / ``wall_s``,
    ``tok_s_per_gpu``: generated tokens / ``gpu_s``; ``generate_s``: time inside ``generate`` only.
    """
    entries = timing_entries(output_dir)
    if not entries:
        return {}
    wall = _union_length([(e["start"], e["end"]) for e in entries if "start" in e and "end" in e])
    gpu_s = sum((e["end"] - e["start"]) * e.get("gpus", 1) for e in entries if "start" in e and "end" in e)
    tokens = sum(e.get("generated_tokens", 0) for e in entries)
    gen_s = sum(e.get("generate_s", 0.0) for e in entries)
    return {"wall_s": round(wall, 3), "gpu_s": round(gpu_s, 3), "generate_s": round(gen_s, 3),
            "generated_tokens": tokens, "samples_generated": sum(e.get("samples", 0) for e in entries),
            "tok_s": round(tokens / wall, 1) if wall > 0 else None,
            "tok_s_per_gpu": round(tokens / gpu_s, 1) if gpu_s > 0 else None,
            "sessions": len({e.get("session") for e in entries}),
            "gpus": sorted({e.get("gpu", "?") for e in entries})}


def collect(output_dir: Path) -> dict:
    """The ``run_info`` block of a summary: timing (may be empty for folders made before it was recorded),
    versions, the GPUs the samples were generated on, and the cost model file when there is one."""
    info: dict = {"timing": timing(output_dir), "versions": versions()}
    info["gpu"] = ", ".join(info["timing"].get("gpus", [])) or None
    path = Path(output_dir) / COST_MODEL
    if path.is_file():
        info["cost_model"] = json.loads(path.read_text())
    return info


class ShardMeter:
    """One shard's bookkeeping, for the runner: the cost model (written to ``cost_model.json``), each sample's
    cost fields, and the shard's timing entry at the end."""

    def __init__(self, output_dir: Path, rank: int, llm, device, start: float,
                 intensity: tuple[float, str] | None = None):
        """``intensity``: (I, source) from --arith-intensity/--gpu; None: the table's entry for this device."""
        import time

        from litesys.eval import cost

        self.output_dir, self.rank, self.start = Path(output_dir), rank, start
        self.gpu = device_name(device)
        self.gpus = getattr(getattr(llm, "dist", None), "world", 1) or 1  # TP ranks of this replica
        gpu = None if self.gpu == "cpu" else self.gpu
        value, source = intensity or cost.arith_intensity(gpu)
        self.model = cost.from_llm(llm, gpu, value)
        if self.model is not None:
            write_cost_model(self.output_dir, {**self.model.to_json(), "gpu": self.gpu, "intensity_source": source})
        self.loaded = time.time()
        self.samples = self.tokens = self.prompt_tokens = 0

    def sample_fields(self, output, sample) -> dict:
        """``prompt_tokens`` and ``cost`` (docs/cost.md) of one finished sample."""
        p = len(getattr(output, "prompt_token_ids", None) or [])
        g = len(sample.token_ids)
        self.samples += 1
        self.tokens += g
        self.prompt_tokens += p
        fields: dict = {"prompt_tokens": p}
        if self.model is not None:
            fields["cost"] = self.model.sample(p, g).to_json()
        return fields

    def close(self) -> None:
        import time

        end = time.time()
        gen = end - self.loaded
        record_timing(self.output_dir, self.rank, {
            "session": f"{os.getpid()}-{self.start:.3f}", "rank": self.rank, "gpu": self.gpu, "gpus": self.gpus,
            "start": self.start, "end": end, "load_s": round(self.loaded - self.start, 3),
            "generate_s": round(gen, 3), "samples": self.samples, "generated_tokens": self.tokens,
            "prompt_tokens": self.prompt_tokens, "tok_s": round(self.tokens / gen, 1) if gen > 0 else None})


def cost_summary(records: list[dict]) -> dict:
    """The modelled cost of the samples (their ``cost`` fields, docs/cost.md) for a summary: ``{"cost": {...}}``,
    or ``{}`` when some sample has none (runs made before costs were recorded)."""
    costs = [r.get("cost") for r in records]
    if not costs or any(not isinstance(c, dict) for c in costs):
        return {}
    n = len(costs)  # fsum: the same whatever order the shards hold the samples in (data parallel)
    return {"cost": {"eflops_per_sample": math.fsum(c["eflops"] for c in costs) / n,
                     "flops_per_sample": math.fsum(c["flops"] for c in costs) / n,
                     "kv_bytes_per_sample": math.fsum(c["kv_bytes"] for c in costs) / n,
                     "arith_intensity": costs[0]["arith_intensity"]}}
