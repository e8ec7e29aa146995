"""The eval CLI's typed configs: flags generated from EngineConfig / SamplingParams / SparseConfig fields, the
configs built back once, the run-config record in its historical keys, the Job handed to data-parallel workers
as it is (picklable, no argparse Namespace), and the parsed flags never changed."""
from __future__ import annotations

import argparse
import copy
import json
import pickle
from dataclasses import MISSING, fields

import pytest

from litesys.attention.sparse import SparseConfig
from litesys.engine.config import EngineConfig
from litesys.eval import cli, cli_flags, configs, task
from litesys.eval.tasks.lcb import main as lcb_main
from litesys.eval.tasks.math import main as math_main
from litesys.sampling_params import SamplingParams

# run_config.json's keys before the typed configs (eval_math.py, dense, default KV): a folder made then must resume
MATH_KEYS = {"task", "model", "dtype", "data", "data_fingerprint", "prompt_template", "sparse", "temperature", "top_p",
             "top_k", "min_p", "gen_len", "repeat_check", "repeat_check_window", "repeat_block_size", "seed",
             "max_len", "enable_thinking", "model_class", "grader", "compare_graders"}
LCB_KEYS = (MATH_KEYS - {"prompt_template", "grader", "compare_graders"}) | {"start_date", "end_date",
                                                                             "system_prompt"}


def parse(*argv: str) -> SparseConfig | None:
    parser = argparse.ArgumentParser()
    cli_flags.add_sparse_args(parser)
    return cli_flags.sparse_config(parser.parse_args(list(argv)))


def test_sparse_cli_round_trip() -> None:
    assert parse() is None  # no sparse flag: dense
    cfg = parse("--attn_block_topk", "8", "--attn_block_size", "32", "--attn_stride", "16", "--attn_local", "64",
                "--attn_layer_skip", "0", "1")
    assert cfg.method == "stride" and cfg.attn_block_size == 32 and cfg.attn_layer_skip == [0, 1]
    assert cfg == SparseConfig(**cfg.to_dict())  # metadata round trip
    assert parse("--attn_local", "4", "--attn_layer_skip").attn_layer_skip == []  # every layer sparse
    cfg = parse("--quest_topk_blocks", "32")
    assert cfg.method == "quest" and cfg.quest_page_size == 16
    cfg = parse("--attn_custom", "threshold", "--attn_custom_arg", "tau=2.5", "--attn_local", "8")
    assert cfg.method == "threshold" and cfg.attn_custom_args == {"tau": 2.5}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse("--attn_custom", "threshold", "--attn_custom_arg", "tau", "--attn_local", "8")
    # every SparseConfig field has its flag, with the field's default
    parser = argparse.ArgumentParser()
    cli_flags.add_sparse_args(parser)
    ns = vars(parser.parse_args([]))
    for f in fields(SparseConfig):
        if f.name == "attn_custom_args":
            assert ns["attn_custom_arg"] == []
        else:
            want = f.default if f.default is not MISSING else f.default_factory()
            assert ns[f.name] == want, f.name


def _engine_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def test_engine_flags_come_from_the_config_fields() -> None:
    """Each EngineConfig field whose metadata names a flag is on both eval scripts (under that flag, with the
    field's help), except --seed (a run flag) and --tp (the torchrun scripts'); API_FLAGS is that metadata."""
    flagged = {f.name: f.metadata["flag"] for f in fields(EngineConfig) if f.metadata.get("flag")}
    assert {"max_seq_len", "dtype", "device", "model_class", "kv_cache_dtype"} <= set(flagged)
    for parser in (math_main.build_parser(), lcb_main.build_parser()):
        actions = _engine_actions(parser)
        for name, flag in flagged.items():
            if name == "tensor_parallel_size":
                assert cli_flags.dest(flag) not in actions  # torchrun_main parses --tp
                continue
            act = actions[cli_flags.dest(flag)]
            assert flag in act.option_strings, (name, act.option_strings)
        field = {f.name: f for f in fields(EngineConfig)}["gpu_memory_utilization"]
        act = actions["gpu_memory_utilization"]
        assert act.default == field.default and field.metadata["help"] in act.help
    api = cli.api_flags()
    assert all(api[name] == flag for name, flag in flagged.items())
    assert api["max_new_tokens"] == "--gen_len" and api["max_seq_len"] == "--max_len"
    assert api["tensor_parallel_size"] == "--tp"
    # sampling flags: SamplingParams' types; the eval defaults are Qwen3's thinking settings
    ns = math_main.build_parser().parse_args(["--task", "gsm8k", "--model", "m"])
    sp = cli_flags.sampling_params(ns)
    assert sp == SamplingParams(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0, max_new_tokens=32768, seed=0, n=1)


def test_engine_config_and_record_from_flags(tmp_path) -> None:
    ns = math_main.build_parser().parse_args(
        ["--task", "gsm8k", "--model", "m", "--max_len", "4096", "--gen_len", "100", "--gpu_memory_utilization", "0.5",
         "--max_num_seqs", "8", "--no-enable-thinking", "--seed", "3", "--no-repeat-check", "--temperature", "0"])
    eng = cli.engine_config(ns, "cpu", "float32", 2)
    assert eng == EngineConfig(device="cpu", dtype="float32", max_seq_len=4096, gpu_memory_utilization=0.5,
                               max_num_seqs=8, enable_thinking=False, seed=3, tensor_parallel_size=2)
    rec = configs.run_record(eng, cli.sampling_params(ns), None, ns.seed)
    assert rec == {"temperature": 0.0, "top_p": 0.95, "top_k": 20, "min_p": 0.0, "gen_len": 100, "repeat_check": False,
                   "repeat_check_window": 1024, "repeat_block_size": 64, "seed": 3, "max_len": 4096,
                   "enable_thinking": False, "model_class": None, "sparse": None}
    # fp8 KV: recorded (absolute path), so a resume cannot mix KV dtypes; the default stays out (old runs resume)
    scales = tmp_path / "s.json"
    scales.write_text("{}")
    ns = math_main.build_parser().parse_args(["--task", "gsm8k", "--model", "m", "--kv_cache_dtype", "fp8_e4m3",
                                              "--kv_scales", str(scales)])
    rec = configs.run_record(cli.engine_config(ns, "cpu", "float32"), cli.sampling_params(ns), None, 0)
    assert rec["kv_cache_dtype"] == "fp8_e4m3" and rec["kv_scales"] == str(scales.resolve())
    assert "deterministic" not in rec  # off: not recorded, as before the field existed
    ns = math_main.build_parser().parse_args(["--task", "gsm8k", "--model", "m", "--deterministic"])
    eng = cli.engine_config(ns, "cpu", "float32")
    assert eng.deterministic is True and configs.run_record(eng, cli.sampling_params(ns), None, 0)["deterministic"]
    # the engine's own checks, in the CLI's words
    bad = math_main.build_parser().parse_args(["--task", "gsm8k", "--model", "m", "--max_num_seqs", "0"])
    with pytest.raises(cli.UsageError, match="max_num_seqs") as e:
        cli.engine_config(bad, "cpu", "float32")
    assert cli.flag_message(str(e.value)).startswith("--max_num_seqs")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from checkpoints import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt"), "qwen3")


def test_prepare_builds_typed_configs_without_touching_the_flags(ckpt, tmp_path) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"{i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(3)))
    argv = ["--model", str(ckpt), "--task", "custom", "--data-file", str(data), "--max_len", "256", "--gen_len", "8",
            "--device", "cpu", "--trial", "2", "--attn_local", "8", "--output_dir", str(tmp_path / "out")]
    args = math_main.build_parser().parse_args(argv)
    before = copy.deepcopy(vars(args))
    plan = math_main.prepare(args)
    assert vars(args) == before  # no Namespace mutation
    assert not (tmp_path / "out").exists()  # nothing written
    assert set(plan.config) == MATH_KEYS and plan.config["sparse"]["attn_local"] == 8
    assert isinstance(plan.engine.config, EngineConfig) and plan.engine.sparse == SparseConfig(attn_local=8)
    job = task.make_job(math_main.TASK, args, plan)
    assert len(job.items) == 6 and {it.sampling.seed for it in job.items} == {
        task.sample_seed(0, f"p{i}", t) for i in range(3) for t in range(2)}
    # what a data-parallel worker receives: the job itself, typed configs inside, no argparse Namespace
    blob = pickle.dumps(job)
    assert b"argparse" not in blob and pickle.loads(blob).make_llm == job.make_llm
    lcb_args = lcb_main.build_parser().parse_args(["--model", str(ckpt), "--data_file", str(data)])
    assert set(configs.run_record(plan.engine.config, plan.sampling, None, 0)) | {
        "task", "model", "dtype", "data", "data_fingerprint"} | set(lcb_main.TASK.run_config(lcb_args)) == LCB_KEYS


def test_tp_not_dividing_the_heads_is_refused_before_writing(ckpt, tmp_path) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"problem": "1 + 1?", "answer": "2"}) + "\n")
    args = math_main.build_parser().parse_args(["--model", str(ckpt), "--task", "custom", "--data-file", str(data),
                                                "--max_len", "256", "--gen_len", "8", "--device", "cpu",
                                                "--output_dir", str(tmp_path / "out")])
    heads = json.loads((ckpt / "config.json").read_text())["num_attention_heads"]
    with pytest.raises(cli.UsageError, match=rf"^--tp {heads + 1}: tensor-parallel size {heads + 1} does not divide"):
        math_main.prepare(args, tensor_parallel_size=heads + 1)
    assert not (tmp_path / "out").exists()
    math_main.prepare(args, tensor_parallel_size=2)  # a size that fits passes the check
