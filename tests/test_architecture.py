"""The import rules of docs/architecture.md, read from the source with `ast` (nothing imported):
engines and deploy never import export (they read formats), quant imports no engine, and the
graph of the packages under mmfree_cli has no cycle."""

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mmfree_cli"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every mmfree_cli module `path` imports, top-level or inside a function."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from . import x` names a module when x is one
            found |= {f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")}
    return {m for m in found if m.startswith("mmfree_cli")}


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _layer(module: str) -> str:
    """The package under mmfree_cli a module belongs to (a top-level module is its own)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


GRAPH = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def _importers(layer: str, imported: str) -> list[str]:
    return sorted(f"{m} imports {i}" for m, deps in GRAPH.items() if _layer(m) == layer
                  for i in deps if _layer(i) == imported)


def test_engines_and_deploy_read_formats_never_export():
    assert _importers("engines", "export") == []
    assert _importers("deploy", "export") == []


def test_quant_imports_no_engine_and_no_format():
    assert _importers("quant", "engines") == []
    assert _importers("quant", "formats") == []


def test_formats_and_hardware_sit_below_export_deploy_and_engines():
    for low in ("formats", "hardware", "model", "kernels"):
        for high in ("export", "deploy", "engines", "cli"):
            assert _importers(low, high) == []


def test_the_package_graph_has_no_cycle():
    edges = defaultdict(set)
    for module, deps in GRAPH.items():
        for dep in deps:
            if _layer(dep) and _layer(dep) != _layer(module):
                edges[_layer(module)].add(_layer(dep))
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            assert state.get(nxt) != 1, f"import cycle: {' -> '.join(path + [node, nxt])}"
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_the_graph_was_read():
    assert "mmfree_cli.formats.manifest" in GRAPH["mmfree_cli.formats.packed"]
    assert len(GRAPH) > 80
