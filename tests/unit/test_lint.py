"""House style and layers are part of the build: ruff, the import-linter contract, no cycles."""

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "maaslab"


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]], ids=["format", "check"])
def test_ruff_is_clean(command):
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run(
        [str(ruff), *command, "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_layers_contract_is_kept():
    # The layers of ARCHITECTURE.md, declared in pyproject.toml [tool.importlinter].
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def module_imports(package: Path) -> dict[str, set[str]]:
    """Each module of `package` -> the modules of `package` it imports, anywhere in its code.

    Imports inside functions count: a lazy import is still a dependency, it only runs later.
    A package importing its own children (re-exports) and a module importing one of its parent
    packages are not counted: neither is a dependency between two parts of the code.
    """
    files = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def known(name: str) -> str | None:
        while name and name not in files:  # maaslab.zoo.paint -> maaslab.zoo
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        names = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x, from ..y import z
                    here = module.split(".") if is_package else module.split(".")[:-1]
                    base = ".".join([*here[: len(here) - node.level + 1], base]).strip(".")
                names += [base] + [f"{base}.{alias.name}" for alias in node.names]
        targets = {known(name) for name in names} - {None, module}
        graph[module] = {
            t for t in targets if not t.startswith(module + ".") and not module.startswith(t + ".")
        }
    return graph


def test_module_imports_sees_lazy_imports():
    graph = module_imports(PACKAGE)
    assert "maaslab.auto" in graph["maaslab.compress.variants"]  # inside base_module()
    assert "maaslab.zoo" in graph["maaslab.auto"]


def test_no_import_cycle_in_maaslab():
    try:
        graphlib.TopologicalSorter(module_imports(PACKAGE)).prepare()
    except graphlib.CycleError as err:
        pytest.fail("modules import each other in a circle: " + " -> ".join(err.args[1]))
