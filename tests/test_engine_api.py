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
    other = tmp_path / "llama"
    shutil.copytree(real_vocab_ckpt, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["model_type"] = "llama"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unsupported model type 'llama'.*model_class"):
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
