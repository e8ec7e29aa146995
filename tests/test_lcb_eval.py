"""eval_lcb.py end to end on CPU (tiny random Qwen3, a local problems file): line shape, resume, data
parallel, bad input; its output then grades with grade_lcb.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_lcb_grade import ADD, ADD_TO

from litesys.eval import lcb_grade_cli
from litesys.eval.lcb_eval import main

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
    summary = lcb_grade_cli.main(["--output_dir", str(out), "--output_file", str(tmp_path / "v.jsonl")])
    assert summary["all"]["samples"] == 6 and summary["all"]["pass@1"] == 0.0


@pytest.mark.slow
def test_data_parallel_matches_single(ckpt, data, tmp_path):
    main(["--model", ckpt, "--data_file", data, *FLAGS, "--output_dir", str(tmp_path / "one")])
    main(["--model", ckpt, "--data_file", data, *FLAGS, "--nproc", "2", "--output_dir", str(tmp_path / "two")])
    key = lambda r: (r["question_id"], r["trial"])  # noqa: E731
    one = {key(r): r["output_text"] for r in lines(tmp_path / "one")}
    assert len(one) == 6 and len(list((tmp_path / "two").glob("samples.*.jsonl"))) == 2
    assert {key(r): r["output_text"] for r in lines(tmp_path / "two")} == one


def test_bad_input_exits_2_before_writing(ckpt, data, tmp_path, capsys):
    out = tmp_path / "run"
    for argv, msg in ((["--release", "release_v9"], "unknown LiveCodeBench release 'release_v9'"),
                      (["--data_file", str(tmp_path / "missing.jsonl")], "does not exist"),
                      (["--data_file", data, "--start_date", "someday"], "not a date")):
        with pytest.raises(SystemExit) as e:
            main(["--model", ckpt, *argv, *FLAGS, "--output_dir", str(out)])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and msg in err and "\n" not in err
    assert not out.exists()
