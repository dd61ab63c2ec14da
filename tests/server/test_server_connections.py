"""The connection layer: a request must arrive within the read deadline (408 or a close), idle
connections do not pile up, a cap on connections answers 503, and normal requests keep their
latency meanwhile."""

from __future__ import annotations

import socket
import statistics
import threading
import time

import httpx
import numpy as np
import pytest

DEADLINE_S = 1.0  # the read deadline of the servers here
SLACK_S = 2.0  # a busy 2-core machine may answer the deadline this much later
ROW = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}


@pytest.fixture(scope="module")
def strict(start_server):
    return start_server(models=("digits-cnn", "mini-gpt"), read_timeout_s=DEADLINE_S)


def read_all(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took;
    an AssertionError if it is still open after limit_s."""
    started, data = time.monotonic(), b""
    sock.settimeout(limit_s)
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {limit_s:.1f} s; received {data[:200]!r}") from None
    return data, time.monotonic() - started


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def latencies(url: str, count: int) -> list[float]:
    out = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            assert client.post(url + "/v2/models/digits-cnn/infer", json=ROW).status_code == 200
            out.append(time.perf_counter() - started)
    return out


def test_a_body_that_stops_coming_gets_408_and_a_close(strict):
    with connect(strict.port) as sock:
        sock.sendall(
            b"POST /v2/models/digits-cnn/infer HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b'{"inputs": ['
        )
        data, waited = read_all(sock, DEADLINE_S + SLACK_S + 5)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"connection: close" in data.lower()
    assert b'{"error": "the request did not arrive within 1 s' in data
    assert DEADLINE_S - 0.1 <= waited <= DEADLINE_S + SLACK_S


def test_headers_sent_a_byte_at_a_time_are_cut_at_the_deadline(strict):
    request = b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    with connect(strict.port) as sock:
        stop = threading.Event()

        def trickle() -> None:
            for byte in request:
                if stop.wait(0.2):
                    return
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        data, waited = read_all(sock, DEADLINE_S + SLACK_S + 5)
        stop.set()
    # Headers unfinished: no route is known yet, so the answer has the server's general shape.
    assert data.startswith(b"HTTP/1.1 408 ") and b'"error"' in data
    assert waited <= DEADLINE_S + SLACK_S


def test_connections_that_send_nothing_are_closed_and_normal_requests_keep_their_latency(strict):
    before = latencies(strict.url, 20)
    idle = [connect(strict.port) for _ in range(300)]
    try:
        during = latencies(strict.url, 20)
        deadline = time.monotonic() + DEADLINE_S + SLACK_S + 3
        for sock in idle:
            data, _ = read_all(sock, max(0.01, deadline - time.monotonic()))
            assert data == b""  # closed without a word: there was no request to answer
    finally:
        for sock in idle:
            sock.close()
    assert max(during) < 1.0
    assert statistics.median(during) < statistics.median(before) + 0.1


def test_a_request_waiting_behind_a_long_one_on_its_connection_is_not_timed_out(strict):
    # The generation takes longer than the read deadline; the GET pipelined behind it waits
    # for the server, not for its client, and must be answered.
    body = b'{"model": "mini-gpt", "prompt": "def ", "max_tokens": 1000, "temperature": 0}'
    raw = (
        b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        + b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    with connect(strict.port) as sock:
        started = time.monotonic()
        sock.sendall(raw)
        sock.settimeout(60)
        data = b""
        while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b'{"live":true}'):
            chunk = sock.recv(65536)
            assert chunk, data[-300:]
            data += chunk
        took = time.monotonic() - started
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ") and b'"finish_reason":"length"' in first
    assert second.startswith(b"200 ")
    assert took > DEADLINE_S  # the case really waited longer than the deadline


def test_past_the_connection_cap_a_request_gets_503_with_retry_after(start_server):
    capped = start_server(models=("digits-cnn",), max_connections=4)
    held = [connect(capped.port) for _ in range(4)]
    try:
        time.sleep(0.2)  # let the server accept them all
        reply = httpx.get(capped.url + "/v2/health/live", timeout=10)
        assert reply.status_code == 503 and reply.headers["retry-after"] == "1"
        assert "4 connections open" in reply.json()["error"]
        openai_shape = httpx.get(capped.url + "/v1/models", timeout=10).json()
        assert openai_shape["error"]["code"] == 503
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(capped.url + "/v2/health/live", timeout=10).status_code == 200


def test_a_steady_upload_within_the_deadline_is_served(strict):
    pixels = np.zeros((200, 64), np.float32).ravel().tolist()
    body = httpx.Request(
        "POST",
        strict.url + "/v2/models/digits-cnn/infer",
        json={
            "inputs": [{"name": "pixels", "shape": [200, 64], "datatype": "FP32", "data": pixels}]
        },
    ).read()
    head = (
        b"POST /v2/models/digits-cnn/infer HTTP/1.1\r\nHost: t\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
    )
    with connect(strict.port) as sock:
        sock.sendall(head)
        for i in range(0, len(body), len(body) // 4 + 1):  # four pieces over ~0.6 s
            time.sleep(0.15)
            sock.sendall(body[i : i + len(body) // 4 + 1])
        data, _ = read_all(sock, 30)
    assert data.startswith(b"HTTP/1.1 200 ")
