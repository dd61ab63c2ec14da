"""ServerProcess: the server as a child process that starts, answers, drains on SIGTERM, exits 0."""

from __future__ import annotations

import os
import time
from dataclasses import fields, replace

import httpx
import pytest

from maaslab.errors import MaaslabError
from maaslab.serve.config import ServeConfig
from maaslab.serve.process import ServerProcess


def config(*models: str, **settings) -> ServeConfig:
    """A ServeConfig for a child server on a free port, on the CPU."""
    return ServeConfig(models=models, port=settings.pop("port", 0), device="cpu", **settings)


def test_start_answers_then_sigterm_exits_zero():
    server = ServerProcess(config("digits-cnn", max_queue=8, request_timeout_s=9))
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
        config(
            "digits-cnn",
            batching=False,
            max_batch_size=8,
            max_delay_ms=2.5,
            api_key_env="KEY",
            port=8123,
        )
    ).command()
    assert cmd[1:4] == ["-m", "maaslab", "serve"] and "--no-batching" in cmd
    flags = dict(zip(cmd[4::2], cmd[5::2], strict=False))
    assert flags["--models"] == "digits-cnn" and flags["--max-batch-size"] == "8"
    assert flags["--max-delay-ms"] == "2.5" and flags["--port"] == "8123"
    assert cmd[-2:] == ["--api-key-env", "KEY"]
    one = ServerProcess(config("digits-cnn", threads=1))
    assert one.env["OMP_NUM_THREADS"] == "1" and "--threads" in one.command()
    with pytest.raises(MaaslabError, match="threads must be"):
        ServerProcess(config("digits-cnn", threads=0))
    two = ServerProcess(config("digits-cnn", instances=2)).command()
    assert two[two.index("--instances") + 1] == "2"
    plain = ServerProcess(config("digits-cnn")).command()
    assert "--instances" not in plain and "--threads" not in plain
    with pytest.raises(MaaslabError, match="instances must be"):
        ServerProcess(config("digits-cnn", instances=0))
    with pytest.raises(MaaslabError, match="max-queue must be"):
        ServerProcess(config("digits-cnn", max_queue=0))  # refused before any child starts
    with pytest.raises(MaaslabError, match="takes a ServeConfig"):
        ServerProcess(["digits-cnn"])  # type: ignore[arg-type]


def test_command_line_round_trips_through_the_cli_flags():
    # Every setting a ServerProcess is given reaches the child as the config it was built from.
    import argparse

    from maaslab.serve.config import add_serve_arguments, config_from_args

    given = config(
        "digits-cnn",
        "sentiment-minilm",
        batching=False,
        instances=2,
        threads=3,
        request_timeout_s=9,
        max_body_bytes=2048,
        half_precision=False,
        api_key_env="KEY",
        max_batch_size=7,
        max_delay_ms=3,
        max_queue=9,
        read_timeout_s=3,
        max_connections=50,
        drain_timeout_s=12,
        grpc_port=0,
        repository="/srv/models",
    )
    # Tenants from a keys file exclude the one --api-key-env key: a second config has them.
    tenants = replace(given, api_key_env=None, keys_file="/srv/keys.json")
    # A field added to ServeConfig must be added here (and to the command line) too.
    same = [
        f.name
        for f in fields(ServeConfig)
        if getattr(given, f.name) == getattr(ServeConfig(), f.name)
        and getattr(tenants, f.name) == getattr(ServeConfig(), f.name)
    ]
    assert same == ["host"], f"give these a non-default value in this test: {same}"
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    for each in (given, tenants):
        assert config_from_args(parser.parse_args(ServerProcess(each).command()[4:])) == each
    only = replace(given, models=())  # a repository alone: no --models, no default models
    assert config_from_args(parser.parse_args(ServerProcess(only).command()[4:])) == only


def test_two_instances_split_the_cores():
    # The server gives each instance cores / instances torch threads unless told otherwise.
    with ServerProcess(config("digits-cnn", instances=2)) as server:
        line = next(x for x in server.log_tail().splitlines() if " on http://" in x)
    threads = os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // 2)
    assert f"2 instances, {threads} torch thread{'s' if int(threads) > 1 else ''} each" in line


def test_a_server_that_cannot_start_raises_with_its_message():
    started = time.monotonic()
    with pytest.raises(MaaslabError, match=r"(?s)exited with code 2.*unknown model 'no-such"):
        ServerProcess(config("no-such-model")).start(wait=False).wait_ready(timeout=60)
    assert time.monotonic() - started < 60  # the exit is noticed, not waited out


def test_wait_ready_needs_a_start():
    with pytest.raises(MaaslabError, match="call start"):
        ServerProcess(config("digits-cnn")).wait_ready()
