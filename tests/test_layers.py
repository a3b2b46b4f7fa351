"""The import graph of trainmap has no circles and no import running up a floor.

The graph is read from the source (ast over python/trainmap: module-level and
function-level imports alike, so a lazy import counts as much as an eager one). The floors,
lowest first (docs/design.md, "Floors"):

0. ``trainmap.io`` (atomic writes, file guard, run lock, limits, owner files, contracts,
   shared errors) and the engine extension ``trainmap._rust_metrics``;
1. declarations: ``trainmap.options`` (every stage option, the convergence criterion);
2. ``trainmap.metrics`` (the metrics stage);
3. ``trainmap.train`` (training, task registry, import of series);
4. ``trainmap.analysis`` (HMMs, tables, figures, the map);
5. ``trainmap.adapters`` (HF and Lightning callbacks around the Recorder);
6. ``trainmap.workflow`` and ``trainmap.cli`` (the front doors).

A module may import its own floor or lower ones, with one exception (ALLOWED_UPWARD): the
Recorder loads the analysis stage's forward filter, lazily and only when given a fitted model
(``Recorder(model="results/EXP/hmm/model.npz")``, issue 22). The package root ``trainmap`` (its
``__version__`` and the lazy ``trainmap.Recorder``) is a door, not a floor, and is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "trainmap"

FLOORS = [
    ("trainmap.io", 0), ("trainmap._rust_metrics", 0),
    ("trainmap.options", 1),
    ("trainmap.metrics", 2),
    ("trainmap.train", 3),
    ("trainmap.analysis", 4),
    ("trainmap.adapters", 5),
    ("trainmap.workflow", 6), ("trainmap.cli", 6),
]


def module_names(package: Path = PACKAGE) -> dict[str, Path]:
    names = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the trainmap modules it imports (anywhere in its body)."""
    modules = module_names(package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from a import b`: the module a.b where b is one, else a
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                           else node.module for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def floor(module: str) -> int | None:
    for prefix, level in FLOORS:
        if module == prefix or module.startswith(prefix + "."):
            return level
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


#: Imports up a floor that are allowed, each with its reason. Removing the exception means
#: moving model.npz's reader into trainmap.io and the forward filter into trainmap.metrics.
ALLOWED_UPWARD = {
    ("trainmap.metrics.recorder", "trainmap.analysis.live"):
        "the live state of a run being recorded needs the fitted HMM (lazy, only with model=)",
}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
                  for a, targets in graph.items() for b in targets
                  if floor(a) is not None and floor(b) is not None and floor(b) > floor(a)
                  and (a, b) not in ALLOWED_UPWARD)


GRAPH = {m: {t for t in ts if t != "trainmap"} for m, ts in import_graph().items() if m != "trainmap"}


def test_every_module_has_a_floor():
    assert [m for m in GRAPH if floor(m) is None] == []


def test_no_import_circles():
    assert cycles(GRAPH) == []


def test_no_import_runs_up_a_floor():
    assert upward_imports(GRAPH) == []


def test_the_checks_see_a_circle_and_an_upward_import(tmp_path):
    """The graph reader itself: a circle through a function-level import and an import
    from io up to train are both found."""
    pkg = tmp_path / "trainmap"
    (pkg / "io").mkdir(parents=True)
    (pkg / "train").mkdir()
    for init in (pkg, pkg / "io", pkg / "train"):
        (init / "__init__.py").write_text("")
    (pkg / "train" / "a.py").write_text("from trainmap.train import b\n")
    (pkg / "train" / "b.py").write_text("def f():\n    from trainmap.train.a import x\n")
    (pkg / "io" / "c.py").write_text("import trainmap.train.a\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [["trainmap.train.a", "trainmap.train.b"]]
    assert upward_imports(graph) == ["trainmap.io.c (floor 0) imports trainmap.train.a (floor 3)"]


if __name__ == "__main__":  # python tests/test_layers.py: print what fails
    print("circles:", cycles(GRAPH))
    print("\n".join(upward_imports(GRAPH)) or "no upward imports")
    pytest.main([__file__, "-q"])


def test_every_allowed_upward_import_is_still_there():
    """An exception nobody needs any more is removed, not kept as a loophole."""
    assert [edge for edge in ALLOWED_UPWARD if edge[1] not in GRAPH.get(edge[0], set())] == []
