"""Hostile bodies on every route: each class of bad JSON, put in the place of every field of a
valid request (and of the whole body), is a 400 in the route family's error shape; never a 500,
and the connection keeps answering the requests behind it."""

from __future__ import annotations

import gzip
import json
import shutil
import socket

import httpx
import pytest

from maaslab.paths import MODELS_DIR
from maaslab.serve.parsing import MAX_DEPTH
from maaslab.serve.tenants import KeyTable, Tenant, hash_key

MARK = "__hostile__"
# The hostile JSON text, and a word its refusal must contain.
HOSTILE: dict[str, tuple[bytes, str]] = {
    "1,000 nested arrays": (b"[" * 1000 + b"]" * 1000, "nests more than"),
    "1,000 nested objects": (b'{"a":' * 1000 + b"0" + b"}" * 1000, "nests more than"),
    "just too deep": (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nests more than"),
    "1 and 400 zeros": (b"1" + b"0" * 400, "too large"),
    "5,000-digit integer": (b"9" * 5000, "too large"),
    "21-digit negative integer": (b"-" + b"9" * 21, "too large"),
    "1e400": (b"1e400", "too large for a 64-bit float"),
    "-1e400": (b"-1e400", "too large for a 64-bit float"),
    "NaN": (b"NaN", "not a JSON number"),
    "Infinity": (b"Infinity", "not a JSON number"),
    "-Infinity": (b"-Infinity", "not a JSON number"),
    "lone high surrogate": (b'"a\\ud800b"', "surrogate"),
    "lone low surrogate": (b'"\\udfff"', "surrogate"),
    "surrogate in a list": (b'["ok", "\\ud83d"]', "surrogate"),
    "surrogate as a key": (b'{"\\udbff": 1}', "surrogate"),
    "invalid UTF-8": (b'"\xff\xfe"', "UTF-8"),
}

PIXELS = {"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [[0.0] * 64]}
TEXT = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a fine film"]}
OUTPUT = {"name": "probabilities", "parameters": {"binary_data": False}}
SAMPLING = {
    "model": "mini-gpt",
    "max_tokens": 2,
    "temperature": 0.5,
    "top_p": 0.9,
    "n": 1,
    "stop": ["\n"],
    "seed": 1,
    "stream": False,
    "stream_options": {"include_usage": True},
}
# A valid request for every POST route (template -> (a concrete path, the body)).
ROUTES: dict[str, tuple[str, dict]] = {
    "/v2/models/{name}/infer": (
        "/v2/models/digits-cnn/infer",
        {"id": "r1", "parameters": {"binary_data_output": False}, "inputs": [PIXELS]},
    ),
    "/v2/models/{name}/versions/{version}/infer": (
        "/v2/models/sentiment-minilm/versions/1/infer",
        {"id": "r2", "inputs": [TEXT], "outputs": [OUTPUT]},
    ),
    "/v2/models/{name}/explain": (
        "/v2/models/sentiment-minilm/explain",
        {"parameters": {"method": "lime", "seed": 0, "target": 1}, "inputs": [TEXT]},
    ),
    "/v1/completions": ("/v1/completions", {**SAMPLING, "prompt": ["def f(x):"]}),
    "/v1/chat/completions": (
        "/v1/chat/completions",
        {
            **SAMPLING,
            "messages": [
                {"role": "system", "content": "Explain Python."},
                {"role": "user", "content": [{"type": "text", "text": "What is len?"}]},
            ],
        },
    ),
    "/v1/embeddings": (
        "/v1/embeddings",
        {"model": "minilm-embed", "input": ["hello", "world"], "encoding_format": "float"},
    ),
}
# The admin routes (an admin key, a repository): template -> (a concrete path, the body).
ADMIN_KEY = "admin-key-0123456789abcdef"
ADMIN_ROUTES: dict[str, tuple[str, dict | None]] = {
    "/v2/repository/index": ("/v2/repository/index", {"ready": False}),
    "/v2/repository/models/{name}/load": ("/v2/repository/models/digits/load", {}),
    "/v2/repository/models/{name}/unload": (
        "/v2/repository/models/digits/unload",
        {"parameters": {"version": "9"}},
    ),
    "/v2/models/{name}/rollout": ("/v2/models/digits/rollout", {"canary_percent": 0}),
    "/v2/models/{name}/promote": ("/v2/models/digits/promote", None),
    "/v2/models/{name}/rollback": ("/v2/models/digits/rollback", None),
}
BODYLESS = {"/v2/models/{name}/promote", "/v2/models/{name}/rollback"}
# The other OIP routes' models take other inputs: the same sweep covers their fields too.
EXTRA = {
    "digits over a version": (
        "/v2/models/digits-cnn/versions/1/infer",
        {"inputs": [PIXELS], "outputs": [OUTPUT]},
    ),
    "embedder over OIP": ("/v2/models/minilm-embed/infer", {"inputs": [TEXT]}),
    "digits explained": (
        "/v2/models/digits-cnn/explain",
        {"parameters": {"method": "shap"}, "inputs": [PIXELS]},
    ),
}


def places(value: object) -> list[object]:
    """Copies of `value` with MARK in each place a value can go: the whole, every field's value,
    every key (as {MARK: ...}), a list's first item and the whole list."""
    out: list[object] = [MARK]
    if isinstance(value, dict):
        for key, item in value.items():
            for sub in places(item):
                out.append({**value, key: sub})
            out.append({MARK if k == key else k: v for k, v in value.items()})
    elif isinstance(value, list) and value:
        for sub in places(value[0])[1:]:
            out.append([sub, *value[1:]])
    return out


def hostile_bodies(body: dict) -> list[tuple[str, bytes, str]]:
    """(what, raw body, expected word) for every place x every hostile class."""
    cases = []
    for placed in places(body):
        text = json.dumps(placed).encode()
        for name, (raw, word) in HOSTILE.items():
            if f'"{MARK}":'.encode() in text and not raw.startswith(b'"'):
                continue  # a key: only strings can stand there
            cases.append(
                (f"{name} at {text[:80]!r}", text.replace(f'"{MARK}"'.encode(), raw), word)
            )
    return cases


def family_message(path: str, reply: httpx.Response) -> str:
    """The refusal's message, checking it has the shape of the route's family."""
    body = reply.json()
    if path.startswith("/v1/"):
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == 400
        return error["message"]
    assert set(body) == {"error"} and isinstance(body["error"], str)
    return body["error"]


def test_the_sweep_covers_every_post_route(server):
    schema = httpx.get(server.url + "/openapi.json").json()
    posts = {path for path, ops in schema["paths"].items() if "post" in ops}
    assert posts == set(ROUTES) | set(ADMIN_ROUTES)


@pytest.fixture(scope="module")
def admin_server(start_server, tmp_path_factory):
    """A server with an admin key and a repository (digits version 1), for the admin routes."""
    root = tmp_path_factory.mktemp("repo")
    (root / "digits").mkdir()
    shutil.copytree(MODELS_DIR / "digits-mlp", root / "digits" / "1")
    keys = root.parent / f"{root.name}-keys.json"
    KeyTable([Tenant("teacher", "admin", hash_key(ADMIN_KEY))]).save(keys)
    return start_server(models=(), repository=str(root), keys_file=str(keys))


@pytest.mark.parametrize("route", list(ADMIN_ROUTES))
def test_every_hostile_value_on_an_admin_route_is_a_400(admin_server, route):
    path, body = ADMIN_ROUTES[route]
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    wrong = []
    with httpx.Client(base_url=admin_server.url, timeout=30, headers=headers) as client:
        ok = client.post(path, json=body)
        assert ok.status_code in (200, 400, 404), ok.text  # e.g. promote with no challenger
        for what, raw, word in hostile_bodies(body or {"x": 1}):
            reply = client.post(path, content=raw, headers={"content-type": "application/json"})
            if route in BODYLESS:  # takes no body: whatever is sent is not even read
                if reply.status_code != ok.status_code:
                    wrong.append(f"{what}: {reply.status_code} {reply.text[:200]}")
            elif reply.status_code != 400 or word not in family_message(path, reply):
                wrong.append(f"{what}: {reply.status_code} {reply.text[:200]}")
    assert not wrong, f"{len(wrong)} wrong, e.g.\n" + "\n".join(wrong[:5])


@pytest.mark.parametrize("route", [*ROUTES, *EXTRA])
def test_every_hostile_value_in_every_place_is_a_400(server, route):
    path, body = ROUTES[route] if route in ROUTES else EXTRA[route]
    cases = hostile_bodies(body)
    assert len(cases) > 50
    wrong = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ok = client.post(path, json=body)
        assert ok.status_code == 200, ok.text  # the untouched request is served
        for what, raw, word in cases:
            headers = {"content-type": "application/json"}
            reply = client.post(path, content=raw, headers=headers)
            if reply.status_code != 400 or word not in family_message(path, reply):
                wrong.append(f"{what}: {reply.status_code} {reply.text[:200]}")
    assert not wrong, f"{len(wrong)} of {len(cases)} wrong, e.g.\n" + "\n".join(wrong[:5])


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_json_is_refused_inside_gzip_and_before_binary_tensors(server, name):
    raw, word = HOSTILE[name]
    body = json.dumps({"inputs": [PIXELS], "id": MARK}).encode().replace(f'"{MARK}"'.encode(), raw)
    path = server.url + "/v2/models/digits-cnn/infer"
    zipped = httpx.post(path, content=gzip.compress(body), headers={"content-encoding": "gzip"})
    assert zipped.status_code == 400 and word in zipped.json()["error"]
    # Triton's binary extension: the JSON header is checked the same way, the tensor after it
    # is not JSON at all.
    head = body.replace(b'"data": [[' + b", ".join([b"0.0"] * 64) + b"]]", b'"parameters": {}')
    framed = httpx.post(
        path,
        content=head + b"\x00" * 4,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert framed.status_code == 400 and word in framed.json()["error"]


def test_path_parameters_and_headers_with_odd_text_are_4xx(server):
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/v2/models/%ED%A0%80").status_code == 404
        assert (
            client.post("/v2/models/%ED%A0%80/infer", json={"inputs": [PIXELS]}).status_code == 404
        )
        long_header = {"Inference-Header-Content-Length": "9" * 5000}
        reply = client.post("/v2/models/digits-cnn/infer", content=b"{}", headers=long_header)
        assert reply.status_code == 400 and "whole number" in reply.json()["error"]


def exchange(port: int, raw: bytes, replies: int) -> list[bytes]:
    """Send raw bytes on one connection; read until `replies` HTTP answers have come back."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        data = b""
        while data.count(b"HTTP/1.1 ") < replies:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return [b"HTTP/1.1 " + part for part in data.split(b"HTTP/1.1 ")[1:]]


def request(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"content-type: application/json\r\n\r\n" + body


def test_a_request_pipelined_behind_a_refusal_is_answered(server):
    deep = HOSTILE["1,000 nested arrays"][0]
    raw = request("POST", "/v2/models/digits-cnn/infer", deep) + request("GET", "/v2/health/live")
    first, second = exchange(server.port, raw, 2)
    assert first.startswith(b"HTTP/1.1 400") and b"nests more than" in first
    assert second.startswith(b"HTTP/1.1 200") and b'{"live":true}' in second


def test_a_bug_is_a_logged_500_that_keeps_the_connection(start_server, caplog):
    srv = start_server(models=("digits-cnn",))

    async def broken() -> None:
        raise RuntimeError("a deliberate bug")

    srv.app.add_api_route("/v2/test/broken", broken, methods=["GET"])
    srv.app.add_api_route("/v1/test/broken", broken, methods=["GET"])
    raw = request("GET", "/v2/test/broken") + request("GET", "/v1/test/broken")
    raw += request("GET", "/v2/health/live")
    with caplog.at_level("ERROR", logger="maaslab.serve"):
        oip, openai, live = exchange(srv.port, raw, 3)
    assert oip.startswith(b"HTTP/1.1 500") and b'"error": "internal error (RuntimeError)' in oip
    assert openai.startswith(b"HTTP/1.1 500") and b'"type": "server_error"' in openai
    assert live.startswith(b"HTTP/1.1 200")
    assert "a deliberate bug" in caplog.text  # the traceback is in the log, not the answer
    assert b"deliberate" not in oip + openai
