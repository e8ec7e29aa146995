"""eval_math.py end to end on CPU (tiny random Qwen3 + the real GSM8K file): samples, summary, SIGKILL and
resume, data parallel, refusal to mix runs (also over sparse-attention settings), bad input, and the report."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from litesys.eval.tasks.math.main import main

ROOT = Path(__file__).resolve().parents[1]


def flags(trial: int = 2) -> list[str]:
    return ["--task", "gsm8k", "--limit", "6", "--trial", str(trial), "--max_len", "512", "--device", "cpu"]


FLAGS = flags()



def samples(folder: Path) -> dict:
    recs = [json.loads(line) for f in sorted(Path(folder).glob("samples.*.jsonl"))
            for line in f.read_text().splitlines()]
    keys = [(r["problem_id"], r["trial"]) for r in recs]
    assert len(keys) == len(set(keys)), "duplicate (problem, trial) samples"
    return {k: r for k, r in zip(keys, recs)}


def summary(folder: Path) -> dict:
    return json.loads((Path(folder) / "summary.json").read_text())


def results(folder: Path) -> dict:
    """The summary without its run_info (wall time, throughput: differ between identical runs)."""
    return {k: v for k, v in summary(folder).items() if k != "run_info"}


@pytest.fixture(scope="module")
def greedy_ref(ckpt, data_dir, tmp_path_factory):
    """An uninterrupted greedy run: 6 GSM8K problems x 2 trials."""
    out = tmp_path_factory.mktemp("runs") / "ref"
    main(["--model", ckpt, "--data-dir", data_dir, *FLAGS, "--gen_len", "16", "--temperature", "0",
          "--output_dir", str(out)])
    return out


def test_run_writes_every_sample_and_a_summary(greedy_ref):
    recs = samples(greedy_ref)
    assert len(recs) == 12
    assert {pid for pid, _ in recs} == {f"gsm8k-{i}" for i in range(6)}
    r = recs[("gsm8k-0", 1)]
    assert r["answer"] == "18" and r["finish_reason"] in ("stop", "length", "repetition")
    assert r["num_tokens"] <= 16 and isinstance(r["output"], str) and r["prompt"][0]["role"] == "user"
    assert set(r) >= {"seed", "extracted", "answer_key", "correct", "grade_status"}
    s = summary(greedy_ref)
    assert s["samples"] == 12 and s["complete"] and s["problems"] == 6
    assert set(s["pass@k"]) == {"pass@1", "pass@2"} and set(s["maj@k"]) == {"maj@1", "maj@2"}
    assert s["pass@1"] == sum(r["correct"] for r in recs.values()) / 12
    assert sum(v["samples"] for v in s["per_problem"].values()) == 12


def test_sigkill_mid_run_then_rerun_matches_uninterrupted(ckpt, data_dir, greedy_ref, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "eval_math.py"), "--model", ckpt, "--data-dir", data_dir, *FLAGS,
           "--gen_len", "16", "--temperature", "0", "--output_dir", str(out), "--max_num_seqs", "2"]
    (tmp_path / "tmp").mkdir()  # the killed run's multiprocessing folder lands here, not in /tmp
    env = dict(os.environ, LITESYS_NO_PROGRESS="1", TMPDIR=str(tmp_path / "tmp"))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    shard = out / "samples.0.jsonl"
    t0 = time.monotonic()
    deadline = t0 + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if shard.is_file() and shard.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its grading workers
    proc.wait()
    print(f"killed after {time.monotonic() - t0:.1f}s")
    partial = samples(out)
    assert 1 <= len(partial) < 12, "the kill must land mid-run"
    ref = samples(greedy_ref)
    assert all(partial[k] == ref[k] for k in partial)  # finished work kept as it was
    main(["--model", ckpt, "--data-dir", data_dir, *FLAGS, "--gen_len", "16", "--temperature", "0",
          "--output_dir", str(out)])
    assert samples(out) == ref
    assert results(out) == results(greedy_ref)


def test_more_trials_resume_the_same_run(ckpt, data_dir, greedy_ref, tmp_path):
    """--trial and --limit may change between runs: only the missing pairs are generated."""
    out = tmp_path / "more"
    shutil.copytree(greedy_ref, out)
    before = samples(out)
    argv = flags(trial=3)
    argv[argv.index("--limit") + 1] = "2"
    s = main(["--model", ckpt, "--data-dir", data_dir, *argv, "--gen_len", "16", "--temperature", "0",
              "--output_dir", str(out)])
    after = samples(out)
    assert len(after) == 14 and all(after[k] == before[k] for k in before)  # 12 kept + 2 problems x trial 2
    assert s["samples"] == 6 and s["trials"] == 3 and s["complete"]
    assert set(s["pass@k"]) == {"pass@1", "pass@2", "pass@3"}  # every k up to the trial count


def test_data_parallel_gives_the_same_samples(ckpt, data_dir, tmp_path):
    """Sampled (temperature 0.6): each (problem, trial) has its own seed, so the split does not matter."""
    common = ["--model", ckpt, "--data-dir", data_dir, *FLAGS, "--gen_len", "8"]
    main([*common, "--output_dir", str(tmp_path / "one")])
    main([*common, "--output_dir", str(tmp_path / "two"), "--nproc", "2"])
    assert sorted(p.name for p in (tmp_path / "two").glob("samples.*.jsonl")) == ["samples.0.jsonl",
                                                                                  "samples.1.jsonl"]
    one, two = samples(tmp_path / "one"), samples(tmp_path / "two")
    assert len(one) == 12
    assert {k: r["output"] for k, r in one.items()} == {k: r["output"] for k, r in two.items()}
    assert len({r["output"] for r in one.values()}) > 6  # really sampled: trials differ
    assert results(tmp_path / "one") == results(tmp_path / "two")


def test_other_flags_refuse_to_mix_results(ckpt, data_dir, greedy_ref, capsys):
    before = {p.name: p.read_bytes() for p in greedy_ref.iterdir()}
    with pytest.raises(SystemExit) as e:
        main(["--model", ckpt, "--data-dir", data_dir, *FLAGS, "--gen_len", "16", "--temperature", "0.7",
              "--output_dir", str(greedy_ref)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "temperature: 0.0 there, 0.7 now" in err and "refusing" in err
    assert {p.name: p.read_bytes() for p in greedy_ref.iterdir()} == before


def test_sparse_settings_are_recorded_and_a_run_with_others_is_refused(ckpt, tmp_path, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(2)))
    out = tmp_path / "sparse"
    base = ["--model", ckpt, "--task", "custom", "--data-file", str(data), "--max_len", "256", "--gen_len", "8",
            "--device", "cpu", "--grade_workers", "1", "--output_dir", str(out)]
    sparse = ["--attn_block_topk", "2", "--attn_block_size", "4", "--attn_local", "8", "--attn_layer_skip"]
    s = main([*base, *sparse])
    assert s["samples"] == 2
    recorded = json.loads((out / "run_config.json").read_text())["sparse"]
    assert recorded["attn_block_topk"] == 2 and recorded["attn_block_size"] == 4 and recorded["attn_local"] == 8
    assert recorded["attn_layer_skip"] == [] and s["config"]["sparse"] == recorded
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    for other, shown in (([*sparse[:1], "4", *sparse[2:]], "'attn_block_topk': 2"), ([], "None now")):
        with pytest.raises(SystemExit) as e:
            main([*base, *other])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1, err
        assert "sparse: {" in err and shown in err and "refusing to mix results" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main([*base, *sparse])["samples"] == 2  # the same settings resume (nothing left to generate)
    assert {p.name: p.read_bytes() for p in out.glob("samples.*")} == {k: v for k, v in before.items()
                                                                      if k.startswith("samples.")}


def _bad(tmp_path: Path, ckpt: str, data_dir: str) -> dict[str, list[str]]:
    no_q = tmp_path / "noq.jsonl"
    no_q.write_text(json.dumps({"text": "1+1?", "answer": "2"}) + "\n")
    base = ["--model", ckpt, "--max_len", "512", "--device", "cpu", "--gen_len", "16"]
    return {
        "unknown --task 'gsm9k'": [*base, "--task", "gsm9k", "--data-dir", data_dir],
        "--data-file": [*base, "--task", "gsm8k", "--data-file", str(tmp_path / "missing.jsonl")],
        "no question field": [*base, "--task", "custom", "--data-file", str(no_q)],
        "--trial must be >= 1": [*base, "--task", "gsm8k", "--data-dir", data_dir, "--trial", "0"],
        "--gen_len 1024 is larger than --max_len 512": [*base[:-1], "1024", "--task", "gsm8k",
                                                        "--data-dir", data_dir],
    }


def test_bad_input_one_line_exit_2_nothing_written(ckpt, data_dir, tmp_path, capsys):
    for expect, argv in _bad(tmp_path, ckpt, data_dir).items():
        out = tmp_path / "out"
        with pytest.raises(SystemExit) as e:
            main([*argv, "--output_dir", str(out)])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2, expect
        assert len(err.splitlines()) == 1 and err.startswith("eval_math.py: error: ") and expect in err, err
        assert not out.exists(), expect


def test_bad_input_from_the_command_line(ckpt, data_dir, tmp_path):
    argv = _bad(tmp_path, ckpt, data_dir)["unknown --task 'gsm9k'"]
    r = subprocess.run([sys.executable, str(ROOT / "eval_math.py"), *argv, "--output_dir", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "choose one of" in r.stderr
    assert not (tmp_path / "o").exists()
    r = subprocess.run([sys.executable, str(ROOT / "eval_math.py"), "--task", "gsm8k"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "eval_math.py: error: the following arguments are required: --model (see eval_math.py --help)"]


def test_report_table_and_plot(greedy_ref, tmp_path, capsys, monkeypatch):
    from litesys.eval import report

    assert report.main([str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "matplotlib", None)  # as if not installed: how to install it
        assert report.main([str(greedy_ref), "--png", str(tmp_path / "no.png")]) == 2
        cap = capsys.readouterr()
        assert not (tmp_path / "no.png").exists()  # (the table itself: tests of litesys.report)
        assert cap.err.strip().endswith("pip install matplotlib (or pass --no-plot)")
        assert report.main([str(greedy_ref), "--no-plot"]) == 0
    pytest.importorskip("matplotlib", reason="matplotlib not installed: the PNG itself is untested")
    png = tmp_path / "curve.png"
    assert report.main([str(greedy_ref), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dist_entry_point_refuses_a_tp_not_dividing_the_world(tmp_path):
    # (tensor parallel runs themselves: tests/test_tp.py)
    env = dict(os.environ, WORLD_SIZE="2", LOCAL_RANK="0")
    r = subprocess.run([sys.executable, str(ROOT / "eval_math_dist.py"), "--tp", "3", "--model", "x/y", "--task",
                        "gsm8k", "--output_dir", str(tmp_path / "o")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--tp 3 does not divide the world size 2" in r.stderr
    assert not (tmp_path / "o").exists()


def test_torchrun_entry_point_plumbing(monkeypatch, capsys):
    """dist_runner.torchrun_main, shared by eval_math_dist.py and eval_lcb_dist.py: --tp, the launch checks, the
    device per local rank, and the task's main called with the distributed runner."""
    from litesys.eval.dist_runner import run_distributed, torchrun_main

    calls = []

    def task_main(argv, prog, tensor_parallel_size, runner):
        calls.append((argv, prog, tensor_parallel_size, runner))

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    torchrun_main(task_main, "eval_lcb_dist.py", ["--tp", "2", "--model", "m"])
    torchrun_main(task_main, "eval_lcb_dist.py", ["--model", "m", "--device", "cpu"])
    device = "cuda:3" if __import__("torch").cuda.is_available() else "cpu"
    assert calls == [(["--model", "m", "--device", device], "eval_lcb_dist.py", 2, run_distributed),
                     (["--model", "m", "--device", "cpu"], "eval_lcb_dist.py", 4, run_distributed)]
    for argv, msg in ((["--tp", "3"], "--tp 3 does not divide the world size 4"),
                      (["--nproc", "2"], "--nproc is the single-process scripts' data parallelism")):
        with pytest.raises(SystemExit) as e:
            torchrun_main(task_main, "eval_lcb_dist.py", argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("eval_lcb_dist.py: error: ") and msg in err
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(SystemExit):
        torchrun_main(task_main, "eval_lcb_dist.py", ["--tp", "2"])
    assert "--tp 2 needs one process per rank: launch with torchrun --nproc_per_node 2 eval_lcb_dist.py" in \
        capsys.readouterr().err
    assert len(calls) == 2
