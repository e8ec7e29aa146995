"""eval_lcb.py end to end on CPU (tiny random Qwen3, a local problems file): line shape, resume, data
parallel, eval_lcb_dist.py under torchrun, sparse settings, bad input; its output then grades with grade_lcb.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from dist_utils import torchrun
from test_lcb_grade import ADD, ADD_TO

from litesys.eval.tasks.lcb import grade_main
from litesys.eval.tasks.lcb.main import main

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--trial", "2", "--max_len", "1024", "--gen_len", "8", "--device", "cpu", "--temperature", "0"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from checkpoints import make_checkpoint

    return str(make_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen3"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "lcb.jsonl"
    third = dict(ADD, question_id="add2", contest_date="2025-03-01T00:00:00")
    path.write_text("".join(json.dumps(p) + "\n" for p in (ADD, ADD_TO, third)))
    return str(path)


def lines(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("samples.*.jsonl")) for line in f.read_text().splitlines()]


def test_generates_gradeable_lines_and_resumes(ckpt, data, tmp_path, capsys):
    out = tmp_path / "run"
    main(["--model", ckpt, "--data_file", data, "--end_date", "2024-12-31", *FLAGS, "--output_dir", str(out)])
    recs = lines(out)
    assert sorted((r["question_id"], r["trial"]) for r in recs) == [("add", 0), ("add", 1), ("addTo", 0),
                                                                     ("addTo", 1)]
    r = next(r for r in recs if r["question_id"] == "addTo")
    assert set(r) >= {"question_id", "difficulty", "public_test_cases", "private_test_cases", "metadata",
                      "starter_code", "output_text", "trial", "seed", "finish_reason", "num_tokens", "prompt"}
    assert "output" not in r and isinstance(r["output_text"], str) and r["num_tokens"] <= 8
    assert r["private_test_cases"] == ADD_TO["private_test_cases"] and r["metadata"] == ADD_TO["metadata"]
    assert r["prompt"] == [{"role": "user", "content": r["prompt"][0]["content"]}]
    assert "```python\n" + ADD_TO["starter_code"] + "\n```" in r["prompt"][0]["content"]
    # Rerun with one more trial: only the new trial is generated, old lines stay as they were.
    main(["--model", ckpt, "--data_file", data, "--end_date", "2024-12-31", *FLAGS[:1], "3", *FLAGS[2:],
          "--output_dir", str(out)])
    recs2 = lines(out)
    assert len(recs2) == 6 and recs2[:4] == recs
    # The random model writes no code: every sample grades as "no code", and the pipeline holds together.
    capsys.readouterr()
    summary = grade_main.main(["--output_dir", str(out), "--output_file", str(tmp_path / "v.jsonl")])
    assert summary["all"]["samples"] == 6 and summary["all"]["pass@1"] == 0.0
    saved = json.loads((tmp_path / "v.summary.json").read_text())
    assert saved["run_info"]["timing"]["samples_generated"] == 6 and saved["run_info"]["versions"]["torch"]
    assert saved["run_info"]["gpu"] == "cpu" and saved["run_info"]["grade_s"] >= 0 and saved["all"] == summary["all"]


def outputs(folder: Path) -> dict:
    recs = lines(folder)
    out = {(r["question_id"], r["trial"]): r["output_text"] for r in recs}
    assert len(out) == len(recs), "a sample was written twice"
    return out


@pytest.fixture(scope="module")
def single(ckpt, data, tmp_path_factory) -> dict:
    """All 3 problems x 2 trials in one process (greedy): what every parallel layout must reproduce."""
    out = tmp_path_factory.mktemp("single") / "one"
    assert main(["--model", ckpt, "--data_file", data, *FLAGS, "--output_dir", str(out)])["samples"] == 6
    return outputs(out)


@pytest.mark.slow
def test_data_parallel_matches_single(ckpt, data, single, tmp_path):
    main(["--model", ckpt, "--data_file", data, *FLAGS, "--nproc", "2", "--output_dir", str(tmp_path / "two")])
    assert len(single) == 6 and len(list((tmp_path / "two").glob("samples.*.jsonl"))) == 2
    assert outputs(tmp_path / "two") == single


@pytest.mark.slow
def test_torchrun_tp2_matches_single(ckpt, data, single, tmp_path):
    """eval_lcb_dist.py on 2 CPU ranks (gloo), one replica x TP 2: the flag reaches LiveCodeBench's engine. (The
    replica split is the shared dist_runner's, tested as 2 replicas x TP 2 in tests/test_tp.py.)"""
    tp, out = 2, tmp_path / "dist"
    r = torchrun(ROOT / "eval_lcb_dist.py", "--tp", str(tp), "--model", ckpt, "--data_file", data, *FLAGS,
                 "--output_dir", str(out), timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert len(list(out.glob("samples.*.jsonl"))) == 2 // tp  # one shard per replica
    assert outputs(out) == single
    # global rank 0 alone reports, and the TP setting is not part of the run config (any layout resumes)
    assert [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")] == [
        {"problems": 3, "samples": 6, "output_dir": str(out), "skipped_bad_tests": 0, "skipped_long_prompt": 0}]


def test_bad_input_exits_2_before_writing(ckpt, data, tmp_path, capsys):
    out = tmp_path / "run"
    for argv, msg in ((["--release", "release_v9"], "unknown LiveCodeBench release 'release_v9'"),
                      (["--data_file", str(tmp_path / "missing.jsonl")], "does not exist"),
                      (["--data_file", data, "--start_date", "someday"], "not a date"),
                      (["--data_file", data, "--attn_topk", "4"], "--attn_topk needs --attn_local N")):
        with pytest.raises(SystemExit) as e:
            main(["--model", ckpt, *argv, *FLAGS, "--output_dir", str(out)])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and msg in err and "\n" not in err
    assert not out.exists()


def test_bad_model_and_long_prompts_are_handled_before_writing(ckpt, data, tmp_path, capsys):
    """The same model checks as eval_math.py (one line naming --model, exit 2, nothing written), and a problem whose
    prompt does not fit --max_len is skipped and counted (or, with --on-long-prompt error, refused)."""
    out = tmp_path / "run"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{oops")
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    for f in Path(ckpt).iterdir():
        if not f.name.endswith(".safetensors"):
            (no_weights / f.name).symlink_to(f)
    for model, msg in ((tmp_path / "nowhere", "does not exist"), (bad, "config.json is not valid JSON"),
                       (no_weights, "no *.safetensors weights")):
        with pytest.raises(SystemExit) as e:
            main(["--model", str(model), "--data_file", data, *FLAGS, "--output_dir", str(out)])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("eval_lcb.py: error: --model") and msg in err, err
        assert "\n" not in err
    long = tmp_path / "long.jsonl"
    rows = [json.loads(line) for line in Path(data).read_text().splitlines()]
    rows[1] = dict(rows[1], question_content="Add these: " + " + ".join(map(str, range(400))))
    long.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--model", ckpt, "--data_file", str(long), *FLAGS[:2], "--max_len", "512", *FLAGS[4:]]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--on-long-prompt", "error", "--output_dir", str(out)])
    assert e.value.code == 2 and "--max_len 512" in capsys.readouterr().err
    assert not out.exists()
    summary = main([*argv, "--output_dir", str(out)])
    assert "warning: 1 problem(s) have prompts of >= --max_len 512 tokens (longest: addTo," in capsys.readouterr().err
    assert summary["problems"] == 2 and summary["samples"] == 4 and summary["skipped_long_prompt"] == 1
    saved = json.loads((out / "summary.json").read_text())
    assert saved["skipped_problems"] == ["addTo"] and saved["expected_samples"] == 4
    assert {r["question_id"] for r in lines(out)} == {"add", "add2"}


def test_sparse_flags_are_part_of_the_run_config(ckpt, data, tmp_path):
    from litesys.eval.tasks.lcb.main import build_parser, prepare

    argv = ["--model", ckpt, "--data_file", data, *FLAGS, "--output_dir", str(tmp_path / "o")]
    config = prepare(build_parser().parse_args([*argv, "--attn_block_topk", "4", "--attn_local", "8"])).config
    assert config["sparse"]["attn_block_topk"] == 4 and config["sparse"]["attn_local"] == 8
    assert config["sparse"]["attn_layer_skip"] == [0] and json.loads(json.dumps(config)) == config
    assert prepare(build_parser().parse_args(argv)).config["sparse"] is None  # dense


def test_data_dir_and_undecodable_problems_skipped(ckpt, tmp_path, capsys):
    """--data-dir holds the hub's test*.jsonl files (offline release tags); a problem whose tests do not decode is
    skipped at generation with a warning and counted; the folder, which holds the answer key, is private."""
    from litesys.eval.tasks.lcb.main import build_parser, prepare

    folder = tmp_path / "lcb"
    folder.mkdir()
    broken = dict(ADD, question_id="broken", private_test_cases="!!! not base64 !!!")
    (folder / "test.jsonl").write_text(json.dumps(ADD) + "\n" + json.dumps(broken) + "\n")
    (folder / "test2.jsonl").write_text(json.dumps(ADD_TO) + "\n")
    base = ["--model", ckpt, *FLAGS, "--trial", "1", "--data-dir", str(folder)]
    problems = prepare(build_parser().parse_args([*base, "--release", "v2", "--output_dir",
                                                  str(tmp_path / "a")])).problems.items
    assert [p["question_id"] for p in problems] == ["addTo"]
    capsys.readouterr()
    out = tmp_path / "b"
    summary = main([*base, "--release", "release_v2", "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert "warning: problem broken skipped: its test data does not decode (private_test_cases: test cases are " \
           "neither JSON nor base64+zlib" in err
    assert summary["problems"] == 2 and summary["skipped_bad_tests"] == 1 and summary["samples"] == 2
    assert sorted(r["question_id"] for r in lines(out)) == ["add", "addTo"]
    assert out.stat().st_mode & 0o007 == 0
    # the same data flags as eval_math.py, with messages that name them
    for argv, msg in ((["--release", "v3"], f"--data-dir {folder} lacks test3.jsonl (release v3)"),
                      (["--release", "lcb.jsonl"], "--release takes a release tag, not a file: pass --data-file "
                                                   "lcb.jsonl"),
                      (["--data_file", str(folder / "test.jsonl")], "--data-file and --data-dir both given")):
        with pytest.raises(SystemExit) as e:
            main([*base, *argv, "--output_dir", str(tmp_path / "c")])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and msg in err and "\n" not in err, err
    assert not (tmp_path / "c").exists()
