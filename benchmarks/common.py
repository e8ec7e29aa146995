"""Helpers shared by the GPU benchmark scripts (run as ``python benchmarks/<script>.py``)."""
from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

SMOKE = os.environ.get("BENCH_SMOKE") == "1"  # run a script's logic on CPU at tiny sizes before spending GPU time
T0 = time.time()
CONFIGS = Path(__file__).parent / "configs"  # the real architectures' config.json files, by name


def model_config(config: str) -> dict:
    """A name in benchmarks/configs (``qwen3_8b``) or a config.json path -> the config as a dict."""
    return json.loads((Path(config) if config.endswith(".json") else CONFIGS / f"{config}.json").read_text())


def random_model_dir(cfg: dict) -> Path:
    """A fresh temporary folder holding only ``config.json``: all that ``LLM(..., load_format="random")`` reads.
    Removed when the script exits (a benchmark may reload it, e.g. for the HF baseline, until then)."""
    tmp = Path(tempfile.mkdtemp(prefix="litesys-random-model-"))
    atexit.register(shutil.rmtree, tmp, True)
    (tmp / "config.json").write_text(json.dumps(cfg))
    return tmp


def save_json(folder: str | Path, name: str, obj) -> Path:
    """``obj`` as indented JSON in ``folder/name`` (the folder made if missing)."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path


class UsageExit(SystemExit):
    """A bad flag: its one line goes to stderr and the script exits 2, as the eval scripts do (``str()`` is the
    line, so ``pytest.raises(SystemExit, match=...)`` reads it)."""

    def __init__(self, message: str) -> None:
        print(message, file=sys.stderr)
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def bench_args(doc: str, json_name: str, argv: list[str] | None = None,
               parents: list[argparse.ArgumentParser] | None = None) -> argparse.Namespace:
    """The GPU check scripts' flags: ``--smoke`` (= BENCH_SMOKE=1) and ``--out`` (a folder for the JSON), plus
    those of ``parents`` (parsers made with ``add_help=False``): one parser, one ``--help``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 parents=parents or [])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU (TRITON_INTERPRET), = BENCH_SMOKE=1")
    ap.add_argument("--out", default=os.environ.get("OUT"), help=f"folder for {json_name} (default: $OUT, if set)")
    return ap.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def rel_err(out: torch.Tensor, expected: torch.Tensor) -> float:
    return ((out.double() - expected.double()).norm() / expected.double().norm()).item()


def bench_ms(fn, rep: int = 50) -> float:
    """Median ms of ``fn`` (triton's do_bench, timed with events); one host-timed call in smoke mode."""
    if SMOKE:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    from triton.testing import do_bench

    return do_bench(fn, warmup=10, rep=rep, return_mode="median")


def graph_ms(fn, iters: int = 50, calls: int = 1) -> float:
    """ms per call of ``fn`` replayed from a CUDA graph (no launch overhead, as in the engine's decode graphs);
    ``calls`` back-to-back calls in the graph amortise the replay's own cost over them (short kernels)."""
    if SMOKE:
        return bench_ms(fn)
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    graph.replay()
    start.record()
    for _ in range(iters):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / (iters * calls)


def copy_bandwidth(elems: int = 1 << 29, device: str = "cuda") -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus written (1 GiB of bf16 by default;
    on the CPU, where only the scripts' logic is checked, 32 MiB timed on the host)."""
    cpu = torch.device(device).type == "cpu"
    src = torch.randn(elems if not cpu else 1 << 24, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    if cpu:
        t = time.perf_counter()
        dst.copy_(src)
        ms = (time.perf_counter() - t) * 1e3
    else:
        ms = bench_ms(lambda: dst.copy_(src))
    bw = 2 * src.numel() * src.element_size() / (ms / 1e3)
    log(f"HBM copy bandwidth {bw / 1e12:.2f} TB/s")
    return bw
