"""python -m litesys.report over hand-made runs: a Pareto frontier known by construction, the figures' axes,
labels and frontier points, pass@k for every k, incomplete runs, short budgets, LiveCodeBench verdict files, and
the refusal to mix tasks."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from litesys.eval.cost import CostModel, Method, ModelShape
from litesys.eval.report import build_parser, load_runs, main
from litesys.eval.report_points import frontier, run_points, tokens_label

matplotlib = pytest.importorskip("matplotlib")

SMALL = ModelShape(num_layers=4, hidden=64, num_q_heads=4, num_kv_heads=2, head_dim=16, vocab=100,
                   active_params=100_000)
BIG = ModelShape(num_layers=16, hidden=256, num_q_heads=8, num_kv_heads=4, head_dim=32, vocab=100,
                 active_params=5_000_000)
PROMPT, GEN = 20, 64


def make_math_run(folder: Path, shape: ModelShape, correct: list[list[bool]], *, gpu_s: float | None = None,
                  tokens: list[list[int]] | None = None, task: str = "aime24", model: str = "m", gen_len: int = GEN,
                  expected: int | None = None, sparse: dict | None = None) -> Path:
    """A graded math folder as eval_math.py writes it: one problem per row of ``correct``, one trial per column."""
    folder.mkdir(parents=True)
    lines = []
    for p, row in enumerate(correct):
        for t, ok in enumerate(row):
            n = tokens[p][t] if tokens else gen_len
            lines.append(json.dumps({"problem_id": f"q{p}", "trial": t, "seed": 0, "prompt": "x", "output": "y",
                                     "num_tokens": n, "finish_reason": "stop" if n < gen_len else "length",
                                     "prompt_tokens": PROMPT, "correct": ok, "answer_key": None}))
    (folder / "samples.0.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "run_config.json").write_text(json.dumps({"task": task, "model": f"/ckpts/{model}", "gen_len": gen_len,
                                                        "sparse": sparse, "dtype": "bfloat16"}))
    method = Method.from_sparse(sparse, shape.num_q_heads, shape.num_kv_heads)
    (folder / "cost_model.json").write_text(json.dumps({**CostModel(shape, method, 2, 300.0).to_json(),
                                                        "gpu": "NVIDIA H200"}))
    if gpu_s is not None:
        (folder / "timing.0.json").write_text(json.dumps([{
            "session": "1", "rank": 0, "gpu": "NVIDIA H200", "gpus": 1, "start": 1000.0, "end": 1000.0 + gpu_s,
            "samples": len(lines), "generated_tokens": len(lines) * gen_len, "generate_s": gpu_s}]))
    if expected is not None:
        (folder / "summary.json").write_text(json.dumps({"trials": len(correct[0]), "expected_samples": expected}))
    return folder


def args_for(*runs: Path, extra: tuple[str, ...] = ()):
    return build_parser().parse_args([str(r) for r in runs] + ["--bootstrap", "200", *extra])


@pytest.fixture()
def three(tmp_path):
    """small: pass@1 3/8, pass@2 1/2; big: 5/8, 3/4; bad (the big model, worse): 1/8, 1/4."""
    small = make_math_run(tmp_path / "small", SMALL, [[1, 1], [1, 0], [0, 0], [0, 0]], gpu_s=16.0, model="S")
    big = make_math_run(tmp_path / "big", BIG, [[1, 1], [1, 1], [1, 0], [0, 0]], gpu_s=80.0, model="B")
    bad = make_math_run(tmp_path / "bad", BIG, [[1, 0], [0, 0], [0, 0], [0, 0]], gpu_s=100.0, model="B",
                        sparse={"attn_local": 16})
    return small, big, bad


def test_frontier_of_three_runs_is_known_by_construction(three, tmp_path, capsys):
    runs, budgets = load_runs(args_for(*three, extra=("--budgets", "64")))
    assert [r.label for r in runs] == ["S aime24 dense", "B aime24 dense", "B aime24 local 16"]
    e_s = CostModel(SMALL, arith_intensity=300.0).sample(PROMPT, GEN).eflops
    e_b = CostModel(BIG, arith_intensity=300.0).sample(PROMPT, GEN).eflops
    assert e_b > 2 * e_s  # so the small model's pass@2 is cheaper than the big model's pass@1
    pts = [p for r in runs for p in run_points(r, budgets, reps=200)]
    acc = {(p.run, p.k): p.accuracy for p in pts}
    assert acc == {("S aime24 dense", 1): 3 / 8, ("S aime24 dense", 2): 1 / 2, ("B aime24 dense", 1): 5 / 8,
                   ("B aime24 dense", 2): 3 / 4, ("B aime24 local 16", 1): 1 / 8, ("B aime24 local 16", 2): 1 / 4}
    front = frontier(pts, "eflops")
    assert [(p.run, p.k) for p in front] == [("S aime24 dense", 1), ("S aime24 dense", 2), ("B aime24 dense", 1),
                                              ("B aime24 dense", 2)]
    assert [p.eflops for p in front] == pytest.approx([e_s, 2 * e_s, e_b, 2 * e_b])
    # measured: the run's GPU-seconds over its 8 samples, k samples per problem
    g_front = frontier(pts, "gpu_s")
    assert [(p.run, p.k, p.gpu_s) for p in g_front] == [
        ("S aime24 dense", 1, pytest.approx(2.0)), ("S aime24 dense", 2, pytest.approx(4.0)),
        ("B aime24 dense", 1, pytest.approx(10.0)), ("B aime24 dense", 2, pytest.approx(20.0))]

    out = tmp_path / "report.json"
    png, cost_png = tmp_path / "budget.png", tmp_path / "cost.png"
    assert main([*map(str, three), "--budgets", "64", "--json", str(out), "--png", str(png), "--cost-png",
                 str(cost_png), "--bootstrap", "200"]) == 0
    text = capsys.readouterr().out
    assert "Pareto frontier, accuracy vs modelled eFLOPs per problem" in text
    saved = json.loads(out.read_text())
    assert [(p["run"], p["k"]) for p in saved["frontier"]["eflops"]] == [(p.run, p.k) for p in front]
    for path in (png, cost_png):  # the files decode as images
        img = matplotlib.image.imread(path)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def test_cost_figure_axes_labels_and_frontier_points(three):
    from litesys.eval.report_plot import plot_cost

    runs, budgets = load_runs(args_for(*three, extra=("--budgets", "64")))
    points = {r.label: run_points(r, budgets, reps=200) for r in runs}
    every = [p for v in points.values() for p in v]
    fronts = {c: frontier(every, c) for c in ("eflops", "gpu_s")}
    fig = plot_cost(runs, points, fronts)
    ax_e, ax_g = fig.axes
    for ax, cost, word in ((ax_e, "eflops", "eFLOPs"), (ax_g, "gpu_s", "GPU-seconds")):
        assert ax.get_xscale() == "log" and ax.get_ylim() == (0.0, 1.0)
        assert word in ax.get_xlabel() and "accuracy" in ax.get_ylabel()
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "Pareto frontier"]
        assert list(line.get_xdata()) == pytest.approx([getattr(p, cost) for p in fronts[cost]])
        assert list(line.get_ydata()) == pytest.approx([3 / 8, 1 / 2, 5 / 8, 3 / 4])
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "S aime24 dense, pass@1" in legend and "B aime24 local 16, pass@2" in legend
    assert "aime24" in fig._suptitle.get_text()


def test_budget_sweep_truncates_samples_and_their_cost(tmp_path):
    # q0: right after 10 and 40 tokens; q1: right after 100 (cut at 64 -> wrong, and cheaper)
    run = make_math_run(tmp_path / "r", SMALL, [[1, 1], [1, 0]], tokens=[[10, 40], [100, 128]], gen_len=128)
    runs, budgets = load_runs(args_for(run, extra=("--budgets", "16,64")))
    assert budgets == [16, 64]
    pts = {(p.k, p.budget): p for p in run_points(runs[0], budgets, reps=200)}
    assert sorted({b for _, b in pts}) == [16, 64, 128]  # + the run's own budget
    assert pts[(1, 16)].accuracy == 1 / 4 and pts[(1, 64)].accuracy == 2 / 4 and pts[(1, 128)].accuracy == 3 / 4
    assert pts[(2, 16)].accuracy == 1 / 2 and pts[(2, 128)].accuracy == 1.0
    m = CostModel(SMALL, arith_intensity=300.0)
    cost = lambda b: sum(m.sample(PROMPT, min(n, b)).eflops for n in (10, 40, 100, 128)) / 4  # per sample
    for b in (16, 64, 128):
        assert pts[(1, b)].eflops == pytest.approx(cost(b)) and pts[(2, b)].eflops == pytest.approx(2 * cost(b))
    assert pts[(1, 16)].lo <= pts[(1, 16)].accuracy <= pts[(1, 16)].hi


def test_pass_at_k_for_every_k_up_to_the_trials(tmp_path, capsys):
    # one of 6 trials right: pass@k = 1 - C(5, k) / C(6, k) = k / 6, for every k, not only powers of two
    run = make_math_run(tmp_path / "six", SMALL, [[1, 0, 0, 0, 0, 0]])
    assert main([str(run), "--no-plot", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    for k in range(1, 7):
        assert f"pass@{k}  {k / 6:.4f}" in out


def test_incomplete_run_is_flagged_in_table_and_plot(tmp_path, capsys):
    from litesys.eval.report_plot import plot_budget

    run = make_math_run(tmp_path / "inc", SMALL, [[1, 0], [0, 0], [1, 1]], expected=8)  # 6 of 8 samples
    runs, budgets = load_runs(args_for(run))
    assert not runs[0].complete
    assert main([str(run), "--no-plot", "--bootstrap", "50"]) == 0
    assert "INCOMPLETE 6/8" in capsys.readouterr().out
    fig = plot_budget(runs, {runs[0].label: run_points(runs[0], budgets, reps=50)})
    (line,) = fig.axes[0].get_lines()
    assert "INCOMPLETE 6/8" in line.get_label() and line.get_linestyle() == "--"


def test_all_zero_run_keeps_y_in_0_1_and_short_budgets_give_a_curve(tmp_path):
    from litesys.eval.report_plot import plot_budget

    run = make_math_run(tmp_path / "zero", SMALL, [[0, 0], [0, 0]], gen_len=32)
    runs, budgets = load_runs(args_for(run))
    assert budgets == [4, 8, 16, 32]  # --gen_len 32: four points, not one
    fig = plot_budget(runs, {runs[0].label: run_points(runs[0], budgets, reps=50)})
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_ylabel() == "pass@1" and "budget" in ax.get_xlabel()
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [4, 8, 16, 32] and list(line.get_ydata()) == [0, 0, 0, 0]
    assert line.get_label() == "m aime24 dense" and "aime24" in ax.get_title()


def test_ticks_read_1k_2k_4k(tmp_path):
    from litesys.eval.report_plot import plot_budget

    run = make_math_run(tmp_path / "long", SMALL, [[1, 0]], gen_len=4096, tokens=[[500, 4096]])
    runs, budgets = load_runs(args_for(run, extra=("--budgets", "1024,2048,4096")))
    fig = plot_budget(runs, {runs[0].label: run_points(runs[0], budgets, reps=50)})
    ax = fig.axes[0]
    fmt = ax.xaxis.get_major_formatter()
    assert [fmt(t, 0) for t in ax.get_xticks()] == ["1K", "2K", "4K"]
    assert [tokens_label(n) for n in (512, 1536, 32768, 100)] == ["512", "1.5K", "32K", "100"]


# ---------------------------------------------------------------- LiveCodeBench


def make_lcb_run(folder: Path, passed: list[list[bool]], lengths: list[list[int]]) -> Path:
    """An eval_lcb.py folder and its grade_lcb.py verdicts at ``<folder>.verdicts.jsonl`` (docs/eval_lcb.md)."""
    folder.mkdir(parents=True)
    lines, verdicts = [], []
    for p, row in enumerate(passed):
        for t, ok in enumerate(row):
            lines.append(json.dumps({"problem_id": f"abc{p}", "trial": t, "seed": 1, "prompt": [],
                                     "output_text": 'x = {"num_tokens": 999}',  # a hostile answer
                                     "num_tokens": lengths[p][t], "finish_reason": "stop", "prompt_tokens": 30,
                                     "question_id": f"abc{p}", "difficulty": "easy", "public_test_cases": "[]",
                                     "private_test_cases": "", "metadata": "{}", "starter_code": ""}))
            verdicts.append(json.dumps({"key": f"k{p}{t}", "source": "samples.0.jsonl", "line": len(lines),
                                        "question_id": f"abc{p}", "difficulty": "easy", "trial": t, "seed": 1,
                                        "finish_reason": "stop", "verdict": "passed" if ok else "wrong answer",
                                        "passed": ok, "tests_passed": 1, "tests_total": 1, "detail": "",
                                        "elapsed_s": 0.1}))
    (folder / "samples.0.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "run_config.json").write_text(json.dumps({"task": "lcb", "model": "/ckpts/C", "gen_len": 256}))
    verdict_file = folder.with_name(folder.name + ".verdicts.jsonl")
    verdict_file.write_text("\n".join(verdicts) + "\n")
    return verdict_file


def test_lcb_verdict_file_and_folder_report_alike(tmp_path, capsys):
    vfile = make_lcb_run(tmp_path / "lcb", [[True, False], [False, False], [True, True]], [[10, 20], [30, 40],
                                                                                            [50, 60]])
    for target in (vfile, tmp_path / "lcb"):
        runs, _ = load_runs(args_for(target))
        (run,) = runs
        assert run.kind == "lcb" and run.path == tmp_path / "lcb" and len(run.samples) == 6
        assert sorted(s["num_tokens"] for s in run.samples) == [10, 20, 30, 40, 50, 60]  # linked by source/line
    assert main([str(vfile), "--no-plot", "--budgets", "25,256", "--bootstrap", "50"]) == 0
    out = capsys.readouterr().out
    assert "C lcb dense" in out and "0.5000" in out and "35" in out  # pass@1 3/6, mean length 35
    # at a 25-token budget only the 10-token pass still counts: 1/6
    assert "0.1667" in out


def test_mixing_lcb_and_math_runs_is_one_line_error_unless_allowed(tmp_path, capsys):
    vfile = make_lcb_run(tmp_path / "lcb", [[True]], [[10]])
    math_run = make_math_run(tmp_path / "math", SMALL, [[1]])
    assert main([str(vfile), str(math_run), "--no-plot"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different tasks" in err[0] and "--allow-mixed-tasks" in err[0]
    assert main([str(vfile), str(math_run), "--no-plot", "--allow-mixed-tasks", "--bootstrap", "20"]) == 0


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    run = make_math_run(tmp_path / "r", SMALL, [[1]])
    before = sorted(p.name for p in run.iterdir())
    for argv, needle in (([str(tmp_path / "none")], "does not exist"),
                         ([str(run), "--budgets", "0,5"], "--budgets"),
                         ([str(run), "--arith-intensity", "-1"], "--arith-intensity"),
                         ([str(run), "--gpu", "TPU"], "--gpu"),
                         ([str(run), "--png", str(tmp_path / "no" / "x.png")], "--png"),
                         ([str(tmp_path)], "holds no samples")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    assert sorted(p.name for p in run.iterdir()) == before


def test_arith_intensity_flag_recomputes_eflops(tmp_path):
    run = make_math_run(tmp_path / "r", SMALL, [[1]])
    (a,) = run_points(load_runs(args_for(run, extra=("--budgets", "64")))[0][0], [64], reps=10)
    (b,) = run_points(load_runs(args_for(run, extra=("--budgets", "64", "--arith-intensity", "10")))[0][0], [64],
                      reps=10)
    c = CostModel(SMALL).sample(PROMPT, GEN)
    assert a.eflops == pytest.approx(c.flops + 300.0 * c.kv_bytes)
    assert b.eflops == pytest.approx(c.flops + 10.0 * c.kv_bytes)
