"""eval_math.py --deterministic on CPU (tiny random Qwen3 + the real GSM8K file), sampled: a run SIGKILLed
mid-generation and resumed with another --max_num_seqs, and a --nproc 2 run, give the samples of one
uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_eval_math_cli import ROOT, flags, results, samples

from litesys.eval.tasks.math.main import main

COMMON = [*flags(), "--gen_len", "24", "--temperature", "0.8", "--deterministic"]



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread here and in the runs' subprocesses: these tiny models only lose to thread hand-offs."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(scope="module")
def reference(ckpt, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "ref"
    main(["--model", ckpt, "--data-dir", data_dir, *COMMON, "--output_dir", str(out)])
    return out


def test_killed_and_resumed_with_another_batch_size(ckpt, data_dir, reference, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "eval_math.py"), "--model", ckpt, "--data-dir", data_dir, *COMMON,
           "--output_dir", str(out), "--max_num_seqs", "2"]
    (tmp_path / "tmp").mkdir()  # the killed run's multiprocessing folder lands here, not in /tmp
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, LITESYS_NO_PROGRESS="1", TMPDIR=str(tmp_path / "tmp")),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shard, deadline = out / "samples.0.jsonl", time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if shard.is_file() and shard.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= len(samples(out)) < 12, "the kill must land mid-run"
    main(["--model", ckpt, "--data-dir", data_dir, *COMMON, "--output_dir", str(out), "--max_num_seqs", "5"])
    ref = samples(reference)
    assert len({r["output"] for r in ref.values()}) > 6  # really sampled
    assert samples(out) == ref and results(out) == results(reference)


def test_two_processes_equal_one(ckpt, data_dir, reference, tmp_path):
    main(["--model", ckpt, "--data-dir", data_dir, *COMMON, "--output_dir", str(tmp_path / "two"), "--nproc", "2"])
    assert samples(tmp_path / "two") == samples(reference)
