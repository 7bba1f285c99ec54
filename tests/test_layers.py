"""The house's layers, read from the imports (DESIGN.md "Layers"): no circle, and nothing imports upwards.

Every ``import`` and ``from ... import`` in the project's packages is read with ``ast``, at any
depth (an import inside a function is an edge too: that is how the old circles hid). Imports
under ``if TYPE_CHECKING:`` are left out: they name a type for annotations and never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "models", "tasks")

# Top to bottom; a module may import its own layer or the ones below it.
LAYERS = {
    "harness.sweep": 5,  # config (YAML -> specs), Ray runner, every command's parser
    "harness.bench": 5,  # benchmarks of the harness's own paths (data, planning, training)
    "harness.trial": 4,  # spec -> parts -> rows; training; provenance
    "harness.eval": 3,  # protocol, cases, planners, controllers, evaluation, diagnostics (libraries)
    "harness.report": 2,  # typed rows, statistics, leaderboard: reading results needs no torch
    "models": 1,
    "tasks": 1,
}
ENTRY_POINTS = {"harness.__main__": 6, "harness.run": 6}  # `python -m harness`, `python -m harness.run`
MODEL_SHARED = ("models.world_model", "models.registry", "models.presets", "models.blocks")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts ``a.b.c`` when it is a module)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        nodes.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def layer_of(module: str) -> int | None:
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    owners = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(owners, key=len)] if owners else None


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_circle():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for source, targets in graph().items():
        for target in targets:
            if layer_of(source) is not None and layer_of(target) is not None and layer_of(target) > layer_of(source):
                upward.append(f"{source} -> {target}")
    assert not upward, "imports against DESIGN.md's layers:\n" + "\n".join(sorted(upward))


def test_tasks_and_models_know_nothing_of_each_other_or_of_the_harness():
    wrong = []
    for source, targets in graph().items():
        root = source.split(".")[0]
        if root in ("tasks", "models"):
            other = "models" if root == "tasks" else "tasks"
            wrong += [f"{source} -> {t}" for t in targets if t.split(".")[0] in (other, "harness")]
    assert not wrong, "\n".join(sorted(wrong))


def test_zoo_entries_import_only_shared_blocks_never_each_other():
    wrong = []
    for source, targets in graph().items():
        if source.startswith("models.") and not source.startswith(MODEL_SHARED):
            entry = source.split(".")[1]
            for target in targets:
                shared = target.startswith(MODEL_SHARED)
                if target.startswith("models.") and not shared and target.split(".")[1] != entry:
                    wrong.append(f"{source} -> {target}")
    assert not wrong, "zoo entries import each other:\n" + "\n".join(sorted(wrong))


def test_the_report_stage_reads_results_without_models_tasks_or_torch():
    wrong = []
    for name, path in project_modules().items():
        if name.startswith("harness.report"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import | ast.ImportFrom):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    wrong += [f"{name} imports {n}" for n in names if n.split(".")[0] in ("torch", "models", "tasks")]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    ("edges", "circle"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ],
)
def test_the_circle_finder_finds_circles(edges, circle):
    assert find_cycle(edges) == circle


def test_an_upward_import_is_seen(tmp_path):
    # The reader itself: a function-level import inside a report module would be an edge upwards.
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from harness.sweep import config\nif TYPE_CHECKING:\n    import harness.run\n")
    assert imports_of(source, project_modules()) == {"harness.sweep", "harness.sweep.config"}
    assert layer_of("harness.sweep.config") > layer_of("harness.report.results")


def test_the_command_line_and_a_trial_start_without_torchvision_or_scipy_stats():
    """Every command and every trial's Ray worker imports these modules first; torchvision (torch._dynamo with it)
    and scipy.stats cost a process ~3 s and ~1.6 s, and only the photometric shift, the leaderboard's statistics and
    the surprise diagnostics use them, so those functions import them."""
    probe = (
        "import sys, harness.sweep.cli, harness.sweep.runner; "
        "print(sorted({'torchvision', 'scipy.stats'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
