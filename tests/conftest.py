import os
import sys
from pathlib import Path

import pytest
import torch

# Triton reads TRITON_INTERPRET when it is first imported, and any litesys import pulls triton in: without a GPU,
# every Triton kernel test runs on the CPU interpreter. The engine itself never runs Triton on CPU tensors.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("LITESYS_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on a GPU machine: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# The eval CLI tests' tiny model and the offline data folder (tests/test_eval_math_cli.py, test_deterministic_eval.py;
# a module that defines its own ``ckpt`` fixture overrides this one)
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    from checkpoints import make_checkpoint

    return str(make_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen3"))


@pytest.fixture
def one_thread():
    """One intra-op thread (``pytestmark = pytest.mark.usefixtures("one_thread")``): engine runs on tiny models are
    many tiny ops, which only lose to thread hand-offs on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir() -> str:
    if not (DATA / "gsm8k.jsonl").is_file():
        pytest.skip(f"real data not found at {DATA} (the shared data folder is absent)")
    return str(DATA)
