"""eval_math.py refuses bad input before anything is written: one line naming the CLI flag, exit code 2, the output
folder absent (or, when it held a run, unchanged). Bad checkpoints are built from one tiny random Qwen3 by
linking its files and breaking one; every refusal comes before a weight is loaded (the engine must not be built).
Prompts too long for --max_len: skipped and counted, or (--on-long-prompt error) refused."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from litesys.eval import checks, cli, configs
from litesys.eval.tasks.math.main import build_parser, main, prepare

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    from checkpoints import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen3")  # max_position_embeddings 4096


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    f = tmp_path_factory.mktemp("data") / "p.jsonl"
    f.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                         for i in range(3)))
    return f


def variant(ckpt: Path, where: Path, drop: tuple[str, ...] = (), **replace: bytes | str) -> Path:
    """A checkpoint folder of links to ``ckpt``'s files, less ``drop``, with ``replace`` files written anew."""
    where.mkdir()
    for f in ckpt.iterdir():
        if f.name not in drop and f.name not in replace:
            (where / f.name).symlink_to(f)
    for name, content in replace.items():
        (where / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return where


def argv(model: Path | str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--task", "custom", "--data-file", str(data), "--max_len", "256", "--gen_len",
            "8", "--device", "cpu", "--grade_workers", "1", "--output_dir", str(out), *extra]


@pytest.fixture
def no_engine(monkeypatch):
    """Validation must fail before the engine (and its weights) is built."""
    def fail(*a, **k):
        raise AssertionError("the engine was built before the bad input was refused")

    monkeypatch.setattr(configs.EngineSpec, "__call__", fail)


def refused(args: list[str], capsys, flag: str, out: Path) -> str:
    before = snapshot(out)
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("eval_math.py: error: "), err
    assert flag in err, err
    assert snapshot(out) == before, f"{out} changed"
    return err


def snapshot(folder: Path) -> dict | None:
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else None


def config_with(ckpt: Path, **changes) -> str:
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(changes)
    return json.dumps(cfg)


def test_bad_checkpoints_are_refused_before_loading(ckpt, data, tmp_path, capsys, no_engine):
    weights = ckpt / "model.safetensors"
    truncated = weights.read_bytes()[: weights.stat().st_size // 2]
    cfg = json.loads((ckpt / "config.json").read_text())
    no_vocab = json.dumps({k: v for k, v in cfg.items() if k != "vocab_size"})
    tok_cfg = json.loads((ckpt / "tokenizer_config.json").read_text())
    no_template = json.dumps({k: v for k, v in tok_cfg.items() if k != "chat_template"})
    cases = {
        "missing": (tmp_path / "nowhere", "does not exist; give a checkpoint directory or a hub id"),
        "no config": (variant(ckpt, tmp_path / "a", drop=("config.json",)), "has no config.json"),
        "bad json": (variant(ckpt, tmp_path / "b", **{"config.json": "{oops"}), "config.json is not valid JSON"),
        "no vocab": (variant(ckpt, tmp_path / "c", **{"config.json": no_vocab}), "lacks 'vocab_size'"),
        "mistral": (variant(ckpt, tmp_path / "d", **{"config.json": config_with(ckpt, model_type="mistral")}),
                    "model_type 'mistral'"),
        "no weights": (variant(ckpt, tmp_path / "e", drop=("model.safetensors",)), "no *.safetensors weights"),
        "truncated": (variant(ckpt, tmp_path / "f", **{"model.safetensors": truncated}), "is truncated"),
        "junk": (variant(ckpt, tmp_path / "g", **{"model.safetensors": b"not a checkpoint"}), "header"),
        "no tokenizer": (variant(ckpt, tmp_path / "h", drop=("tokenizer.json", "tokenizer_config.json")),
                         "has no tokenizer"),
        "no template": (variant(ckpt, tmp_path / "i", **{"tokenizer_config.json": no_template}),
                        "no chat template"),
    }
    for name, (model, expect) in cases.items():
        err = refused(argv(model, data, tmp_path / "out"), capsys, "--model", tmp_path / "out")
        assert expect in err, (name, err)
    # a sharded checkpoint whose index names a shard that is not there
    index = {"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors",
                            "model.norm.weight": "model-00002-of-00002.safetensors"}}
    sharded = variant(ckpt, tmp_path / "j", drop=("model.safetensors",),
                      **{"model.safetensors.index.json": json.dumps(index)})
    err = refused(argv(sharded, data, tmp_path / "out"), capsys, "--model", tmp_path / "out")
    assert "lacks 2 of the 2 weight files" in err


def test_bad_settings_are_refused(ckpt, data, tmp_path, capsys, no_engine):
    out = tmp_path / "out"
    cases = [
        (["--model_class", "mistral"], "--model_class mistral is not supported"),
        (["--gpu_memory_utilization", "1.5"], "--gpu_memory_utilization must be in (0, 1]"),
        (["--gpu_memory_utilization", "0"], "--gpu_memory_utilization must be in (0, 1]"),
        (["--gpu_memory_utilization", "nan"], "--gpu_memory_utilization"),
        (["--temperature", "nan"], "--temperature"),
        (["--temperature", "inf"], "--temperature"),
        (["--temperature", "warm"], "--temperature"),
        (["--top_p", "nan"], "--top_p"),
        (["--top_k", "2.5"], "--top_k"),
        (["--trial", "2.0"], "--trial"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--grade_timeout", "nan"], "--grade_timeout"),
        (["--grade_workers", "0"], "--grade_workers must be >= 1"),
        (["--nproc", "100000"], "--nproc 100000 but only"),
        (["--max_len", "8192", "--gen_len", "8"], "--max_len 8192 is above the model's max_position_embeddings 4096"),
        (["--repeat_check_window", "8", "--repeat_block_size", "16"], "--repeat_check_window"),
    ]
    for extra, expect in cases:
        err = refused(argv(ckpt, data, out) + extra, capsys, expect.split()[0], out)
        assert expect in err, (extra, err)
        assert not re.search(r"\w=", err), f"API argument syntax in a CLI message: {err}"


def test_a_folder_holding_a_run_is_left_unchanged(ckpt, data, tmp_path, capsys):
    out = tmp_path / "run"
    s = main(argv(ckpt, data, out))
    assert s["samples"] == 3
    before = snapshot(out)
    capsys.readouterr()
    # the API's own checks (SamplingParams), in the CLI's words, then a bad model: nothing changes
    refused(argv(ckpt, data, out, "--repeat_check_window", "8", "--repeat_block_size", "16"), capsys,
            "--no-repeat-check", out)
    refused(argv(tmp_path / "nowhere", data, out), capsys, "--model", out)
    assert snapshot(out) == before


def test_rope_scaling_allows_a_longer_max_len(ckpt, data, tmp_path):
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096, "rope_theta": 1e6}
    scaled = variant(ckpt, tmp_path / "yarn", **{"config.json": config_with(ckpt, rope_parameters=yarn)})
    args = build_parser().parse_args(argv(scaled, data, tmp_path / "out", "--max_len", "8192"))
    prepare(args)  # no UsageError: config.json extends the positions to 4 x 4096
    assert not (tmp_path / "out").exists()
    with pytest.raises(cli.UsageError, match="--max_len 20000 is above the 16384 positions the RoPE scaling"):
        prepare(build_parser().parse_args(argv(scaled, data, tmp_path / "out", "--max_len", "20000")))
    assert not (tmp_path / "out").exists()


def test_tp_zero_and_bad_tp_values_are_refused(monkeypatch, capsys):
    from litesys.eval.dist_runner import torchrun_main

    def task_main(*a, **k):
        raise AssertionError("the task ran with a bad --tp")

    monkeypatch.setenv("WORLD_SIZE", "2")
    for tp, expect in (("0", "--tp must be >= 1, got 0"), ("abc", "argument --tp")):
        with pytest.raises(SystemExit) as e:
            torchrun_main(task_main, "eval_math_dist.py", ["--tp", tp, "--model", "x/y", "--task", "gsm8k"])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and expect in err, err


def test_command_line_refusal_is_one_line(ckpt, data, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "eval_math.py"), *argv(ckpt, data, tmp_path / "o"), "--max_len",
                        "100000"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"eval_math.py: error: --max_len 100000 is above the model's max_position_embeddings 4096 ({ckpt}/config.json);"
        " lower --max_len (it counts prompt + generation), or add a rope_scaling entry (e.g. YaRN) to config.json to "
        "extend it"]
    assert not (tmp_path / "o").exists()


def test_long_prompts_are_skipped_and_counted_or_refused(ckpt, data, tmp_path, capsys):
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    rows.insert(1, {"id": "long", "problem": "Add these numbers: " + " + ".join(map(str, range(200))), "answer": "1"})
    long_data = tmp_path / "long.jsonl"
    long_data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    refused(argv(ckpt, long_data, out, "--on-long-prompt", "error"), capsys, "--max_len 256", out)
    assert not out.exists()
    s = main(argv(ckpt, long_data, out))
    err = capsys.readouterr().err
    assert "warning: 1 problem(s) have prompts of >= --max_len 256 tokens (longest: long," in err
    assert s["skipped_long_prompt"] == 1 and s["skipped_problems"] == ["long"]
    assert s["samples"] == 3 and s["expected_samples"] == 3 and s["complete"]
    done = {json.loads(line)["problem_id"] for f in out.glob("samples.*.jsonl") for line in f.read_text().splitlines()}
    assert done == {"p0", "p1", "p2"}
    # every prompt too long: refused, whatever --on-long-prompt says
    refused(argv(ckpt, long_data, tmp_path / "o2", "--max_len", "16", "--gen_len", "4"), capsys,
            "every problem's prompt has >= --max_len 16 tokens", tmp_path / "o2")


def test_prompt_lengths_match_the_engine(ckpt):
    """checks.prompt_lengths (run before writing) against LLM.encode, the tokens the engine actually feeds."""
    import torch

    from litesys import LLM
    from litesys.eval.tasks.math.data import build_prompt

    llm = LLM(str(ckpt), device="cpu", dtype=torch.float32, max_seq_len=256, num_kv_pages=8)
    prompts = [build_prompt("litesys", "What is 1 + 1?"), build_prompt("qwen", "x" * 50), "plain text", [1, 2, 3]]
    tok = checks.load_tokenizer(ckpt)
    for thinking in (None, False, True):
        llm.enable_thinking = thinking
        assert checks.prompt_lengths(tok, prompts, thinking) == [len(llm.encode(p)) for p in prompts]


def test_api_messages_in_flag_names():
    from litesys.sampling_params import SamplingParams

    with pytest.raises(ValueError) as e:
        SamplingParams(repeat_check_window=8, repeat_block_size=16)
    msg = cli.flag_message(str(e.value))
    assert "--repeat_check_window" in msg and "--repeat_block_size" in msg and "--no-repeat-check" in msg, msg
    assert cli.flag_message("prompt 3 has 900 tokens, which leaves no room to generate within max_seq_len=512; "
                            "raise max_seq_len or shorten the prompt") == (
        "prompt 3 has 900 tokens, which leaves no room to generate within --max_len 512; raise --max_len or shorten "
        "the prompt")
    assert cli.flag_message("pass model_class= to override; max_new_tokens must be >= 1") == \
        "pass --model_class to override; --gen_len must be >= 1"
    # paths, prose and flags that are already flags stay as they are
    assert cli.flag_message("the model in /tmp/top_k/x and --top_k 3") == "the model in /tmp/top_k/x and --top_k 3"


def test_a_run_that_fails_before_its_first_sample_leaves_nothing(tmp_path, data):
    """The runner's safety net for what only the engine can find (e.g. memory): no run config stays behind to
    refuse the corrected command."""
    from litesys.eval import runner

    def broken_engine(device):
        raise ValueError("gpu_memory_utilization=0.1 leaves no room for the KV cache")

    job = runner.Job([runner.WorkItem("p0", 0, [1, 2], None)], broken_engine)
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        runner.run(job, out, ["cpu"], {"x": 1})
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError):
        runner.run(job, out, ["cpu"], {"x": 1})
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    shutil.rmtree(out)
