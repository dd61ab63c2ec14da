"""The real app in Debian Chromium: a Streamlit server on 127.0.0.1 and Playwright driving it."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "runs" / "screenshots"  # pytest-playwright empties test-results/ each run
APP_LOG: list[Path] = []  # the app server's log, once started (for failure reports)
LOG_TAIL = 80  # lines of it a failing test's report shows


def pytest_collection_modifyitems(config, items):
    """Without Chromium, skip with the reason; in CI (MAASLAB_CI=1) that is a failure instead."""
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("MAASLAB_CI") == "1":
        raise pytest.UsageError(f"browser tests need Debian chromium at {CHROMIUM}")
    skip = pytest.mark.skip(reason="Debian chromium not installed (apt-get install -y chromium)")
    for item in items:
        if "browser" in item.nodeid:
            item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing browser test's report ends with the app's log: the page only says "This app
    has encountered an error", the traceback is in the server's log, gone with its tmp dir."""
    report = yield
    if report.failed and APP_LOG and APP_LOG[0].exists():
        lines = APP_LOG[0].read_text(encoding="utf-8", errors="replace").splitlines()
        report.sections.append((f"app log ({APP_LOG[0]})", "\n".join(lines[-LOG_TAIL:])))
    return report


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright launches Debian's Chromium, never a downloaded browser."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_FLAGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    """A desktop-sized window."""
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1600}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """Start the app as `make app` does (same config), on a free port; stop it afterwards."""
    port = _free_port()
    env = {**os.environ, "MAASLAB_RUNS": str(tmp_path_factory.mktemp("runs"))}
    log_path = tmp_path_factory.mktemp("app") / "streamlit.log"
    APP_LOG[:] = [log_path]
    log = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app/streamlit_app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.terminate()
        raise RuntimeError(f"the app did not start; see {log.name}")
    yield url
    proc.terminate()
    try:
        proc.wait(30)  # Streamlit stops its sessions (and the servers pages started) first
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture
def shot(page):
    """Save a screenshot under runs/screenshots/ (kept for a person to look at)."""
    SHOTS.mkdir(parents=True, exist_ok=True)

    def take(name: str) -> Path:
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path))
        return path

    return take
