"""Task registry, local files (JSONL/parquet), field mapping, gold normalization and prompt templates."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from litesys.eval.tasks.math.data import TASKS, DataError, build_prompt, load_task, normalize_gold

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZES = {"aime24": 30, "aime25": 30, "amc23": 40, "math500": 500, "gsm8k": 1319}


def _need_data():
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (the shared data folder is absent)")


def test_registry_maps_tasks_to_hub_datasets():
    assert {t: (s.hub_id, s.hub_config, s.split) for t, s in TASKS.items()} == {
        "aime24": ("HuggingFaceH4/aime_2024", None, "train"), "aime25": ("math-ai/aime25", None, "test"),
        "amc23": ("math-ai/amc23", None, "test"), "math500": ("HuggingFaceH4/MATH-500", None, "test"),
        "gsm8k": ("openai/gsm8k", "main", "test")}


@pytest.mark.parametrize("task", list(SIZES))
def test_local_copies_load_with_ids_questions_answers(task):
    _need_data()
    ds = load_task(task, data_dir=str(DATA))
    assert len(ds.problems) == SIZES[task]
    first = json.loads((DATA / f"{task}.jsonl").read_text().splitlines()[0])
    p = ds.problems[0]
    assert p.id == first["id"] and p.question == first.get("problem", first.get("question"))
    assert p.answer == first["answer"]
    assert load_task(task, data_dir=str(DATA), limit=3).problems == ds.problems[:3]
    # a larger --limit later must resume the same run: the fingerprint covers the whole file
    assert load_task(task, data_dir=str(DATA), limit=3).fingerprint == ds.fingerprint


def test_gold_normalization():
    assert normalize_gold("gsm8k", "She pays 2 + 3 = <<2+3=5>>5\n#### 1,005") == "1005"  # hub gsm8k answers
    assert normalize_gold("amc23", 27.0) == "27"  # hub amc23 answers are floats
    assert normalize_gold("math500", " \\frac{1}{2} ") == "\\frac{1}{2}"


def test_custom_task_jsonl_and_parquet(tmp_path):
    rows = [{"q": "1+1?", "a": 2, "uid": "x"}, {"q": "2+2?", "a": 4, "uid": "y"}]
    f = tmp_path / "mine.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_task("custom", data_file=str(f), question_field="q", answer_field="a")
    assert [(p.id, p.question, p.answer) for p in ds.problems] == [("custom-0", "1+1?", "2"), ("custom-1", "2+2?", "4")]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mine.parquet")
    ds2 = load_task("custom", data_file=str(tmp_path / "mine.parquet"), question_field="q", answer_field="a")
    assert ds2.problems == ds.problems


def test_bad_data_inputs_say_what_to_do(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"text": "hi", "answer": "1"}) + "\n")
    with pytest.raises(DataError, match="unknown --task 'aime99'.*aime24"):
        load_task("aime99")
    with pytest.raises(DataError, match="does not exist"):
        load_task("gsm8k", data_file=str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="no question field 'problem' or 'question' .*fields: text, answer.*"
                                        "--question-field"):
        load_task("aime24", data_file=str(f))
    with pytest.raises(DataError, match="--task custom needs --data-file"):
        load_task("custom")
    with pytest.raises(DataError, match="no gsm8k.jsonl or gsm8k.parquet"):
        load_task("gsm8k", data_dir=str(tmp_path))
    f.write_text('{"problem": "a", "answer": "1"}\n{not json\n')
    with pytest.raises(DataError, match="x.jsonl:2 is not valid JSON"):
        load_task("aime24", data_file=str(f))


def test_hub_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails as if not installed
    with pytest.raises(DataError, match="pip install datasets.*--data-dir"):
        load_task("gsm8k")


def test_prompt_templates():
    lit = build_prompt("litesys", "What is 1+1?")
    assert lit[0]["role"] == "user"
    text = lit[0]["content"]
    assert text.startswith("Solve the following math problem efficiently and clearly.")
    assert "$\\boxed{ANSWER}$" in text and text.endswith("\n\nWhat is 1+1?")
    qwen = build_prompt("qwen", "What is 1+1?")[0]["content"]
    assert qwen == "What is 1+1?\nPlease reason step by step, and put your final answer within \\boxed{}."
    with pytest.raises(DataError, match="unknown --prompt-template"):
        build_prompt("nope", "q")


def test_hub_tasks_load_through_datasets(monkeypatch):
    """The hub path without the network: datasets.load_dataset is asked for the registry's id/config/split, and
    its rows go through the same field mapping and gold normalisation as local files."""
    datasets = pytest.importorskip("datasets")
    asked = []

    def load_dataset(hub_id, config, split):
        asked.append((hub_id, config, split))
        return datasets.Dataset.from_list([{"question": "Two plus three?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
                                           {"question": "Ten times 100?", "answer": "...\n#### 1,000"}])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    ds = load_task("gsm8k", limit=1)
    assert asked == [("openai/gsm8k", "main", "test")] and ds.source == "hf:openai/gsm8k/main"
    assert [(p.id, p.question, p.answer) for p in ds.problems] == [("gsm8k-0", "Two plus three?", "5")]
    assert load_task("gsm8k").problems[1].answer == "1000"

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as e:
        load_task("gsm8k")
    assert "\n" not in str(e.value) and "could not load openai/gsm8k from the hub (ConnectionError" in str(e.value)
    assert "--data-dir" in str(e.value)
