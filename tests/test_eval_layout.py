"""The eval room's shape, checked on the source: a generic floor that names no task, tasks that do not import
each other, no module named like a stdlib module, argparse only in the CLI layer, and ``litesys/report.py`` only
the ``python -m`` entry (nothing imports it)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "litesys"


def module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


FILES = sorted(PKG.rglob("*.py"))


def test_no_eval_module_is_named_like_a_stdlib_module():
    clash = [str(p.relative_to(ROOT)) for p in (PKG / "eval").rglob("*.py") if p.stem in sys.stdlib_module_names]
    assert clash == []


def test_the_floor_names_no_task_and_tasks_do_not_import_each_other():
    floor = [p for p in (PKG / "eval").glob("*.py")]
    assert len(floor) >= 10
    up = {module(p): sorted(m for m in imported(p) if m.startswith("litesys.eval.tasks")) for p in floor}
    assert {k: v for k, v in up.items() if v} == {}
    for task in ("math", "lcb"):
        other = "lcb" if task == "math" else "math"
        for p in (PKG / "eval" / "tasks" / task).glob("*.py"):
            assert not any(m.startswith(f"litesys.eval.tasks.{other}") for m in imported(p)), p


def test_argparse_only_in_the_cli_layer():
    """Flags are added by cli*.py, the report's CLI and the tasks' entry modules (their own task flags); every
    other module of litesys takes typed configs (at most the parsed flags, in the eval floor)."""
    users = sorted(str(p.relative_to(ROOT)) for p in FILES if "argparse" in imported(p))
    entries = {"litesys/eval/cli.py", "litesys/eval/cli_flags.py", "litesys/eval/report.py",
               *(f"litesys/eval/tasks/{t}.py" for t in ("math/main", "lcb/main", "lcb/grade_main"))}
    text = {u: (ROOT / u).read_text() for u in users}
    builders = {u for u in users if "add_argument(" in text[u] or "cli.add(" in text[u] or "Parser(" in text[u]}
    assert builders <= entries, sorted(builders - entries)
    assert all(u.startswith("litesys/eval/") for u in users), users


def test_litesys_report_is_only_the_entry_point():
    assert not [p for p in [*FILES, *ROOT.glob("*.py"), *(ROOT / "tests").glob("*.py")]
                if "litesys.report" in imported(p) or ("from litesys import" in p.read_text()
                                                       and "report" in imported(p))]
    code = [line for line in (PKG / "report.py").read_text().splitlines() if line and not line.startswith('"""')]
    assert code == ["import sys", "from litesys.eval.report import main", 'if __name__ == "__main__":',
                    "    sys.exit(main())"]
