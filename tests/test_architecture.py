"""The package's shape, checked from the source with ``ast`` (no imports run): ``litesys/kernels/`` imports no other
litesys package, no import cycle anywhere in ``litesys/``, and every Triton module has a tested PyTorch twin."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "litesys"

# Triton module -> (the module its test calls, the PyTorch twin it is compared with, the test). The decode/prefill
# kernels are reached through ops_triton, the selection kernels through the processors with backend="triton" (their
# torch path is the twin); select's twin is a stable torch sort written in the test.
K, S = "litesys.kernels.", "litesys.attention.sparse"
TWINS = {
    "blocks": (K + "ops_triton", K + "ref.ops_torch", "test_kernels_decode.py"),
    "blocks_fp8": (K + "decode", K + "ref.ops_torch", "test_kv_fp8.py"),
    "decode_logits": (K + "ops_triton", K + "ref.ops_torch", "test_kernels_decode.py"),
    "decode_merge": (K + "ops_triton", K + "ref.ops_torch", "test_kernels_decode.py"),
    "decode_softmax_v": (K + "ops_triton", K + "ref.ops_torch", "test_kernels_decode.py"),
    "decode_split": (K + "ops_triton", K + "ref.ops_torch", "test_kernels_decode.py"),
    "prefill": (K + "ops_triton", K + "ref.ops_torch", "test_kernels_prefill.py"),
    "kv_write": (K + "kv_write", "litesys.attention.kv_fp8", "test_kv_fp8.py"),
    "quest": (K + "quest", K + "ref.quest", "test_kernels_quest.py"),
    "norm_rope": (K + "norm_rope", K + "ref.norm_rope", "test_kernels_norm_rope.py"),
    "moe": (K + "moe", K + "ref.moe", "test_kernels_moe.py"),
    "moe_align": (K + "moe_align", K + "ref.moe_align", "test_kernels_moe.py"),
    "topk": (K + "topk", K + "ref.topk", "test_sampler_topk.py"),
    "moe_route": (K + "moe_route", K + "ref.moe_route", "test_kernels_moe_route.py"),
    "oracle": (K + "oracle", S, "test_kernels_oracle.py"),
    "sparse_ops": (S, S, "test_sparse_processors.py"),
    "hash": (S, K + "hash", "test_sparse_processors.py"),
    "select": (K + "select", None, "test_sparse_select.py"),
    "gemm_invariant": (K + "gemm_invariant", K + "ref.gemm_invariant", "test_deterministic_gemm.py"),
    "sample_draw": (K + "sample_draw", "litesys.engine.sampler", "test_kernels_sample_draw.py"),
    "step": (K + "step", K + "ref.step", "test_kernels_step.py"),
}


# Cycles that other rooms of issue 16 are removing; delete an entry once its cycle is gone (the test insists).
KNOWN_CYCLES: set[frozenset[str]] = set()  # cycles accepted for now (none)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) of every import in the file, module level or inside functions; relative imports
    resolved. ``from a import b`` yields ``a.b`` when that is a module, else ``a``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            found += [(s, node.lineno) for s in subs] or [(base, node.lineno)]
    return found


def own_target(target: str) -> str | None:
    """The litesys module an import name refers to (the longest prefix that is a module), or None."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def kernel_violations(modules: dict[str, Path]) -> list[str]:
    bad = []
    for name, path in modules.items():
        if not (name == "litesys.kernels" or name.startswith("litesys.kernels.")):
            continue
        for target, line in imports(path):
            inside = target == "litesys.kernels" or target.startswith("litesys.kernels.")
            if (target == "litesys" or target.startswith("litesys.")) and not inside:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return bad


def graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges = {}
    for name, path in modules.items():
        targets = {own_target(t) for t, _ in imports(path) if t == "litesys" or t.startswith("litesys.")}
        edges[name] = {t for t in targets if t is not None and t != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> dict[frozenset[str], list[str]]:
    """Each strongly connected component of more than one module (Tarjan) -> one cycle a -> ... -> a through it."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(set(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return {frozenset(comp): _path_in(comp, edges) for comp in comps}


def _path_in(comp: set[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first inside the component)."""
    start = min(comp)
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & comp):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, v, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def test_kernels_import_no_other_litesys_package():
    assert kernel_violations(MODULES) == []


def test_no_import_cycle_in_litesys():
    found = cycles(graph(MODULES))
    new = [" -> ".join(path) for comp, path in found.items() if comp not in KNOWN_CYCLES]
    assert new == [], "import cycles (function-level imports count):\n" + "\n".join(new)
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert gone == [], f"{gone} no longer form a cycle: delete them from KNOWN_CYCLES"


def test_checks_catch_planted_violations(tmp_path):
    """The two checks above on a hand-made package: a kernel importing policy lazily and relatively, a cycle
    closed by a function-level import."""
    pkg = tmp_path / "litesys"
    (pkg / "kernels").mkdir(parents=True)
    files = {
        "__init__.py": "", "kernels/__init__.py": "", "engine.py": "import litesys.policy\n",
        "kernels/good.py": "from litesys.kernels import other\nfrom . import other as o\n",
        "kernels/other.py": "import torch\n",
        "kernels/bad.py": "def f():\n    from ..policy import Thing\n",
        "policy.py": "from litesys.kernels.good import x\n\ndef g():\n    from litesys import engine\n",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text)
    global ROOT, MODULES
    saved = ROOT, MODULES
    try:
        ROOT = tmp_path
        MODULES = {module_name(p): p for p in sorted(pkg.rglob("*.py"))}
        assert kernel_violations(MODULES) == [f"{Path('litesys/kernels/bad.py')}:2 imports litesys.policy"]
        assert list(cycles(graph(MODULES)).values()) == [["litesys.engine", "litesys.policy", "litesys.engine"]]
    finally:
        ROOT, MODULES = saved


def _triton_modules() -> list[str]:
    return sorted(name.rpartition(".")[2] for name, path in MODULES.items()
                  if name.startswith("litesys.kernels.") and "@triton.jit" in path.read_text())


def _test_imports(test: str) -> set[str]:
    """Modules a test file imports: ``from a import b`` counts as ``a`` and ``a.b``."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / "tests" / test).read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


@pytest.mark.parametrize("module", _triton_modules())
def test_every_triton_module_has_a_tested_twin(module):
    assert module in TWINS, f"litesys/kernels/{module}.py has Triton code: add its twin and its test to TWINS"
    entry, twin, test = TWINS[module]
    found = _test_imports(test)
    assert entry in found, f"tests/{test} does not import {entry}"
    assert twin is None or twin in found, f"tests/{test} does not import the twin {twin}"
