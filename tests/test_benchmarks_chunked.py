"""benchmarks/chunked_prefill.py on the CPU at tiny shapes: the long prompt goes in ceil(prompt / chunk) steps with the
other sequences decoding at every later one (hand-counted tokens), in one step without chunking (no decode
meanwhile), the same tokens both ways (fp32), and bad flags exit with one line naming the flag."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import chunked_prefill as cp  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: many tiny ops


def test_chunked_vs_whole_on_cpu(tmp_path):
    res = cp.main(["--smoke", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "chunked_prefill.json").read_text()) == json.loads(json.dumps(res))
    s = cp.SMOKE_SIZES
    chunked, whole = res["modes"]["chunked"], res["modes"]["whole"]
    steps = -(-s["prompt"] // s["chunk"])
    assert chunked["max_num_batched_tokens"] == s["chunk"] and chunked["long_prefill_steps"] == steps == 7
    # the first chunk is its admission step; each later one follows a decode step of the seqs - 1 still running
    assert chunked["decode_tokens_during"] == (steps - 1) * (s["seqs"] - 1)
    assert whole["long_prefill_steps"] == 1 and whole["decode_tokens_during"] == 0
    assert whole["decode_tok_s_during"] == 0 < chunked["decode_tok_s_during"]
    assert res["sequences"] == s["seqs"] + 1 and res["same_tokens"] == res["sequences"]


@pytest.mark.parametrize("flags, message", [
    (["--prompt", "32"], r"--prompt \(32\) must exceed --chunk \(32\)"),
    (["--seqs", "1"], "--seqs must be >= 2"),
    (["--chunk", "0"], "--chunk must be >= 1"),
    (["--new", "10"], "--new must exceed --warm"),
])
def test_bad_flags_name_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit, match=message) as e:
        cp.main(["--smoke", *flags])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
