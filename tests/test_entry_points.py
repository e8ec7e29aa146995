"""Every entry point a README or doc names answers --help (python scripts, examples/, benchmarks/, the report),
the example shell scripts parse, print their usage and (DRY_RUN=1) the commands they would run, one example runs
for real on CPU (tiny checkpoint, local data), and pyproject.toml declares every package litesys imports.

Subprocesses get the repository on PYTHONPATH, as ``pip install -e .`` (CI's install) puts it on sys.path."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PY_ENTRY = sorted([*ROOT.glob("*.py"), *ROOT.glob("examples/*.py"),
                   *(p for p in ROOT.glob("benchmarks/*.py") if p.name not in ("common.py", "moe_stats.py"))])
SH_ENTRY = sorted(p for p in ROOT.glob("examples/*.sh") if p.name != "common.sh")


def env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PYTHON": sys.executable, "LITESYS_NO_PROGRESS": "1", **extra}


def test_every_python_entry_point_answers_help(tmp_path):
    """Run from another folder, as a user with the package installed would."""
    cmds = {p.relative_to(ROOT).as_posix(): [sys.executable, str(p), "--help"] for p in PY_ENTRY}
    cmds["python -m litesys.report"] = [sys.executable, "-m", "litesys.report", "--help"]
    assert {"eval_math.py", "eval_math_dist.py", "examples/sparse_bench.py", "benchmarks/bench_attention.py",
            "benchmarks/throughput.py"} <= set(cmds)
    procs = {name: subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for name, cmd in cmds.items()}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} --help: exit {proc.returncode}\n{err[-2000:]}"
        assert out.startswith("usage: "), f"{name} --help printed no usage: {out[:200]!r}"


@pytest.mark.parametrize("script", SH_ENTRY, ids=lambda p: p.name)
def test_example_script_parses_and_answers_help(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    r = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60, env=env(),
                       cwd=ROOT)
    header = [line[2:] for line in script.read_text().splitlines()[1:3]]
    assert r.returncode == 0 and r.stdout.splitlines()[:2] == header, (r.stdout, r.stderr)


def dry_run(script: str, *args: str, **extra: str) -> list[list[str]]:
    r = subprocess.run(["bash", str(ROOT / "examples" / script), *args], capture_output=True, text=True,
                       timeout=120, env=env(DRY_RUN="1", **extra), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return [line.split() for line in r.stdout.splitlines()]


def test_dry_runs_show_the_commands():
    eval_cmd, report = dry_run("eval_aime24.sh", "Org/Model", "2", "--limit", "3", DATA_DIR="/data")
    assert eval_cmd[:2] == [sys.executable, str(ROOT / "eval_math.py")]
    flags = dict(zip(eval_cmd[2::2], eval_cmd[3::2]))
    assert flags["--task"] == "aime24" and flags["--trial"] == "16" and flags["--nproc"] == "2"
    assert flags["--model"] == "Org/Model" and flags["--data-dir"] == "/data" and flags["--limit"] == "3"
    assert report == [sys.executable, "-m", "litesys.report", "outputs/aime24/Model"]
    tp, _ = dry_run("eval_aime_32b_tp.sh", "8", "2", TORCHRUN="torchrun")
    assert tp[:5] == ["torchrun", "--standalone", "--nproc_per_node", "8", str(ROOT / "eval_math_dist.py")]
    assert tp[5:7] == ["--tp", "2"]
    tp, _ = dry_run("example_tp.sh", "2", "4", MODEL="m/x", OUT="o")
    assert tp[3:6] == ["4", str(ROOT / "eval_math_dist.py"), "--tp"] and "o" in tp
    dp, _ = dry_run("example_dp.sh", "3", MODEL="m/x")
    assert dp[1] == str(ROOT / "eval_math.py") and dp[dp.index("--nproc") + 1] == "3"


def test_gsm8k_example_runs_on_cpu(tmp_path):
    """examples/eval_gsm8k.sh -> eval_math_task.sh -> eval_math.py + the report, with later flags overriding the
    script's 32K budget, from another working folder."""
    from checkpoints import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "ckpt", "qwen3")
    data = tmp_path / "data"
    data.mkdir()
    (data / "gsm8k.jsonl").write_text("".join(
        json.dumps({"id": f"g{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(2)))
    out = tmp_path / "out"
    r = subprocess.run(["bash", str(ROOT / "examples" / "eval_gsm8k.sh"), str(ckpt), "1", "--gen_len", "8",
                        "--max_len", "256", "--device", "cpu", "--grade_workers", "1"], cwd=tmp_path,
                       env=env(DATA_DIR=str(data), OUT=str(out)), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 2 and summary["complete"] and summary["task"] == "gsm8k"
    assert summary["config"]["gen_len"] == 8 and summary["config"]["max_len"] == 256
    assert "pass@1" in r.stdout
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def _third_party_imports() -> set[str]:
    names = set()
    for f in ROOT.glob("litesys/**/*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("litesys", "__future__")}


def _name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_declares_every_package_litesys_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    optional = {_name(r) for reqs in project.get("optional-dependencies", {}).values() for r in reqs}
    dists = packages_distributions()  # module -> the installed distributions that provide it
    missing = {}
    for module in _third_party_imports():
        provided_by = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not provided_by & (declared | optional):
            missing[module] = sorted(provided_by)
    assert not missing, f"imported by litesys but not declared in pyproject.toml: {missing}"
    assert {"datasets", "matplotlib", "torch", "transformers", "math-verify"} <= declared


def test_requirements_pin_what_pyproject_declares():
    declared = {_name(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = {_name(line): line for line in lines if line}
    assert declared - {"torch"} <= set(reqs), declared - set(reqs)  # torch: installed first, per platform
    loose = [line for name, line in reqs.items() if "==" not in line and name != "triton"]
    assert not loose, f"CI versions must be pinned: {loose}"
