"""The package's shape: no import cycles (function-level imports included), lower layers never import higher
ones, the daemon never loads the offline tools, no daemon module grows past 600 lines, and the tests mirror the
modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "monitor"
TESTS = ROOT / "tests"
MAX_LINES = 600
ONE_IDEA_EXCEPTIONS = {"monitor.tools.icegen"}  # the scene generator: one idea, allowed to be long
UNTESTED_ALONE = {"monitor.__main__", "monitor.publishing.message"}  # the entry point; a plain dataclass
TESTED_AS_A_PACKAGE = {"monitor.config": "test_config.py"}  # config.yaml is validated as a whole

# The frame's journey, bottom to top: a module may import its own layer or lower ones, never higher ones.
LAYERS = [
    ["monitor", "monitor.common", "monitor.frame", "monitor.geometry"],
    ["monitor.config"],
    ["monitor.capture", "monitor.motion", "monitor.detection", "monitor.tracking", "monitor.counting",
     "monitor.annotate", "monitor.evidence", "monitor.metrics", "monitor.publishing"],
    ["monitor.safety"],
    ["monitor.escalation"],
    ["monitor.web", "monitor.pipeline"],
    ["monitor.service", "monitor.instance"],
    ["monitor.cli", "monitor.__main__", "monitor.tools"],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every monitor module this file imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_of(module: str) -> int:
    best, rank = -1, None
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def test_the_finder_sees_function_level_imports_and_cycles():
    tree_graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(tree_graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # cli imports the service inside a function only: the graph must still have that edge
    assert "monitor.service" in import_graph()["monitor.cli"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_lower_layers_never_import_higher_ones():
    wrong = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert wrong == []


def test_config_imports_only_the_shared_leaf_and_the_leaf_nothing():
    graph = import_graph()
    config_imports = {t for m, targets in graph.items() if m.startswith("monitor.config") for t in targets}
    assert {t for t in config_imports if not t.startswith("monitor.config")} == {"monitor.common"}
    assert graph["monitor.common"] == set()


def test_the_daemon_never_imports_the_offline_tools():
    graph = import_graph()
    daemon = [m for m in graph if not m.startswith("monitor.tools") and m not in ("monitor.cli", "monitor.__main__")]
    assert [(m, t) for m in daemon for t in graph[m] if t.startswith("monitor.tools")] == []
    loaded = subprocess.run(
        [sys.executable, "-c", "import monitor.pipeline, monitor.service, sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout.split()
    assert [m for m in loaded if m.startswith("monitor.tools")] == []
    assert "monitor.pipeline" in loaded


@pytest.mark.parametrize("name", sorted(all_modules()))
def test_daemon_modules_stay_short(name):
    if name in ONE_IDEA_EXCEPTIONS:
        return
    lines = len(all_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it along its seams"


def test_the_wheel_carries_every_subpackage_and_the_page(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("camera_monitor-*.whl")
    import zipfile

    packed = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("monitor/")}
    expected = {str(path.relative_to(ROOT)) for path in PACKAGE.rglob("*.py")}
    page = {str(path.relative_to(ROOT)) for path in (PACKAGE / "web" / "static").iterdir()}
    assert {"monitor/web/static/index.html", "monitor/web/static/app.js", "monitor/web/static/style.css"} <= page
    assert (expected | page) - packed == set()


def mirror_test_of(module: str) -> str:
    """``monitor.escalation.limits`` -> ``test_escalation_limits.py``."""
    package = next((p for p in TESTED_AS_A_PACKAGE if module.startswith(p + ".")), None)
    return TESTED_AS_A_PACKAGE[package] if package else "test_" + "_".join(module.split(".")[1:]) + ".py"


def test_every_module_has_its_own_test_file():
    modules = [name for name, path in all_modules().items() if path.name != "__init__.py" and name not in UNTESTED_ALONE]
    assert mirror_test_of("monitor.escalation.limits") == "test_escalation_limits.py"
    assert mirror_test_of("monitor.config.rules") == "test_config.py"
    assert [f"{name}: tests/{mirror_test_of(name)}" for name in modules if not (TESTS / mirror_test_of(name)).is_file()] == []
