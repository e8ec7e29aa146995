"""The generic runner with a stand-in engine: append-as-you-go, resume, torn lines, run-config refusal, reading
back only keys / projected fields."""
from __future__ import annotations

import json
import tracemalloc

import pytest

from litesys.eval import runner
from litesys.eval.runner import Job, RunError, WorkItem, read_samples, run, sample_seed, shard_path
from litesys.outputs import CompletionOutput, RequestOutput
from litesys.sampling_params import SamplingParams


class Crash(Exception):
    pass


class FakeLLM:
    """Finishes requests in reverse order; output text = prompt + seed; may crash after some finishes."""

    def __init__(self, crash_after: int | None = None):
        self.crash_after = crash_after
        self.calls: list[int] = []

    def generate(self, prompts, params, progress=False, on_finish=None, on_progress=None):
        outs = [None] * len(prompts)
        for done, i in enumerate(reversed(range(len(prompts)))):
            if self.crash_after is not None and done == self.crash_after:
                raise Crash("killed")
            text = f"{prompts[i]}|{params[i].seed}"
            outs[i] = RequestOutput([1], [CompletionOutput([7] * (i + 1), text, "stop")])
            self.calls.append(i)
            on_finish(i, outs[i])
        return outs


def _job(llm: FakeLLM, problems=("a", "b", "c"), trials=2, seed=0, **fields) -> Job:
    items = [WorkItem(p, t, f"Q{p}", SamplingParams(seed=sample_seed(seed, p, t)), {"answer": p, **fields})
             for p in problems for t in range(trials)]
    return Job(items, lambda device: llm)


def test_sample_seed_depends_on_run_seed_problem_and_trial_only():
    s = sample_seed(0, "p", 1)
    assert s == sample_seed(0, "p", 1) and 0 <= s < 2 ** 31
    assert len({s, sample_seed(1, "p", 1), sample_seed(0, "q", 1), sample_seed(0, "p", 0)}) == 4


def test_samples_are_written_as_they_finish_and_resume_skips_them(tmp_path):
    cfg = {"model": "m", "temperature": 0.6}
    crashing = FakeLLM(crash_after=2)
    with pytest.raises(Crash):
        run(_job(crashing), tmp_path, ["cpu"], cfg)
    first = read_samples(tmp_path)
    assert len(first) == 2  # the two finished before the crash are on disk
    assert {(r["problem_id"], r["trial"]) for r in first} == {("c", 1), ("c", 0)}
    resumed = FakeLLM()
    res = run(_job(resumed), tmp_path, ["cpu"], cfg)
    recs = list(res.records())
    assert len(resumed.calls) == 4  # only the missing pairs were generated
    assert len(recs) == 6 and len({(r["problem_id"], r["trial"]) for r in recs}) == 6
    full = list(run(_job(FakeLLM()), tmp_path / "full", ["cpu"], cfg).records())
    key = lambda r: (r["problem_id"], r["trial"])  # noqa: E731
    assert sorted(recs, key=key) == sorted(full, key=key)  # same records as an uninterrupted run
    rec = next(r for r in recs if key(r) == ("a", 1))
    assert rec["output"] == f"Qa|{sample_seed(0, 'a', 1)}" and rec["answer"] == "a"
    assert rec["num_tokens"] == 2 and rec["finish_reason"] == "stop" and rec["seed"] == sample_seed(0, "a", 1)


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    cfg = {"model": "m"}
    run(_job(FakeLLM(), problems=("a",), trials=1), tmp_path, ["cpu"], cfg)
    path = shard_path(tmp_path, 0)
    with open(path, "a") as f:
        f.write('{"problem_id": "b", "tri')  # what a SIGKILL mid-write leaves
    assert len(read_samples(tmp_path)) == 1
    res = run(_job(FakeLLM(), problems=("a", "b"), trials=1), tmp_path, ["cpu"], cfg)
    assert res.num_samples == 2 and len(list(res.records())) == 2
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


def test_other_settings_refuse_to_mix(tmp_path):
    run(_job(FakeLLM(), trials=1), tmp_path, ["cpu"], {"model": "m", "temperature": 0.6})
    before = shard_path(tmp_path, 0).read_bytes()
    with pytest.raises(RunError, match="temperature: 0.6 there, 0.0 now.*another --output_dir"):
        run(_job(FakeLLM(), trials=1), tmp_path, ["cpu"], {"model": "m", "temperature": 0.0})
    assert shard_path(tmp_path, 0).read_bytes() == before


def test_processor_runs_before_writing_and_its_failure_is_reported(tmp_path):
    class Upper:
        closed = False

        def __call__(self, records):
            for r in records:
                r["output"] = r["output"].upper()
            return records

        def close(self):
            Upper.closed = True

    job = _job(FakeLLM(), problems=("a",), trials=1)
    job.make_processor = Upper
    recs = list(run(job, tmp_path, ["cpu"], {}).records())
    assert recs[0]["output"] == recs[0]["output"].upper() and Upper.closed

    class Broken(Upper):
        def __call__(self, records):
            raise OSError("disk full")

    job = _job(FakeLLM(), problems=("b",), trials=1)
    job.make_processor = Broken
    with pytest.raises(RunError, match="writing samples failed: disk full"):
        run(job, tmp_path / "b", ["cpu"], {})


def test_output_field_names_the_generated_text(tmp_path):
    job = _job(FakeLLM(), problems=("a",), trials=1)
    job.output_field = "output_text"
    (rec,) = run(job, tmp_path, ["cpu"], {}).records()
    assert rec["output_text"] == f"Qa|{sample_seed(0, 'a', 0)}" and "output" not in rec


def test_result_holds_keys_and_streams_only_the_requested_samples(tmp_path):
    run(_job(FakeLLM(), problems=("a", "b", "c"), trials=2), tmp_path, ["cpu"], {})
    res = run(_job(FakeLLM(), problems=("a", "b"), trials=1), tmp_path, ["cpu"], {})  # --limit 2
    assert res.num_samples == 2 and res.done == {("a", 0), ("b", 0)}
    assert sorted((r["problem_id"], r["trial"]) for r in res.records()) == [("a", 0), ("b", 0)]
    assert [set(r) for r in res.records(fields=("num_tokens",))] == [{"problem_id", "trial", "num_tokens"}] * 2
    # a record written with another key order (by hand, or another tool) is still recognised
    with open(shard_path(tmp_path, 1), "w") as f:
        f.write(json.dumps({"trial": 5, "answer": "x", "problem_id": "a\"q"}) + "\n")
    assert ("a\"q", 5) in runner.done_keys(tmp_path) and len(runner.done_keys(tmp_path)) == 7
    with open(shard_path(tmp_path, 2), "w") as f:
        f.write("not json\n")
    with pytest.raises(RunError, match=r"samples.2.jsonl:1 is not valid JSON"):
        runner.done_keys(tmp_path)


def test_reading_back_never_holds_all_the_records(tmp_path):
    """LiveCodeBench lines carry megabytes of test cases: the done set and a projected read hold one line at a
    time, not the shards (24 lines x 2 MB here; a line costs a few times its size while parsed)."""
    blob = "t" * (2 << 20)
    run(_job(FakeLLM(), problems=tuple("abcdefghijkl"), trials=2, tests=blob), tmp_path, ["cpu"], {})
    assert shard_path(tmp_path, 0).stat().st_size > 48 << 20

    def peak(fn) -> int:
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(lambda: len(runner.done_keys(tmp_path))) < 12 << 20
    assert peak(lambda: list(runner.iter_samples(tmp_path, fields=("num_tokens",)))) < 16 << 20
    assert len(runner.done_keys(tmp_path)) == 24
    assert all(r["tests"] == blob for r in runner.iter_samples(tmp_path, keys={("a", 0)}))
