"""Open Inference Protocol v2 over gRPC on real servers, called with the official
tritonclient.grpc and checked against tritonclient.http on the same server."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from sklearn.datasets import load_digits
from tritonclient.utils import InferenceServerException

TEXTS = ["A wonderful film, I loved every minute.", "Dull, slow and far too long.", "ok"]
KEY = "grpc-test-key-0123456789"


@pytest.fixture(scope="module")
def both(start_server):
    """One server with HTTP and gRPC: (server, grpc client, http client)."""
    srv = start_server(models=("digits-cnn", "sentiment-minilm"), grpc_port=0)
    assert srv.grpc_port and srv.grpc_port != srv.port
    grpc_client = tgrpc.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    http_client = thttp.InferenceServerClient(f"127.0.0.1:{srv.port}")
    return srv, grpc_client, http_client


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Eight test digits on the 0..16 pixel scale."""
    return load_digits().data[-8:].astype(np.float32)


def _pixels(module, rows: np.ndarray):
    inp = module.InferInput("pixels", list(rows.shape), "FP32")
    inp.set_data_from_numpy(rows)
    return inp


def _texts(module, texts: list[str]):
    inp = module.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_))
    return inp


def _status(err: pytest.ExceptionInfo) -> str:
    return str(err.value.status())


def test_health_and_server_metadata(both):
    _, client, _ = both
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits-cnn") and client.is_model_ready("digits-cnn", "1")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "maaslab" and meta["version"]


def test_model_metadata_matches_http(both):
    srv, client, _ = both
    for name in ("digits-cnn", "sentiment-minilm"):
        got = client.get_model_metadata(name, as_json=True)
        want = httpx.get(f"{srv.url}/v2/models/{name}").json()
        assert got["name"] == want["name"] and got["versions"] == want["versions"]
        assert got["platform"] == want["platform"]
        for part in ("inputs", "outputs"):
            # MessageToJson writes int64 as strings
            got_part = [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in got[part]]
            assert got_part == [(t["name"], t["datatype"], t["shape"]) for t in want[part]]


def test_fp32_digits_equal_http_bit_for_bit(both, digits, shared_wrappers):
    _, client, http = both
    got = client.infer("digits-cnn", [_pixels(tgrpc, digits)], request_id="g1")
    want = http.infer("digits-cnn", [_pixels(thttp, digits)])
    assert got.get_response().id == "g1" and got.get_response().model_version == "1"
    probs = got.as_numpy("probabilities")
    assert probs.shape == (8, 10) and probs.dtype == np.float32
    assert probs.tobytes() == want.as_numpy("probabilities").tobytes()  # bit-identical
    expected = shared_wrappers["digits-cnn"].predict(digits).probabilities
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_bytes_sentiment_equal_http_bit_for_bit(both):
    _, client, http = both
    got = client.infer("sentiment-minilm", [_texts(tgrpc, TEXTS)])
    want = http.infer("sentiment-minilm", [_texts(thttp, TEXTS)])
    probs = got.as_numpy("probabilities")
    assert probs.shape == (3, 2)
    assert probs.tobytes() == want.as_numpy("probabilities").tobytes()
    assert list(got.as_numpy("label")) == list(want.as_numpy("label"))
    # one output asked for: only it comes back
    only = client.infer(
        "sentiment-minilm", [_texts(tgrpc, TEXTS)], outputs=[tgrpc.InferRequestedOutput("label")]
    )
    assert [o.name for o in only.get_response().outputs] == ["label"]
    assert list(only.as_numpy("label")) == list(want.as_numpy("label"))


def test_typed_contents_give_the_same_numbers(both, digits):
    # Not what tritonclient sends (it uses raw contents), but the protocol allows it.
    from tritonclient.grpc import service_pb2 as pb

    _, client, _ = both
    request = pb.ModelInferRequest(model_name="digits-cnn")
    tensor = request.inputs.add(name="pixels", datatype="FP32", shape=[2, 64])
    tensor.contents.fp32_contents.extend(digits[:2].ravel().tolist())
    reply = client._client_stub.ModelInfer(request)
    got = np.frombuffer(reply.raw_output_contents[0], dtype="<f4").reshape(2, 10)
    raw = client.infer("digits-cnn", [_pixels(tgrpc, digits[:2])]).as_numpy("probabilities")
    assert got.tobytes() == raw.tobytes()


def test_errors_map_to_grpc_status_codes(both, digits):
    srv, client, _ = both
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [_pixels(tgrpc, digits)])
    assert _status(err) == "StatusCode.NOT_FOUND" and "digits-cnn" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.is_model_ready("nope")
    assert _status(err) == "StatusCode.NOT_FOUND"
    wrong_shape = np.zeros((2, 63), dtype=np.float32)
    with pytest.raises(InferenceServerException) as err:
        client.infer("digits-cnn", [_pixels(tgrpc, wrong_shape)])
    assert _status(err) == "StatusCode.INVALID_ARGUMENT"
    http_reply = httpx.post(
        f"{srv.url}/v2/models/digits-cnn/infer",
        json={
            "inputs": [{"name": "pixels", "shape": [2, 63], "datatype": "FP32", "data": [0] * 126}]
        },
    )
    assert err.value.message() == http_reply.json()["error"]  # the HTTP route's own message
    with pytest.raises(InferenceServerException) as err:
        client.infer("sentiment-minilm", [_pixels(tgrpc, digits)])
    assert _status(err) == "StatusCode.INVALID_ARGUMENT" and "'text'" in err.value.message()
    ints = tgrpc.InferInput("pixels", [1, 64], "INT32")
    ints.set_data_from_numpy(np.zeros((1, 64), dtype=np.int32))
    with pytest.raises(InferenceServerException) as err:
        client.infer("digits-cnn", [ints])
    assert _status(err) == "StatusCode.INVALID_ARGUMENT" and "must be FP32" in err.value.message()


def test_a_batch_of_rows_answers_each_row(both, digits):
    _, client, _ = both
    whole = client.infer("digits-cnn", [_pixels(tgrpc, digits)]).as_numpy("probabilities")
    for i in (0, 5):
        one = client.infer("digits-cnn", [_pixels(tgrpc, digits[i : i + 1])])
        np.testing.assert_allclose(one.as_numpy("probabilities")[0], whole[i], atol=1e-6)


def test_metrics_count_grpc_calls(both, digits):
    srv, client, _ = both
    client.infer("digits-cnn", [_pixels(tgrpc, digits[:1])])
    with pytest.raises(InferenceServerException):
        client.infer("digits-cnn", [_pixels(tgrpc, np.zeros((1, 3), dtype=np.float32))])
    metrics = httpx.get(srv.url + "/metrics").text
    ok = 'maaslab_requests_total{code="200",endpoint="grpc ModelInfer",model="digits-cnn"}'
    bad = 'maaslab_requests_total{code="400",endpoint="grpc ModelInfer",model="digits-cnn"}'
    assert ok in metrics and bad in metrics
    assert 'maaslab_request_seconds_count{endpoint="grpc ModelInfer",model="digits-cnn"}' in metrics


def test_api_key_in_metadata(start_server, digits):
    srv = start_server(models=("digits-cnn",), grpc_port=0, api_key=KEY)
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    assert client.is_server_live() and client.is_server_ready()  # probes are open
    for headers in (None, {"authorization": "Bearer wrong-key-0123456789"}):
        with pytest.raises(InferenceServerException) as err:
            client.infer("digits-cnn", [_pixels(tgrpc, digits[:1])], headers=headers)
        assert _status(err) == "StatusCode.UNAUTHENTICATED" and "API key" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("digits-cnn")
    assert _status(err) == "StatusCode.UNAUTHENTICATED"
    good = {"authorization": f"Bearer {KEY}"}
    result = client.infer("digits-cnn", [_pixels(tgrpc, digits[:1])], headers=good)
    assert result.as_numpy("probabilities").shape == (1, 10)


def _blocked(srv, model: str) -> threading.Event:
    """Hold the model's batches until the returned event is set."""
    batcher = srv.app.state.models[model].batcher
    run, release = batcher.run, threading.Event()

    def held(payloads):
        release.wait(30)
        return run(payloads)

    batcher.run = held
    return release


def _held(srv):
    """digits-cnn's batcher on `srv` with its batches held (_blocked), a gRPC client, and the
    list its async_infer callback `done` appends (result, error) to."""
    batcher = srv.app.state.models["digits-cnn"].batcher
    release = _blocked(srv, "digits-cnn")
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    answers: list = []

    def done(result, error):
        answers.append((result, error))

    return batcher, release, client, answers, done


def _wait(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server never got there"
        time.sleep(0.01)


def test_a_full_queue_is_resource_exhausted(start_server, digits):
    srv = start_server(models=("digits-cnn",), grpc_port=0, batching=False, max_queue=1)
    batcher, release, client, answers, done = _held(srv)
    try:
        client.async_infer("digits-cnn", [_pixels(tgrpc, digits[:1])], done)  # runs (held)
        _wait(lambda: batcher.in_flight == 1)
        client.async_infer("digits-cnn", [_pixels(tgrpc, digits[1:2])], done)  # waits
        _wait(lambda: batcher.depth == 1)
        with pytest.raises(InferenceServerException) as err:
            client.infer("digits-cnn", [_pixels(tgrpc, digits[2:3])])
        assert _status(err) == "StatusCode.RESOURCE_EXHAUSTED"
        assert "overloaded" in err.value.message()
    finally:
        release.set()
    _wait(lambda: len(answers) == 2)
    assert all(error is None for _, error in answers)  # accepted work is answered
    metrics = httpx.get(srv.url + "/metrics").text
    assert 'maaslab_rejected_total{model="digits-cnn"} 1.0' in metrics
    assert 'code="503",endpoint="grpc ModelInfer"' in metrics


def test_grpc_and_http_requests_share_a_batch(start_server, digits, shared_wrappers):
    # A batch of two rows waits up to 5 s for its second row: one comes over gRPC, one over HTTP.
    srv = start_server(models=("digits-cnn",), grpc_port=0, max_batch_size=2, max_delay_ms=5000)
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    answers: list = []

    def done(result, error):
        answers.append(result)

    started = time.monotonic()
    client.async_infer("digits-cnn", [_pixels(tgrpc, digits[:1])], done)
    _wait(lambda: srv.app.state.drain.open == 1)  # the gRPC call waits for company
    assert not answers
    http = thttp.InferenceServerClient(f"127.0.0.1:{srv.port}")
    via_http = http.infer("digits-cnn", [_pixels(thttp, digits[1:2])]).as_numpy("probabilities")
    _wait(lambda: len(answers) == 1)
    assert time.monotonic() - started < 5  # the batch ran when full, not at its deadline
    via_grpc = answers[0].as_numpy("probabilities")
    want = shared_wrappers["digits-cnn"].predict(digits[:2]).probabilities
    np.testing.assert_allclose(np.concatenate([via_grpc, via_http]), want, atol=1e-6)
    metrics = httpx.get(srv.url + "/metrics").text
    assert 'maaslab_batch_size_count{model="digits-cnn"} 1.0' in metrics
    assert 'maaslab_batch_size_sum{model="digits-cnn"} 2.0' in metrics


def test_cli_grpc_port_zero_is_read_from_the_ready_line(spawn_server, digits):
    from maaslab.serve.config import ServeConfig
    from maaslab.serve.process import ServerProcess

    srv = spawn_server("--models", "digits-cnn", "--device", "cpu", "--grpc-port", "0")
    assert srv.grpc_port and srv.grpc_port != srv.port
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    assert client.is_server_ready()
    got = client.infer("digits-cnn", [_pixels(tgrpc, digits[:2])]).as_numpy("probabilities")
    assert got.shape == (2, 10)
    srv.process.terminate()
    assert srv.process.wait(30) == 0  # SIGTERM drains gRPC with HTTP and exits cleanly

    config = ServeConfig(models=("digits-cnn",), port=0, grpc_port=0, device="cpu")
    with ServerProcess(config) as server:
        assert server.grpc_port and server.grpc_port != server.port
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        assert client.is_model_ready("digits-cnn")
    assert server.exit_code == 0


def test_sigterm_drain_answers_the_running_call_and_refuses_new_ones(start_server, digits):
    srv = start_server(models=("digits-cnn",), grpc_port=0, batching=False)
    batcher, release, client, answers, done = _held(srv)
    try:
        client.async_infer("digits-cnn", [_pixels(tgrpc, digits[:1])], done)
        _wait(lambda: batcher.in_flight == 1)
        srv.uvicorn.should_exit = True  # what SIGTERM does
        _wait(lambda: srv.app.state.drain.draining)
        time.sleep(0.2)
        late = tgrpc.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        with pytest.raises(InferenceServerException) as err:
            late.is_server_live(client_timeout=5)
        assert _status(err) == "StatusCode.UNAVAILABLE"  # no new calls once draining
    finally:
        release.set()
    _wait(lambda: len(answers) == 1)
    result, error = answers[0]
    assert error is None and result.as_numpy("probabilities").shape == (1, 10)
    srv.thread.join(30)
    assert not srv.thread.is_alive() and srv.app.state.drain.exit_code == 0


def test_grpc_port_is_checked():
    from maaslab.errors import MaaslabError
    from maaslab.serve.config import ServeConfig

    with pytest.raises(MaaslabError, match=r"grpc-port must be 0\.\.65535"):
        ServeConfig(grpc_port=70000)
    with pytest.raises(MaaslabError, match="port of its own"):
        ServeConfig(port=8000, grpc_port=8000)


def test_request_timeout_and_message_size_limits(start_server, digits):
    srv = start_server(
        models=("digits-cnn",), grpc_port=0, request_timeout_s=0.2, max_body_bytes=2048
    )
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
    with pytest.raises(InferenceServerException) as err:  # 8 rows: 2 KiB of floats and more
        client.infer("digits-cnn", [_pixels(tgrpc, digits)])
    assert _status(err) == "StatusCode.RESOURCE_EXHAUSTED"
    release = _blocked(srv, "digits-cnn")
    try:
        with pytest.raises(InferenceServerException) as err:
            client.infer("digits-cnn", [_pixels(tgrpc, digits[:1])])
    finally:
        release.set()
    assert _status(err) == "StatusCode.DEADLINE_EXCEEDED"
    assert "did not answer within 0.2 s" in err.value.message()
