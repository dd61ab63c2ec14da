"""ServerProcess: the server as a child process that starts, answers, drains on SIGTERM, exits 0."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from maaslab.errors import MaaslabError
from maaslab.serve.process import ServerProcess


def test_start_answers_then_sigterm_exits_zero():
    server = ServerProcess(["digits-cnn"], max_queue=8, extra_args=("--request-timeout-s", "9"))
    assert "--max-queue" in server.command() and "--request-timeout-s" in server.command()
    assert server.pid is None and not server.running and server.stop() is None
    with server:
        assert server.running and server.pid is not None
        assert server.url == f"http://127.0.0.1:{server.port}" and server.port > 0
        assert httpx.get(server.url + "/v2/health/ready", timeout=10).status_code == 200
        body = {
            "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]
        }
        answer = httpx.post(server.url + "/v2/models/digits-cnn/infer", json=body, timeout=30)
        assert answer.status_code == 200 and len(answer.json()["outputs"][0]["data"]) == 10
        assert "(batching on, 1 instance" in server.log_tail() and "running" in repr(server)
        assert server.start() is server  # starting a running server does nothing
        assert server.stop(wait=False) is None  # SIGTERM sent; leaving the block waits
    assert not server.running and server.exit_code == 0  # SIGTERM drained and exited cleanly
    assert "stopped" in server.log_tail(1) and server.stop() == 0  # a second stop is harmless
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/v2/health/live", timeout=2)


def test_command_line_carries_every_setting():
    cmd = ServerProcess(
        "digits-cnn",
        batching=False,
        max_batch_size=8,
        max_delay_ms=2.5,
        api_key_env="KEY",
        port=8123,
    ).command()
    assert cmd[1:4] == ["-m", "maaslab", "serve"] and "--no-batching" in cmd
    flags = dict(zip(cmd[4::2], cmd[5::2], strict=False))
    assert flags["--models"] == "digits-cnn" and flags["--max-batch-size"] == "8"
    assert flags["--max-delay-ms"] == "2.5" and flags["--port"] == "8123"
    assert cmd[-2:] == ["--api-key-env", "KEY"]
    assert ServerProcess("digits-cnn", threads=1).env["OMP_NUM_THREADS"] == "1"
    with pytest.raises(MaaslabError, match="threads must be"):
        ServerProcess("digits-cnn", threads=0)
    two = ServerProcess("digits-cnn", instances=2).command()
    assert two[two.index("--instances") + 1] == "2"
    assert "--instances" not in ServerProcess("digits-cnn").command()
    with pytest.raises(MaaslabError, match="instances must be"):
        ServerProcess("digits-cnn", instances=0)


def test_two_instances_split_the_cores():
    # The server gives each instance cores / instances torch threads unless told otherwise.
    with ServerProcess(["digits-cnn"], instances=2) as server:
        line = next(x for x in server.log_tail().splitlines() if " on http://" in x)
    threads = os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // 2)
    assert f"2 instances, {threads} torch threads each" in line


def test_a_server_that_cannot_start_raises_with_its_message():
    started = time.monotonic()
    with pytest.raises(MaaslabError, match=r"(?s)exited with code 2.*unknown model 'no-such"):
        ServerProcess(["no-such-model"]).start(wait=False).wait_ready(timeout=60)
    assert time.monotonic() - started < 60  # the exit is noticed, not waited out


def test_wait_ready_needs_a_start():
    with pytest.raises(MaaslabError, match="call start"):
        ServerProcess("digits-cnn").wait_ready()
