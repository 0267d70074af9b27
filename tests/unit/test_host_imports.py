"""The host's import graph, read from the source with ast (every import, also those inside
functions): no cycles, and the one-way rules of the analysis side
(tflite_file <- quantize <- inspection <- report; report runs no model)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

HOST = Path(__file__).resolve().parents[2] / "host"
PACKAGE = "edgeq.host"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(HOST).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(HOST.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module of `known` that `path` imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for t in targets:
            while t and t not in known:  # `import edgeq.host.x.y` -> the longest known prefix
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def host_import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(path, name, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of `graph` as [a, b, ..., a], or [] when it is acyclic."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_function_level_imports_count(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from edgeq.host.quantize import quantize\n")
    assert _imports(src, "edgeq.host.m", {"edgeq.host.quantize"}) == {"edgeq.host.quantize"}


def test_the_host_has_no_import_cycle() -> None:
    graph = host_import_graph()
    assert "edgeq.host.quantize" in graph and "edgeq.host.inspection" in graph
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module, forbidden", [
    ("edgeq.host.tflite_file", {"edgeq.host.quantize", "edgeq.host.inspection"}),
    ("edgeq.host.quantize", {"edgeq.host.inspection", "edgeq.host.report"}),
    ("edgeq.host.inspection", {"edgeq.host.report"}),
    ("edgeq.host.stats", {"edgeq.host.report"}),
])
def test_data_flows_one_way(module: str, forbidden: set[str]) -> None:
    assert not host_import_graph()[module] & forbidden


def test_report_runs_no_model() -> None:
    """report.py lays out and renders: no TFLite runtime, TensorFlow or Keras import."""
    for name in ("report", "report_figures"):
        tree = ast.parse((HOST / f"{name}.py").read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        bad = {m for m in imported if m.split(".")[0] in
               ("tensorflow", "keras", "ai_edge_litert", "tflite_runtime")
               or m == "edgeq.device.runtime"}
        assert not bad, (name, bad)
