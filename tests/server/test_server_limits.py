"""Malformed requests get a 4xx with {"error": ...} that says what was wrong; never a 500."""

from __future__ import annotations

import json

import httpx
import pytest

GOOD_ROW = [0.0] * 64


def _pixels(data, shape=(1, 64), datatype="FP32", name="pixels"):
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]}


def _text(data, shape=None):
    return {
        "inputs": [
            {"name": "text", "shape": shape or [len(data)], "datatype": "BYTES", "data": data}
        ]
    }


CASES = {
    "bad json": ("digits-cnn", b"{not json", "not valid JSON"),
    "empty body": ("digits-cnn", b"", "empty"),
    "not an object": ("digits-cnn", b"[1, 2]", "JSON object"),
    "no inputs": ("digits-cnn", {"inputs": []}, "inputs"),
    "wrong input name": ("digits-cnn", _pixels(GOOD_ROW, name="image"), "'pixels'"),
    "wrong shape": ("digits-cnn", _pixels([0.0] * 63, shape=(1, 63)), "[N, 64]"),
    "shape and data disagree": ("digits-cnn", _pixels(GOOD_ROW, shape=(2, 64)), "elements"),
    "wrong datatype": ("digits-cnn", _pixels(["x"] * 64, datatype="BYTES"), "FP32"),
    "unknown datatype": ("digits-cnn", _pixels(GOOD_ROW, datatype="FP99"), "datatype"),
    "datatype not a string": ("digits-cnn", _pixels(GOOD_ROW, datatype={}), "datatype"),
    "strings as numbers": ("digits-cnn", _pixels(["1"] * 64), "numbers"),
    "nan": (
        "digits-cnn",
        b'{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32",'
        b'"data":[NaN' + b",0" * 63 + b"]}]}",
        "NaN",
    ),
    "out of range": ("digits-cnn", _pixels([17.0] * 64), "0..16"),
    "unknown output": ("digits-cnn", {**_pixels(GOOD_ROW), "outputs": [{"name": "x"}]}, "x"),
    "empty text": ("sentiment-minilm", _text(["  "]), "empty"),
    "oversized text": ("sentiment-minilm", _text(["word " * 5000]), "at most"),
    "text as numbers": (
        "sentiment-minilm",
        {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]},
        "BYTES",
    ),
    "generator over oip": ("mini-gpt", _text(["hi"]), "/v1/completions"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_infer_is_a_clear_400(server, case):
    model, body, words = CASES[case]
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = httpx.post(f"{server.url}/v2/models/{model}/infer", content=content)
    assert reply.status_code == 400, reply.text
    assert words in reply.json()["error"]


def test_bad_binary_header(server):
    url = server.url + "/v2/models/digits-cnn/infer"
    reply = httpx.post(url, content=b"{}", headers={"Inference-Header-Content-Length": "99"})
    assert reply.status_code == 400 and "body holds 2 bytes" in reply.json()["error"]
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [1, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 256},
                }
            ]
        }
    ).encode()
    short = httpx.post(
        url, content=head + b"\0" * 100, headers={"Inference-Header-Content-Length": str(len(head))}
    )
    assert short.status_code == 400 and "binary_data_size" in short.json()["error"]


def test_unknown_model_route_and_method(server):
    model = httpx.post(server.url + "/v2/models/nope/infer", json=_pixels(GOOD_ROW))
    assert model.status_code == 404 and "unknown model 'nope'" in model.json()["error"]
    route = httpx.get(server.url + "/v3/whatever")
    assert route.status_code == 404 and "no such endpoint" in route.json()["error"]
    method = httpx.delete(server.url + "/v2/models/digits-cnn/infer")
    assert method.status_code == 405 and "DELETE" in method.json()["error"]
    version = httpx.get(server.url + "/v2/models/digits-cnn/versions/2")
    assert version.status_code == 404 and "version" in version.json()["error"]


def test_body_over_the_limit_is_413(start_server):
    small = start_server(models=["digits-cnn"], max_body_bytes=2048)
    url = small.url + "/v2/models/digits-cnn/infer"
    big = json.dumps(_pixels([1.0] * 64 * 20, shape=(20, 64))).encode()
    reply = httpx.post(url, content=big)
    assert reply.status_code == 413 and "limit of 2,048" in reply.json()["error"]

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        yield big[:1000]
        yield big[1000:]

    streamed = httpx.post(url, content=chunks())
    assert streamed.status_code == 413
    fits = httpx.post(url, content=json.dumps(_pixels(GOOD_ROW)).encode())
    assert fits.status_code == 200


def test_errors_are_counted_in_metrics(server):
    httpx.post(server.url + "/v2/models/digits-cnn/infer", content=b"{")
    text = httpx.get(server.url + "/metrics").text
    assert 'maaslab_errors_total{code="400"}' in text
    assert 'maaslab_requests_total{code="400",endpoint="/v2/models/{name}/infer"' in text
    assert 'maaslab_queue_depth{model="sentiment-minilm"} 0.0' in text
    assert 'maaslab_request_seconds_bucket{endpoint="/v2/models/{name}/infer"' in text


def test_compressed_bodies_are_bounded_after_inflating(start_server):
    import gzip

    small = start_server(models=["digits-cnn"], max_body_bytes=4096)
    url = small.url + "/v2/models/digits-cnn/infer"
    bomb = gzip.compress(b" " * 1_000_000)  # 1 MB of spaces is ~1 KB compressed
    reply = httpx.post(url, content=bomb, headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 413 and "decompressed" in reply.json()["error"]
    broken = httpx.post(url, content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert broken.status_code == 400 and "cannot be decompressed" in broken.json()["error"]
    odd = httpx.post(url, content=b"{}", headers={"Content-Encoding": "br"})
    assert odd.status_code == 400 and "not supported" in odd.json()["error"]
