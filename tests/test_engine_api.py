"""Public API: prompt forms (ids, text, chat template), and one-line errors for bad input."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from checkpoints import FIXTURES, make_checkpoint

from litesys import LLM, SamplingParams


@pytest.fixture(scope="module")
def real_vocab_ckpt(tmp_path_factory):
    # the real Qwen3 vocabulary so the shipped tokenizer and chat template apply
    return make_checkpoint(tmp_path_factory.mktemp("rv") / "m", "qwen3", num_hidden_layers=1, hidden_size=32,
                           intermediate_size=64, head_dim=16)


@pytest.fixture(scope="module")
def llm(real_vocab_ckpt):
    return LLM(str(real_vocab_ckpt), device="cpu", dtype=torch.float32, max_seq_len=128)


def test_text_and_chat_prompts_use_the_tokenizer_and_template(llm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(FIXTURES)
    conv = [{"role": "user", "content": "What is 2+2?"}]
    p = SamplingParams(temperature=0, max_new_tokens=5, ignore_eos=True)
    by_ids = llm.generate([tok("Hello there")["input_ids"]], p)[0]
    by_text = llm.generate(["Hello there"], p)[0]
    assert by_text.token_ids == by_ids.token_ids
    assert by_text.text == tok.decode(by_text.token_ids, skip_special_tokens=True)
    chat = llm.generate([conv], p)[0]
    expect = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
    assert chat.prompt_token_ids == tok(expect)["input_ids"]
    llm.enable_thinking = False
    try:
        no_think = llm.generate([conv], p)[0]
    finally:
        llm.enable_thinking = None
    text = tok.decode(no_think.prompt_token_ids)
    assert "<think>\n\n</think>" in text and "<think>\n\n</think>" not in expect


def test_eos_ids_come_from_generation_and_model_config(llm):
    assert set(llm.cfg.eos_token_ids) == {151645, 151643}  # <|im_end|>, <|endoftext|>


@pytest.mark.parametrize("make_params,msg", [
    (lambda: SamplingParams(max_new_tokens=0), "max_new_tokens must be >= 1"),
    (lambda: SamplingParams(top_p=0.0), "top_p must be in (0, 1]"),
    (lambda: SamplingParams(top_p=1.5), "top_p must be in (0, 1]"),
    (lambda: SamplingParams(temperature=-0.1), "temperature must be >= 0"),
    (lambda: SamplingParams(n=0), "n must be >= 1"),
])
def test_bad_sampling_params(make_params, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")) as e:
        make_params()
    assert "\n" not in str(e.value)


def test_bad_generate_input(llm):
    with pytest.raises(ValueError, match="prompts is empty"):
        llm.generate([], SamplingParams())
    with pytest.raises(ValueError, match="leaves no room to generate.*raise max_seq_len"):
        llm.generate([[1] * 200], SamplingParams())
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        llm.generate([[]], SamplingParams())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate([[10**9]], SamplingParams())


def test_bad_model_paths_and_types(tmp_path, real_vocab_ckpt):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LLM(str(tmp_path / "nope"), device="cpu")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LLM(str(tmp_path), device="cpu")
    other = tmp_path / "mistral"
    shutil.copytree(real_vocab_ckpt, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["model_type"] = "mistral"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported model type 'mistral'.*model_class"):
        LLM(str(other), device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="unsupported model type 'gpt2'"):
        LLM(str(real_vocab_ckpt), device="cpu", model_class="gpt2")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            LLM(str(real_vocab_ckpt), device="cuda")


def test_progress_bar_reports_requests_and_throughput(llm, monkeypatch, capsys):
    monkeypatch.setenv("LITESYS_NO_PROGRESS", "0")
    llm.generate([[1, 2, 3], [4, 5]], SamplingParams(temperature=0, max_new_tokens=3, ignore_eos=True),
                 progress=True)
    err = capsys.readouterr().err
    assert "generate" in err and "2/2" in err


# ---- every bad input gets a one-line error that names the argument ------------------------------------------
def _one_line(excinfo, name: str) -> None:
    msg = str(excinfo.value)
    assert "\n" not in msg and name in msg, msg


@pytest.mark.parametrize("kw,name", [
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")), "temperature"),
    (dict(temperature="0.6"), "temperature"), (dict(temperature=True), "temperature"),
    (dict(top_p=float("nan")), "top_p"), (dict(min_p="0"), "min_p"),
    (dict(top_k=2.5), "top_k"), (dict(top_k=True), "top_k"), (dict(top_k=-2), "top_k"),
    (dict(n=2.0), "n"), (dict(n=True), "n"),
    (dict(seed=-1), "seed"), (dict(seed=1.0), "seed"), (dict(seed="1"), "seed"),
    (dict(max_new_tokens=None), "max_new_tokens"), (dict(max_new_tokens=2.5), "max_new_tokens"),
    (dict(max_new_tokens=False), "max_new_tokens"),
    (dict(ignore_eos="false"), "ignore_eos"), (dict(repeat_check=1), "repeat_check"),
    (dict(repeat_block_size=4.0), "repeat_block_size"),
])
def test_bad_sampling_param_types(kw, name):
    with pytest.raises(ValueError) as e:
        SamplingParams(**kw)
    assert str(e.value).startswith(name + " must")
    _one_line(e, name)


def test_numpy_scalars_are_accepted():
    import numpy as np

    p = SamplingParams(temperature=np.float32(0.5), top_k=np.int64(3), n=np.int64(2), seed=np.int64(7))
    assert p.top_k == 3 and p.n == 2


@pytest.mark.parametrize("kw,name", [
    (dict(dtype="int8"), "dtype"), (dict(dtype=torch.int8), "dtype"), (dict(device="gpu"), "device"),
    (dict(device="mps"), "device"), (dict(max_seq_len=2.5), "max_seq_len"), (dict(max_seq_len=1), "max_seq_len"),
    (dict(gpu_memory_utilization="0.9"), "gpu_memory_utilization"),
    (dict(gpu_memory_utilization=float("nan")), "gpu_memory_utilization"),
    (dict(gpu_memory_utilization=1.5), "gpu_memory_utilization"), (dict(max_num_seqs=0), "max_num_seqs"),
    (dict(page_size=True), "page_size"), (dict(num_kv_pages=1), "num_kv_pages"),
    (dict(max_num_batched_tokens=8.0), "max_num_batched_tokens"), (dict(check_every=0), "check_every"),
    (dict(tensor_parallel_size=0), "tensor_parallel_size"), (dict(attention_backend="flash"), "attention_backend"),
    (dict(load_format="pt"), "load_format"), (dict(enable_thinking="yes"), "enable_thinking"),
    (dict(seed="0"), "seed"), (dict(max_seq_len=5000), "max_seq_len"),
])
def test_bad_llm_arguments(real_vocab_ckpt, kw, name):
    kw = {"device": "cpu", **kw}
    with pytest.raises(ValueError) as e:
        LLM(str(real_vocab_ckpt), **kw)
    _one_line(e, name)


def test_dtype_names_and_long_context_opt_in(real_vocab_ckpt):
    llm = LLM(str(real_vocab_ckpt), device="cpu", dtype="float32", max_seq_len=64)
    assert llm.dtype == torch.float32
    assert LLM(str(real_vocab_ckpt), device="cpu", max_seq_len=64).dtype == torch.float32  # auto on the CPU
    assert LLM(str(real_vocab_ckpt), device="cpu", dtype="bf16", max_seq_len=64).dtype == torch.bfloat16
    assert LLM(str(real_vocab_ckpt), device="cpu").max_seq_len == 4096  # default: the model's context length
    with pytest.raises(ValueError, match="above the model's context length 4096.*allow_long_max_seq_len"):
        LLM(str(real_vocab_ckpt), device="cpu", max_seq_len=5000)
    long = LLM(str(real_vocab_ckpt), device="cpu", max_seq_len=5000, allow_long_max_seq_len=True,
               max_num_seqs=2, num_kv_pages=400)
    assert long.max_seq_len == 5000


@pytest.mark.parametrize("call,name", [
    (lambda llm: llm.generate("hello"), "prompts must be a list"),
    (lambda llm: llm.generate([{"role": "user", "content": "hi"}]), "pass [conversation]"),
    (lambda llm: llm.generate([1, 2, 3]), "pass [[id, id, ...]]"),
    (lambda llm: llm.generate([[1, 2], 5]), "prompt 1 is not a list of token ids"),
    (lambda llm: llm.generate([[1, 2], [3, None]]), "prompt 1 is not a list of token ids"),
    (lambda llm: llm.generate({"a": 1}), "prompts must be a list"),
    (lambda llm: llm.generate([[1]], "greedy"), "sampling_params must be a SamplingParams"),
    (lambda llm: llm.generate([[1], [2]], [SamplingParams(), {}]), "sampling_params[1]"),
    (lambda llm: llm.generate([[1]], on_finish=5), "on_finish must be a callable"),
    (lambda llm: llm.generate([[{"content": "hi"}]]), "prompt 0, message 0 has role None"),
    (lambda llm: llm.generate([[{"role": "robot", "content": "hi"}]]), "message 0 has role 'robot'"),
    (lambda llm: llm.generate([[{"role": "user"}]]), "message 0 (user) has no 'content'"),
    (lambda llm: llm.generate([[{"role": "user", "content": 5}]]), "has no 'content' string"),
    (lambda llm: llm.generate([[{"role": "user", "content": "a"}, "b"]]), "prompt 0, message 1 is a str"),
])
def test_bad_prompts(llm, call, name):
    with pytest.raises(ValueError) as e:
        call(llm)
    _one_line(e, name)


def test_missing_tokenizer_and_chat_template(tmp_path, real_vocab_ckpt):
    bare = tmp_path / "bare"
    shutil.copytree(real_vocab_ckpt, bare)
    (bare / "tokenizer.json").unlink()
    (bare / "tokenizer_config.json").unlink()
    llm = LLM(str(bare), device="cpu", dtype=torch.float32, max_seq_len=64)
    for prompt in ("hello", [{"role": "user", "content": "hi"}]):
        with pytest.raises(FileNotFoundError, match=f"{bare} has no tokenizer.*token-id prompts") as e:
            llm.generate([prompt])
        _one_line(e, "tokenizer=")
    out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_new_tokens=2, ignore_eos=True))[0]
    assert len(out.token_ids) == 2 and out.text == ""  # token ids work without a tokenizer
    shutil.copy(real_vocab_ckpt / "tokenizer.json", bare / "tokenizer.json")  # a tokenizer, no chat template
    llm = LLM(str(bare), device="cpu", dtype=torch.float32, max_seq_len=64)
    with pytest.raises(ValueError, match="has no chat template") as e:
        llm.generate([[{"role": "user", "content": "hi"}]])
    _one_line(e, "prompt 0")


def test_broken_weights_name_the_file(tmp_path, real_vocab_ckpt):
    from safetensors.torch import load_file, save_file

    bad = tmp_path / "trunc"
    shutil.copytree(real_vocab_ckpt, bad)
    f = bad / "model.safetensors"
    data = f.read_bytes()
    for cut in (5, len(data) // 2):
        f.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or corrupt") as e:
            LLM(str(bad), device="cpu", dtype=torch.float32, max_seq_len=64)
        _one_line(e, str(f))
    tensors = load_file(real_vocab_ckpt / "model.safetensors")
    del tensors["model.norm.weight"]
    save_file(tensors, f)
    with pytest.raises(ValueError, match="has no tensor 'model.norm.weight'") as e:
        LLM(str(bad), device="cpu", dtype=torch.float32, max_seq_len=64)
    _one_line(e, str(bad))
    (bad / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": "model-00002.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="model-00002.safetensors is missing") as e:
        LLM(str(bad), device="cpu", dtype=torch.float32, max_seq_len=64)
    _one_line(e, "model-00002")


def test_rope_scaling_extends_the_context_limit(tmp_path, real_vocab_ckpt):
    yarn = tmp_path / "yarn"
    shutil.copytree(real_vocab_ckpt, yarn)
    cfg = json.loads((yarn / "config.json").read_text())
    cfg["rope_scaling"] = {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 4096}
    (yarn / "config.json").write_text(json.dumps(cfg))
    small = dict(device="cpu", dtype=torch.float32, max_num_seqs=1, num_kv_pages=600)
    assert LLM(str(yarn), max_seq_len=8192, **small).max_seq_len == 8192  # 4096 x 2
    with pytest.raises(ValueError, match="max_seq_len=8193 is above the model's context length 8192"):
        LLM(str(yarn), max_seq_len=8193, **small)
