"""`python -m maaslab serve`: refusals are one line and exit code 2; a key is enforced."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from maaslab.errors import MaaslabError
from maaslab.serve.config import ServeConfig

ROOT = Path(__file__).resolve().parents[2]
KEY = "cli-test-key-0123456789abcdef"


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "maaslab", "serve", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--host", "0.0.0.0"], None, "refusing to listen on 0.0.0.0 without an API key"),
        (["--host", "::", "--api-key-env", "K"], {"K": "short"}, "too short"),
        (["--max-batch-size", "0"], None, "--max-batch-size must be"),
        (["--instances", "0"], None, "--instances must be 1..64"),
        (["--models", "no-such-model", "--port", "0"], None, "unknown model 'no-such-model'"),
        (["--read-timeout-s", "0"], None, "--read-timeout-s must be in (0, 3600]"),
        (["--max-connections", "0"], None, "--max-connections must be 1..100000"),
        (
            ["--request-timeout-s", "30", "--drain-timeout-s", "10"],
            None,
            "--drain-timeout-s (10) must be at least the request timeout (30)",
        ),
    ],
    ids=[
        "no-key",
        "short-key",
        "bad-batch",
        "no-instances",
        "unknown-model",
        "no-read-time",
        "no-connections",
        "drain-too-short",
    ],
)
def test_refusals_are_one_line_and_exit_2(args, env, words):
    done = _serve(*args, env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maaslab serve: error:") and words in lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_port_in_use_is_a_clear_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = _serve("--models", "digits-cnn", "--port", str(busy.getsockname()[1]))
    assert done.returncode == 2 and "cannot listen on 127.0.0.1:" in done.stderr


def test_serve_with_a_key_from_the_environment(spawn_server):
    srv = spawn_server(
        "--models",
        "digits-cnn",
        "--api-key-env",
        "MAASLAB_TEST_KEY",
        "--no-batching",
        env={"MAASLAB_TEST_KEY": KEY},
    )
    assert "digits-cnn on http://127.0.0.1:" in srv.output[0]
    assert httpx.get(srv.url + "/v2/models/digits-cnn").status_code == 401
    ok = httpx.get(srv.url + "/v2/models/digits-cnn", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    srv.process.send_signal(signal.SIGTERM)  # an idle server stops at once, exit code 0
    assert srv.process.wait(timeout=30) == 0


def test_torch_threads_follow_flags_environment_and_instances():
    assert ServeConfig().torch_threads(8, {}) is None  # one instance: torch's own default
    assert ServeConfig(instances=2).torch_threads(8, {}) == 4
    assert ServeConfig(instances=3).torch_threads(2, {}) == 1
    assert ServeConfig(instances=2).torch_threads(8, {"OMP_NUM_THREADS": "3"}) is None
    assert ServeConfig(instances=2, threads=5).torch_threads(8, {"OMP_NUM_THREADS": "3"}) == 5
    # a language model's engine: one core is left to the event loop that streams its tokens
    assert ServeConfig().torch_threads(2, {}, engine=True) == 1
    assert ServeConfig().torch_threads(8, {}, engine=True) == 7
    assert ServeConfig().torch_threads(1, {}, engine=True) is None  # nothing to spare
    assert ServeConfig().torch_threads(8, {"OMP_NUM_THREADS": "3"}, engine=True) is None
    assert ServeConfig(threads=2).torch_threads(2, {}, engine=True) == 2
    with pytest.raises(MaaslabError, match="--threads must be"):
        ServeConfig(threads=0)


def test_the_drain_deadline_defaults_to_the_request_timeout_plus_5_s():
    assert ServeConfig().drain_deadline_s == 35.0
    assert ServeConfig(request_timeout_s=2).drain_deadline_s == 7.0
    assert ServeConfig(request_timeout_s=2, drain_timeout_s=60).drain_deadline_s == 60.0
