"""SIGTERM drains: the server stops accepting, answers every accepted request, exits 0."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import httpx
import numpy as np
from sklearn.datasets import load_digits

ROWS = 1000  # rows per request: a few hundred ms each on two cores, so a queue builds up


def test_sigterm_answers_every_accepted_request_then_exits_0(spawn_server):
    srv = spawn_server("--models", "digits-cnn", "--no-batching")
    pixels = np.resize(load_digits().data.astype(np.float32), (ROWS, 64))
    body = {"inputs": [{"name": "pixels", "shape": [ROWS, 64], "datatype": "FP32",
                        "data": pixels.ravel().tolist()}]}  # fmt: skip

    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            sends = [asyncio.ensure_future(client.post(srv.url + "/v2/models/digits-cnn/infer",
                                                       json=body)) for _ in range(6)]  # fmt: skip
            await asyncio.sleep(0.5)  # all six sent and queued; the model works through them
            srv.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*sends)

    replies = asyncio.run(burst())
    assert [r.status_code for r in replies] == [200] * 6
    assert all(r.json()["outputs"][0]["shape"] == [ROWS, 10] for r in replies)
    assert srv.process.wait(timeout=30) == 0
    assert "stopped" in "".join(srv.output)
    # after the drain nothing listens any more
    try:
        httpx.get(srv.url + "/v2/health/live", timeout=2)
        raise AssertionError("the server still answers after SIGTERM")
    except httpx.TransportError:
        pass


def test_sigterm_on_an_idle_server_exits_0(spawn_server):
    srv = spawn_server("--models", "digits-cnn")
    srv.process.send_signal(signal.SIGTERM)
    try:
        assert srv.process.wait(timeout=30) == 0
    except subprocess.TimeoutExpired:
        raise AssertionError("an idle server did not exit on SIGTERM") from None
