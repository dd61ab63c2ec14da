"""Suite-wide settings: fast mode, offline, and a guard that no test area silently vanishes."""

import os
from pathlib import Path

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
    start inside it (the server tests drive clients with asyncio.run)."""
    items.sort(key=lambda item: "browser" in Path(item.path).relative_to(ROOT).parts)


def pytest_collection_finish(session: pytest.Session) -> None:
    """In CI (MAASLAB_CI=1) a full run where a test area collected nothing is a failure."""
    if os.environ.get("MAASLAB_CI") != "1" or session.config.args not in ([], ["tests"]):
        return
    seen = {Path(item.path).relative_to(ROOT / "tests").parts[0] for item in session.items}
    missing = [area for area in AREAS if area not in seen]
    if missing:
        raise pytest.UsageError(f"no tests collected in tests/{', tests/'.join(missing)}")


@pytest.fixture
def runs_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private runs/ folder for code that saves models."""
    monkeypatch.setenv("MAASLAB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"
