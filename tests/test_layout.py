"""The shape of ``ml_tasks``: layers that only import downwards, no import cycles, no Airflow,
run artifacts named in one module, and modules small enough to read.

These read the source (AST and text), never import it, so a broken module fails its own tests,
not these.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ml_tasks.core.settings import REPO_ROOT

PACKAGE = REPO_ROOT / "ml_tasks"
#: The layers, lowest first: a module may import its own layer and the ones before it. Modules at
#: the package root (pipeline, cli, __main__) are the top layer.
LAYERS = ("core", "io", "data", "evaluation", "models", "registry", "training", "gating", "reporting", "scoring",
          "monitoring")
TOP = len(LAYERS)
#: Beyond this many lines a module must say in its docstring why it stays whole.
MAX_LINES = 600
KEPT_WHOLE = "Kept whole:"
#: The one module that may build a run's artifact paths from its folder.
ARTIFACT_NAMES = PACKAGE / "core" / "artifacts.py"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(*folders: Path) -> Iterator[Path]:
    for folder in folders:
        yield from sorted(folder.rglob("*.py"))


MODULES = {module_name(path): path for path in source_files(PACKAGE)}


def imported_names(path: Path) -> Iterator[str]:
    """Every module name an import in ``path`` may load, at any depth (lazy imports included:
    they run too, only later). ``from a import b`` yields ``a.b`` and ``a``."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def internal_imports(name: str) -> set[str]:
    """The ``ml_tasks`` modules that module ``name`` imports (packages resolve to their __init__)."""
    return {imported for imported in imported_names(MODULES[name]) if imported in MODULES and imported != name}


def import_graph() -> dict[str, set[str]]:
    return {name: internal_imports(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_of(name: str) -> int:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else TOP


def test_the_import_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_ml_tasks():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(component) for component in found)


def test_every_package_is_a_known_layer():
    packages = {name.split(".")[1] for name in MODULES
                if name.count(".") >= 1 and (PACKAGE / name.split(".")[1]).is_dir()}
    assert packages <= set(LAYERS), f"packages outside the layer list: {sorted(packages - set(LAYERS))}"


def test_lower_layers_never_import_higher_ones():
    upward = [f"{name} ({LAYERS[layer_of(name)] if layer_of(name) < TOP else 'top'}) imports {imported}"
              for name, imports in import_graph().items() for imported in sorted(imports)
              if layer_of(imported) > layer_of(name)]
    assert not upward, "\n".join(upward)


def test_ml_tasks_never_imports_airflow_or_the_airflow_side():
    offenders = [f"{module_name(path)} imports {name}" for path in source_files(PACKAGE)
                 for name in imported_names(path)
                 if name.split(".")[0] in {"airflow", "refit_airflow"}]
    assert not offenders, "\n".join(offenders)


#: A run artifact's path built from the run's folder by hand: f"{plan.run_prefix}/gate.json",
#: f"{plan['run_prefix']}/plan.json".
HAND_BUILT_RUN_PATH = re.compile(r"""run_prefix(?:['"]\])?\}/""")


@pytest.mark.parametrize("folder", ["ml_tasks", "plugins", "dags"])
def test_run_artifact_paths_are_named_only_by_the_artifacts_module(folder):
    offenders = [f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}"
                 for path in source_files(REPO_ROOT / folder) if path != ARTIFACT_NAMES
                 for number, line in enumerate(path.read_text().splitlines(), start=1)
                 if HAND_BUILT_RUN_PATH.search(line)]
    assert not offenders, "use ml_tasks.core.artifacts.RunArtifacts:\n" + "\n".join(offenders)


def test_the_hand_built_path_pattern_matches_what_it_forbids():
    assert HAND_BUILT_RUN_PATH.search('f"{plan.run_prefix}/gate.json"')
    assert HAND_BUILT_RUN_PATH.search("""f"{plan['run_prefix']}/plan.json\"""")
    assert not HAND_BUILT_RUN_PATH.search("RunArtifacts(plan['run_prefix']).plan")


def test_no_module_is_too_long_to_read_unless_it_says_why_it_stays_whole():
    long_modules = []
    for path in source_files(PACKAGE):
        lines = len(path.read_text().splitlines())
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if lines > MAX_LINES and KEPT_WHOLE not in docstring:
            long_modules.append(f"{path.relative_to(REPO_ROOT)}: {lines} lines")
    assert not long_modules, (f"over {MAX_LINES} lines without a '{KEPT_WHOLE} <why>' paragraph in the docstring:\n"
                              + "\n".join(long_modules))
