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


DRAIN_S = 2.0  # the drain deadline of the server below


def test_sigterm_cuts_streams_past_the_drain_deadline_as_documented(spawn_server):
    """maaslab.serve.drain: a stream still running at the deadline ends with an error event and
    no [DONE]; one that finishes in time ends normally; the exit status is then 75."""
    import json
    import threading
    import time

    import openai
    from openai import OpenAI

    from maaslab.serve.drain import EXIT_CUT

    srv = spawn_server(
        "--models", "mini-gpt", "--request-timeout-s", "1", "--drain-timeout-s", str(DRAIN_S)
    )
    long_body = {"model": "mini-gpt", "prompt": "def ", "max_tokens": 1000, "n": 8, "stream": True}
    raw_events: list[str] = []
    started = threading.Event()
    cut_at: list[float] = []

    def raw_stream() -> None:
        with httpx.stream("POST", srv.url + "/v1/completions", json=long_body, timeout=60) as r:
            for line in r.iter_lines():
                if line:
                    raw_events.append(line)
                    started.set()
        cut_at.append(time.monotonic())

    client = OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    official: list[BaseException] = []

    def openai_stream() -> None:
        try:
            for _ in client.completions.create(**long_body):
                pass
        except openai.APIError as err:
            official.append(err)

    threads = [threading.Thread(target=f, daemon=True) for f in (raw_stream, openai_stream)]
    for t in threads:
        t.start()
    assert started.wait(60)
    short = httpx.stream(
        "POST",
        srv.url + "/v1/completions",
        json={"model": "mini-gpt", "prompt": "x = ", "max_tokens": 20, "stream": True},
        timeout=60,
    )
    with short as reply:  # accepted before the signal, finished well within the deadline
        srv.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        short_events = [line for line in reply.iter_lines() if line]
    for t in threads:
        t.join(60)
    assert short_events[-1] == "data: [DONE]"
    assert raw_events[-1] != "data: [DONE]"
    error = json.loads(raw_events[-1].removeprefix("data: "))["error"]
    assert error["type"] == "server_shutdown" and error["code"] == 503
    assert f"drain deadline of {DRAIN_S:g} s" in error["message"]
    assert DRAIN_S <= cut_at[0] - signalled <= DRAIN_S + 5
    assert len(official) == 1 and "drain deadline" in str(official[0])
    assert srv.process.wait(timeout=30) == EXIT_CUT == 75
    log = "".join(srv.output)
    assert f"the {DRAIN_S:g} s drain deadline cut 2 stream(s) and 0 other request(s)" in log
