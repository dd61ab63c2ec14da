"""SIGTERM drains: the server stops accepting, answers every accepted request, exits 0."""

from __future__ import annotations

import asyncio
import signal

import httpx
import numpy as np
from sklearn.datasets import load_digits

ROWS = 400  # rows per request: about 0.1 s each on two cores, so a queue builds up


def test_sigterm_answers_every_accepted_request_then_exits_0(spawn_server):
    srv = spawn_server("--models", "digits-cnn", "--no-batching")
    pixels = np.resize(load_digits().data.astype(np.float32), (ROWS, 64))
    body = {
        "inputs": [
            {
                "name": "pixels",
                "shape": [ROWS, 64],
                "datatype": "FP32",
                "data": pixels.ravel().tolist(),
            }
        ]
    }

    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            sends = [
                asyncio.ensure_future(
                    client.post(srv.url + "/v2/models/digits-cnn/infer", json=body)
                )
                for _ in range(6)
            ]
            # One at a time (--no-batching): when the first answer is back, five are accepted
            # and still waiting; SIGTERM now must not lose any of them.
            await asyncio.wait(sends, return_when=asyncio.FIRST_COMPLETED)
            srv.process.send_signal(signal.SIGTERM)
            pending = sum(not s.done() for s in sends)
            return await asyncio.gather(*sends), pending

    replies, pending = asyncio.run(burst())
    assert pending >= 1  # the signal really came while accepted requests were waiting
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
