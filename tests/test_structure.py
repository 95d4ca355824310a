"""The package's shape: imports run one way (no circles), functions fit on a screen or two."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "mnistlab"
LONGEST_FUNCTION = 80  # lines


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every mnistlab module this file imports, at the top or inside a function."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mnistlab")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if not base.startswith("mnistlab"):
                continue
            for alias in node.names:  # `from . import models` imports the module mnistlab.models
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found - {name}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def with_parents(name: str) -> set[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)


def find_cycle() -> list[str] | None:
    edges = {n: set().union(*(with_parents(m) for m in targets)) - {n} - with_parents(n) if targets else set()
             for n, targets in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_the_package():
    assert {"mnistlab.cli", "mnistlab.models._registry", "mnistlab.training.trainer"} <= set(MODULES)
    assert "mnistlab.training.trainer" in GRAPH["mnistlab.cli"]  # lazy imports count too
    assert "mnistlab.models._registry" in GRAPH["mnistlab.models.reference"]


def test_no_import_circles():
    assert find_cycle() is None, " -> ".join(find_cycle())


def test_the_graph_check_finds_a_circle():
    GRAPH["mnistlab.errors"].add("mnistlab.cli")  # cli imports errors: a circle
    try:
        assert find_cycle() is not None
    finally:
        GRAPH["mnistlab.errors"].discard("mnistlab.cli")


def test_data_flows_one_way():
    layers = ["errors", "style", "files", "yamlfile", "runfolder", "config", "report", "imaging", "data", "models", "training", "experiments",
              "reading", "cli"]

    def layer(name: str) -> int:
        top = name.split(".")[1] if name.count(".") else "__init__"
        return layers.index(top) if top in layers else -1

    backwards = [(a, b) for a, targets in GRAPH.items() for b in targets
                 if layer(a) >= 0 and layer(b) > layer(a)]
    assert backwards == []
    assert not any(t.startswith("mnistlab") for t in GRAPH["mnistlab.models._registry"])
    users_of_reading = {a for a, targets in GRAPH.items() for b in targets
                        if b.startswith("mnistlab.reading") and not a.startswith("mnistlab.reading")}
    assert users_of_reading <= {"mnistlab.cli", "mnistlab.api"}


def test_no_function_is_longer_than_a_screen_or_two():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []


def test_help_imports_no_torch():
    code = ("import sys\nfrom mnistlab.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_a_config_typo_is_reported_before_torch_is_imported(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("model: iter5\ntrian: {epochs: 1}\n")
    code = ("import sys\nfrom mnistlab.cli import main\n"
            f"assert main(['train', {str(bad)!r}]) == 2\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "trian: unknown key" in result.stderr


RUN_FILES = ("summary.json", "config.yaml", "metrics.csv", "best.pt", "last.pt", "trial.json", "curves.png")


def test_the_run_folder_has_one_owner():
    """The names of a run directory's files are spelled in runfolder.py only; everything else asks it
    (runfolder.SUMMARY, read_summary, ...), so a file is renamed, or its reading fixed, in one place."""
    spelled = [f"{name}:{node.lineno}: {node.value!r}" for name, path in MODULES.items() if name != "mnistlab.runfolder"
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and node.value in RUN_FILES]
    assert spelled == []
    fcntl_users = [name for name, path in MODULES.items() if "fcntl" in path.read_text()]
    assert fcntl_users == []  # the locks are filelock's (runfolder.lock_run_dir, sweep_storage.study_lock)
