"""Tensor parallelism on CPU (gloo): N ranks against the single-process run, float32.

Each multi-rank test spawns its ranks once (tests/dist_utils.py) and checks several checkpoints in them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from checkpoints import make_checkpoint, prefill_logits
from dist_utils import RankError, run_ranks, torchrun

from litesys import LLM, SamplingParams
from litesys.distributed import Dist
from litesys.models.config import ModelConfig
from litesys.models.qwen3_dist import Qwen3DistForCausalLM
from litesys.models.tp import kv_head_shard

VOCAB = 1024
# name -> (model type, overrides); comments: what TP 2 / TP 4 does with the KV heads
SHAPES = {
    "qwen3_kv2": ("qwen3", dict(num_attention_heads=4, num_key_value_heads=2)),  # split / replicated
    "qwen3_kv1_tied": ("qwen3", dict(num_attention_heads=4, num_key_value_heads=1,  # replicated / replicated
                                     tie_word_embeddings=True)),
    "qwen2_kv2_tied": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen2_kv4": ("qwen2", dict(num_attention_heads=8, num_key_value_heads=4, head_dim=16)),  # split / split
    "llama_kv2": ("llama", dict(num_attention_heads=4, num_key_value_heads=2)),  # split / replicated
}
GREEDY = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True, repeat_check=False)
SAMPLED = SamplingParams(temperature=1.0, top_p=0.95, top_k=0, max_new_tokens=12, seed=7, ignore_eos=True,
                         repeat_check=False)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp_ckpts")
    return {k: str(make_checkpoint(root / k, mt, with_tokenizer=False, vocab_size=VOCAB, **kw))
            for k, (mt, kw) in SHAPES.items()}


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (1, 7, 20, 33)]


def _llm(path: str, tp: int) -> LLM:
    return LLM(path, device="cpu", dtype=torch.float32, max_seq_len=96, num_kv_pages=64, max_num_seqs=8,
               tensor_parallel_size=tp)


def _run_model(path: str, tp: int) -> dict:
    llm = _llm(path, tp)
    prompts = _prompts()
    finished: list[int] = []
    greedy = llm.generate(prompts, GREEDY, on_finish=lambda i, o: finished.append(i))
    sampled = llm.generate(prompts, SAMPLED)
    return {"logits": prefill_logits(llm.model, prompts), "greedy": [o.token_ids for o in greedy],
            "sampled": [o.token_ids for o in sampled], "reported": sorted(finished),
            "heads": (llm.model.q_heads, llm.model.kv_heads)}


def _tp_rank(rank: int, world: int, paths: dict[str, str]) -> dict:
    return {name: _run_model(path, world) for name, path in paths.items()}


def _check_against_single(per_rank: list[dict], ckpts: dict[str, str], world: int) -> None:
    for name, path in ckpts.items():
        ref = _run_model(path, 1)
        for rank, res in enumerate(per_rank):
            r = res[name]
            err = (r["logits"] - ref["logits"]).abs().max().item()
            assert err < 1e-4, f"{name} rank {rank}: prefill logits differ by {err}"
            # every rank holds the very same gathered logits (each vocab slice is one rank's bytes)
            assert torch.equal(r["logits"], per_rank[0][name]["logits"])
            assert r["greedy"] == ref["greedy"], f"{name} rank {rank}: greedy tokens differ"
            assert r["sampled"] == ref["sampled"], f"{name} rank {rank}: sampled tokens differ"
            # only tp-rank 0 reports finished requests (it alone writes output)
            assert r["reported"] == (list(range(4)) if rank == 0 else [])
        nq, nkv = SHAPES[name][1]["num_attention_heads"], SHAPES[name][1]["num_key_value_heads"]
        q_heads = [res[name]["heads"][0] for res in per_rank]
        kv_heads = [res[name]["heads"][1] for res in per_rank]
        assert q_heads == [(r * nq // world, (r + 1) * nq // world) for r in range(world)]
        if nkv >= world:
            assert kv_heads == [(r * nkv // world, (r + 1) * nkv // world) for r in range(world)]
        else:  # replicated: the KV head of the rank's query heads
            group = nq // nkv
            assert kv_heads == [(q[0] // group, q[0] // group + 1) for q in q_heads]


def test_tp2_matches_single_process(ckpts):
    _check_against_single(run_ranks(_tp_rank, 2, ckpts, timeout=240), ckpts, 2)


@pytest.mark.slow
def test_tp4_matches_single_process(ckpts):
    # replicated KV heads (2 for 4 ranks) and split ones (4 for 4 ranks); 1 KV head is covered by TP 2
    some = {k: ckpts[k] for k in ("qwen3_kv2", "qwen2_kv4")}
    _check_against_single(run_ranks(_tp_rank, 4, some, timeout=300), some, 4)


# ---- memory: each rank reads and keeps only its slices ---------------------------------------------------

def _proc_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, val = line.split(":", 1)
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(val.split()[0]) * 1024
    return out


def _weight_bytes(m) -> int:
    tensors = {id(t): t for t in [m.embed, m.lm_head, m.norm]}  # tied: lm_head is embed, counted once
    for w in m.layers:
        tensors.update({id(t): t for t in vars(w).values() if isinstance(t, torch.Tensor)})
    return sum(t.nbytes for t in tensors.values())


def _expected_bytes(cfg: ModelConfig, world: int) -> int:
    """fp32 bytes of one rank's shards, derived from the config alone."""
    H, D, w = cfg.hidden_size, cfg.head_dim, world
    kv_local = max(cfg.num_kv_heads // w, 1)
    per_layer = 2 * H + 2 * D + (cfg.num_heads // w + 2 * kv_local) * D * H + H * cfg.num_heads // w * D \
        + 3 * cfg.intermediate_size // w * H
    vocab = cfg.vocab_size // w * H * (1 if cfg.tie_word_embeddings else 2)
    return 4 * (vocab + H + cfg.num_layers * per_layer)


def _memory_rank(rank: int, world: int, path: str, warmup: str) -> dict:
    def build(p: str) -> LLM:
        llm = LLM(p, device="cpu", dtype=torch.float32, max_seq_len=64, num_kv_pages=4, max_num_seqs=2,
                  tensor_parallel_size=world)
        prefill_logits(llm.model, [list(range(24))])  # touch every weight once
        return llm

    build(warmup)  # first-use costs (library pages, allocator pools) out of the measurement
    before = _proc_status()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM: the peak below is this load's
    llm = build(path)
    after = _proc_status()
    return {"weights": _weight_bytes(llm.model), "peak": after["VmHWM"] - before["VmRSS"],
            "private": after["RssAnon"] - before["RssAnon"]}


@pytest.mark.slow
def test_each_rank_holds_only_its_shards(ckpts, tmp_path):
    # layers dominate (as in real models): 4 x [512 hidden, 2048 intermediate] + an 8192 vocabulary, ~96 MB fp32
    path = make_checkpoint(tmp_path / "mem", "qwen3", with_tokenizer=False, vocab_size=8192, hidden_size=512,
                           intermediate_size=2048, head_dim=128, num_hidden_layers=4, num_attention_heads=4,
                           num_key_value_heads=2)
    full = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    cfg = ModelConfig.from_dir(path)
    runs = {w: run_ranks(_memory_rank, w, str(path), ckpts["qwen3_kv2"], timeout=240) for w in (1, 2)}
    print(f"\ncheckpoint {full / 2**20:.1f} MiB; per rank: weights held / private memory growth / peak RSS growth "
          "(incl. shared page-cache mappings of the file) while loading + one prefill")
    for w, ranks in runs.items():
        for r, m in enumerate(ranks):
            print(f"  TP {w} rank {r}: {m['weights'] / 2**20:6.1f} / {m['private'] / 2**20:6.1f} / "
                  f"{m['peak'] / 2**20:6.1f} MiB")
            assert m["weights"] == _expected_bytes(cfg, w)
    assert runs[1][0]["weights"] > 0.99 * full  # the single process holds (about) the whole file
    for m in runs[2]:
        assert m["weights"] < 0.51 * full
        assert m["private"] < 0.85 * runs[1][0]["private"]
        assert m["peak"] < 0.95 * runs[1][0]["peak"]


# ---- failures: one rank's error ends the job, with that error shown ------------------------------------

def _one_rank_raises(rank: int, world: int) -> None:
    from litesys.distributed import init_tensor_parallel

    dist = init_tensor_parallel(world, "cpu")
    if rank == 1:
        raise ValueError("rank 1 failed on purpose")
    dist.all_reduce(torch.ones(4))  # rank 0 waits here for a peer that never comes


def _one_rank_dies(rank: int, world: int) -> None:
    if rank == 1:
        os._exit(3)
    time.sleep(600)


def _one_rank_hangs(rank: int, world: int) -> int:
    if rank == 0:
        time.sleep(600)
    return rank


def test_harness_fails_fast_with_the_rank_error():
    t0 = time.monotonic()
    with pytest.raises(RankError, match="rank 1 of 2 failed: ValueError: rank 1 failed on purpose") as e:
        run_ranks(_one_rank_raises, 2, timeout=120)
    assert "_one_rank_raises" in str(e.value)  # the rank's traceback
    with pytest.raises(RankError, match="rank 1 of 2 died with exit code 3"):
        run_ranks(_one_rank_dies, 2, timeout=120)
    # 30 s: rank 1 must have started (spawn + import torch, slow on busy CI cores) and returned by then
    with pytest.raises(RankError, match=r"timed out after 30s waiting for rank\(s\) \[0\]"):
        run_ranks(_one_rank_hangs, 2, timeout=30)
    assert time.monotonic() - t0 < 120  # nothing waited for the others' collectives to time out (gloo: 30 min)


DRIVER = """
import os, sys, torch
from litesys import LLM, SamplingParams

llm = LLM(sys.argv[1], device="cpu", dtype=torch.float32, max_seq_len=64, num_kv_pages=16, max_num_seqs=2,
          tensor_parallel_size=2)
if int(os.environ["RANK"]) == int(sys.argv[2]):
    raise RuntimeError("rank " + sys.argv[2] + " failed on purpose")
out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True))
print("TOKENS", os.environ["RANK"], out[0].token_ids, flush=True)
"""


@pytest.mark.slow
def test_torchrun_job_fails_with_the_rank_error(ckpts, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    ok = torchrun(script, ckpts["qwen3_kv2"], "-1")
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert ok.stdout.count("TOKENS") == 2
    t0 = time.monotonic()
    bad = torchrun(script, ckpts["qwen3_kv2"], "1")
    assert bad.returncode != 0
    assert "RuntimeError: rank 1 failed on purpose" in bad.stderr
    assert "TOKENS" not in bad.stdout  # rank 0 did not carry on alone
    assert time.monotonic() - t0 < 120


# ---- bad input: one-line errors ---------------------------------------------------------------------------

def _one_line_error(fn, match: str) -> str:
    with pytest.raises(ValueError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_launches_are_one_line_errors(ckpts, monkeypatch):
    path = ckpts["qwen3_kv2"]
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    _one_line_error(lambda: _llm(path, 2), r"tensor_parallel_size 2 needs one process per rank: launch with "
                                           r"torchrun --nproc_per_node 2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    _one_line_error(lambda: _llm(path, 2), "tensor_parallel_size 2 does not divide the world size 3")
    assert not torch.distributed.is_initialized()  # refused before joining any process group


def test_shapes_tp_cannot_split_are_one_line_errors(ckpts):
    cfg = ModelConfig.from_dir(Path(ckpts["qwen3_kv2"]))  # 4 heads, 2 KV heads, 128 intermediate, 1024 vocab
    msg = _one_line_error(lambda: Qwen3DistForCausalLM(cfg, "cpu", torch.float32, 64, Dist(0, 3)),
                          r"tensor-parallel size 3 does not divide num_attention_heads \(4\)")
    assert "intermediate_size (128)" in msg and "num_key_value_heads (2" in msg and "fit this model: 1, 2, 4" in msg
    cfg6 = ModelConfig(**{**vars(cfg), "num_heads": 6, "intermediate_size": 96, "vocab_size": 960})
    _one_line_error(lambda: Qwen3DistForCausalLM(cfg6, "cpu", torch.float32, 64, Dist(0, 3)),
                    r"does not divide num_key_value_heads \(2, neither a multiple nor a divisor of it\)")


def test_kv_head_shard_covers_every_query_head():
    for nq, nkv, world in [(4, 2, 2), (4, 2, 4), (8, 2, 8), (16, 8, 16), (64, 8, 8), (4, 1, 4)]:
        group = nq // nkv
        for r in range(world):
            q0, q1 = r * nq // world, (r + 1) * nq // world
            k0, k1 = kv_head_shard(Dist(r, world), nkv)
            # the rank's query heads attend exactly with its KV heads, in GQA order
            assert [q // group for q in range(q0, q1)] == [k0 + (q - q0) * (k1 - k0) // (q1 - q0)
                                                          for q in range(q0, q1)]


# ---- shape: single-device executors, tensor parallelism in optional thin variants ----------------------------

MODELS_DIR = Path(__file__).resolve().parents[1] / "litesys" / "models"


def test_base_executors_are_single_device():
    """No rank logic in a base executor: it never imports the distributed layer or the TP layers, never names a
    Dist; each *_dist.py variant is one small file (this rank's slices and the collectives only)."""
    import ast

    from litesys.models.registry import DIST_MODELS
    from litesys.models.registry import MODELS as BASES

    for spec in BASES.values():
        path = MODELS_DIR / (spec.split(":")[0].rsplit(".", 1)[1] + ".py")
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"litesys.distributed", "litesys.models.tp", "torch.distributed"}, path.name
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
                {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        assert not names & {"dist", "Dist", "world", "all_reduce", "all_gather_last"}, path.name
    for spec in DIST_MODELS.values():
        path = MODELS_DIR / (spec.split(":")[0].rsplit(".", 1)[1] + ".py")
        assert len(path.read_text().splitlines()) <= 80, f"{path.name} is no longer a thin variant"


# ---- eval_math_dist.py: data x tensor parallel replicas ------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = [("p0", "What is 2 + 3?", "5"), ("p1", "What is 7 * 6?", "42"), ("p2", "Compute 10 - 4.", "6"),
            ("p3", "What is 9 squared?", "81"), ("p4", "Half of 18?", "9")]


def _records_of(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def _records(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("samples.*.jsonl")) for r in _records_of(f)]


def _eval_flags(data: Path, ckpt: str, out: Path) -> list[str]:
    return ["--model", ckpt, "--task", "custom", "--data-file", str(data), "--trial", "2", "--gen_len", "6",
            "--max_len", "256", "--temperature", "0", "--device", "cpu", "--grade_workers", "1",
            "--output_dir", str(out)]


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory):
    import json

    root = tmp_path_factory.mktemp("tp_eval")
    ckpt = str(make_checkpoint(root / "ckpt", "qwen3"))  # with the real tokenizer: string prompts
    data = root / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": i, "problem": q, "answer": a}) + "\n" for i, q, a in PROBLEMS))
    return data, ckpt


@pytest.mark.slow
def test_eval_two_replicas_of_tp2_cover_the_single_process_run(eval_inputs, tmp_path):
    from litesys.eval.tasks.math.main import main

    data, ckpt = eval_inputs
    main(_eval_flags(data, ckpt, tmp_path / "single"))
    ref = {(r["problem_id"], r["trial"]): r for r in _records(tmp_path / "single")}
    assert len(ref) == 2 * len(PROBLEMS)

    out = tmp_path / "tp"
    run = torchrun(ROOT / "eval_math_dist.py", "--tp", "2", *_eval_flags(data, ckpt, out), nproc=4, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    assert sorted(p.name for p in out.glob("samples.*.jsonl")) == ["samples.0.jsonl", "samples.1.jsonl"]
    got = _records(out)
    keys = [(r["problem_id"], r["trial"]) for r in got]
    assert len(keys) == len(set(keys)), "a sample was written twice (by two replicas or two ranks)"
    assert set(keys) == set(ref)
    for r in got:
        assert (r["output"], r["num_tokens"]) == (ref[r["problem_id"], r["trial"]]["output"],
                                                  ref[r["problem_id"], r["trial"]]["num_tokens"])
    # the replicas pull samples from one queue (work_queue.py): which replica made which is up to their speed
    assert sum(len(_records_of(p)) for p in out.glob("samples.*")) == len(ref)
    assert (out / "summary.json").is_file() and run.stdout.count("samples:") == 1  # global rank 0 reports


@pytest.mark.slow
def test_eval_bad_tp_launches_are_one_line_errors(eval_inputs, tmp_path):
    data, ckpt = eval_inputs
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    plain = subprocess.run([sys.executable, str(ROOT / "eval_math_dist.py"), "--tp", "2",
                            *_eval_flags(data, ckpt, tmp_path / "a")], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=120)
    assert plain.returncode == 2 and plain.stderr.strip().splitlines() == [
        "eval_math_dist.py: error: --tp 2 needs one process per rank: launch with torchrun --nproc_per_node 2 "
        "eval_math_dist.py ..."]
    # 3 query heads cannot be split over 2 ranks: each rank says so in one line, torchrun fails the job. The
    # first rank to exit has printed its line; torchrun may stop the other before it prints, so 1 or 2 lines.
    bad = str(make_checkpoint(tmp_path / "heads3", "qwen3", num_attention_heads=3, num_key_value_heads=1,
                              head_dim=16))
    run = torchrun(ROOT / "eval_math_dist.py", "--tp", "2", *_eval_flags(data, bad, tmp_path / "b"))
    assert run.returncode != 0
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("eval_math_dist.py: error:")]
    assert len(lines) in (1, 2) and set(lines) == {
        "eval_math_dist.py: error: --tp 2: tensor-parallel size 2 does not divide num_attention_heads (3); sizes "
        "that fit this model: 1"}, run.stderr[-3000:]
    assert not list((tmp_path / "b").glob("samples.*"))
