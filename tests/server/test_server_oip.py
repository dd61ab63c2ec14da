"""Open Inference Protocol v2 over a real server: httpx (JSON) and tritonclient (binary, JSON)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_digits

TEXTS = ["A wonderful film, I loved every minute.", "Dull, slow and far too long.", "ok"]


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Eight test digits on the 0..16 pixel scale."""
    return load_digits().data[-8:].astype(np.float32)


def test_health_and_server_metadata(server):
    assert httpx.get(server.url + "/v2/health/live").status_code == 200
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    meta = httpx.get(server.url + "/v2").json()
    assert meta["name"] == "maaslab"
    assert {"binary_tensor_data", "explain"} <= set(meta["extensions"])


@pytest.fixture(scope="module")
def expected(digits, shared_wrappers):
    """In-process answers of the same wrappers: what the server must return."""
    models = shared_wrappers.get_or_load(("digits-cnn", "sentiment-minilm"))
    return {
        "digits": models["digits-cnn"].predict(digits).probabilities,
        "sentiment": models["sentiment-minilm"].predict(TEXTS),
    }


def test_model_metadata_and_ready(server):
    meta = httpx.get(server.url + "/v2/models/sentiment-minilm").json()
    assert meta["name"] == "sentiment-minilm" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [
        ("probabilities", "FP32", [-1, 2]),
        ("label", "BYTES", [-1]),
    ]
    digits = httpx.get(server.url + "/v2/models/digits-cnn/versions/1").json()
    assert digits["inputs"][0] == {"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}
    assert httpx.get(server.url + "/v2/models/digits-cnn/ready").status_code == 200
    missing = httpx.get(server.url + "/v2/models/nope/ready")
    assert missing.status_code == 404 and "digits-cnn" in missing.json()["error"]


def test_json_infer_digits_matches_wrapper(server, digits, expected):
    body = {
        "id": "req-7",
        "inputs": [
            {
                "name": "pixels",
                "shape": [8, 64],
                "datatype": "FP32",
                "data": digits.ravel().tolist(),
            }
        ],
    }
    answer = httpx.post(server.url + "/v2/models/digits-cnn/infer", json=body).json()
    assert answer["id"] == "req-7" and answer["model_name"] == "digits-cnn"
    (out,) = answer["outputs"]
    assert out["name"] == "probabilities" and out["shape"] == [8, 10]
    got = np.asarray(out["data"], dtype=np.float32).reshape(8, 10)
    np.testing.assert_allclose(got, expected["digits"], atol=1e-6)


def test_json_infer_sentiment_with_requested_output(server, expected):
    body = {
        "inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": TEXTS}],
        "outputs": [{"name": "label"}],
    }
    answer = httpx.post(server.url + "/v2/models/sentiment-minilm/infer", json=body).json()
    assert [o["name"] for o in answer["outputs"]] == ["label"]
    assert answer["outputs"][0]["data"] == list(expected["sentiment"].labels)


def _triton_digits(client, digits, binary: bool):
    inp = triton.InferInput("pixels", list(digits.shape), "FP32")
    inp.set_data_from_numpy(digits, binary_data=binary)
    out = triton.InferRequestedOutput("probabilities", binary_data=binary)
    return client.infer("digits-cnn", [inp], outputs=[out], request_id="t1")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_digits(server, digits, expected, binary):
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits-cnn")
    assert client.get_model_metadata("digits-cnn")["platform"] == "pytorch"
    result = _triton_digits(client, digits, binary)
    assert result.get_response()["id"] == "t1"
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected["digits"], atol=1e-6)


def test_tritonclient_defaults_sentiment(server, expected):
    # Defaults everywhere: binary input data and no outputs named, so binary_data_output.
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    inp = triton.InferInput("text", [len(TEXTS)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=np.object_))
    result = client.infer("sentiment-minilm", [inp])
    probs = result.as_numpy("probabilities")
    np.testing.assert_allclose(probs, expected["sentiment"].probabilities, atol=1e-5)
    labels = [b.decode() for b in result.as_numpy("label")]
    assert labels == list(expected["sentiment"].labels)


def test_tritonclient_json_sentiment(server, expected):
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    inp = triton.InferInput("text", [len(TEXTS)], "BYTES")
    inp.set_data_from_numpy(np.array(TEXTS, dtype=np.object_), binary_data=False)
    outs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("probabilities", "label")]
    result = client.infer("sentiment-minilm", [inp], outputs=outs)
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected["sentiment"].probabilities, atol=1e-5
    )
    assert [str(x) for x in result.as_numpy("label")] == list(expected["sentiment"].labels)


def test_binary_request_by_hand(server, digits, expected):
    # The extension spelled out: JSON header, its length in a header, raw little-endian floats.
    import json

    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "pixels",
                    "shape": [8, 64],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": digits.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    reply = httpx.post(
        server.url + "/v2/models/digits-cnn/infer",
        content=head + digits.astype("<f4").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert reply.status_code == 200
    n = int(reply.headers["Inference-Header-Content-Length"])
    header = json.loads(reply.content[:n])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 8 * 10 * 4
    got = np.frombuffer(reply.content[n:], dtype="<f4").reshape(8, 10)
    np.testing.assert_allclose(got, expected["digits"], atol=1e-6)


def test_embedder_over_oip(server, shared_wrappers):
    body = {
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a cat", "a dog"]}]
    }
    answer = httpx.post(server.url + "/v2/models/minilm-embed/infer", json=body).json()
    got = np.asarray(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, -1)
    want = shared_wrappers.get_or_load(("minilm-embed",))["minilm-embed"].embed(["a cat", "a dog"])
    np.testing.assert_allclose(got, want.embeddings, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_tritonclient_compressed_requests(server, digits, expected, algorithm):
    client = triton.InferenceServerClient(f"127.0.0.1:{server.port}")
    inp = triton.InferInput("pixels", list(digits.shape), "FP32")
    inp.set_data_from_numpy(digits)
    result = client.infer(
        "digits-cnn",
        [inp],
        request_compression_algorithm=algorithm,
        response_compression_algorithm=algorithm,
    )
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected["digits"], atol=1e-6)
