"""Suite-wide settings: fast mode, offline, and a guard that no test area silently vanishes."""

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("MAASLAB_FAST", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
# each must contribute tests in a full run
AREAS = ("unit", "app", "notebooks", "server", "browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run last: pytest-playwright's session-wide sync API keeps an asyncio loop
    marked running on the main thread until the session ends, and asyncio.run() refuses to
    start inside it (the server tests drive clients with asyncio.run). Under pytest-xdist
    (`make test`), --no-loadscope-reorder keeps this order for each worker: xdist would
    otherwise hand out the files with the most tests first, browser files among them."""
    items.sort(key=lambda item: "browser" in Path(item.path).relative_to(ROOT).parts)


def check_areas(config: pytest.Config, nodeids: list[str]) -> None:
    """In CI (MAASLAB_CI=1) a full run where a test area collected nothing is a failure."""
    if os.environ.get("MAASLAB_CI") != "1" or config.args not in ([], ["tests"]):
        return
    seen = {nodeid.split("/")[1] for nodeid in nodeids if nodeid.startswith("tests/")}
    missing = [area for area in AREAS if area not in seen]
    if missing:
        pytest.exit(
            f"no tests collected in tests/{', tests/'.join(missing)}",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    """One process (no xdist workers): check the areas here. An xdist worker leaves it to the
    controller, where an exit stops the run with its message (in a worker it would not)."""
    if not hasattr(session.config, "workerinput"):
        check_areas(session.config, [item.nodeid for item in session.items])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under pytest-xdist: each worker's collection, checked by the controller."""
    check_areas(node.config, ids)


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private runs/ folder for code that saves models."""
    monkeypatch.setenv("MAASLAB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"
