"""The protocol lab against a real server: REST-JSON, REST-binary and gRPC from the official
clients give bit-identical answers, and JSON costs the bytes it should."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from maaslab.errors import MaaslabError
from maaslab.serve import protocols
from maaslab.serve.protocols import PROTOCOLS, ProtocolConfig, compare_protocols, digit_rows

KEY = "protocol-lab-key-0123456789"
SMALL = ProtocolConfig(rows=(8, 1), repeats=2, warmup=1)


@pytest.fixture(scope="module")
def both(start_server):
    """A digits-cnn server with HTTP and gRPC: (http url, grpc address)."""
    srv = start_server(models=("digits-cnn",), grpc_port=0)
    return srv.url, f"127.0.0.1:{srv.grpc_port}"


@pytest.fixture(scope="module")
def report(both):
    """The lab at 1 and 8 rows, two timed calls each."""
    return compare_protocols(*both, SMALL)


def test_outputs_are_bit_identical_across_protocols_at_every_size(report):
    assert report.rows == (1, 8) and report.identical == {1: True, 8: True}
    assert [(r.rows, r.protocol) for r in report.records] == [
        (n, p) for n in (1, 8) for p in PROTOCOLS
    ]
    assert "bit-identical" in report.summary() and report.summary().startswith("at 8 rows")


def test_json_costs_more_bytes_and_binary_and_grpc_carry_raw_float32(report):
    js, binary, grpc = (report.record(p, 8) for p in ("REST-JSON", "REST-binary", "gRPC"))
    raw_in, raw_out = 8 * 64 * 4, 8 * 10 * 4  # float32 pixels in, probabilities out
    assert js.request_bytes > binary.request_bytes
    assert js.response_bytes > 2 * binary.response_bytes  # ~20 characters per float as text
    for r in (binary, grpc):
        assert r.request_bytes >= raw_in and r.response_bytes >= raw_out
    assert abs(grpc.request_bytes - binary.request_bytes) < 0.1 * binary.request_bytes
    assert grpc.response_bytes <= binary.response_bytes  # no JSON header to describe the tensor
    one = report.record("gRPC", 1)
    assert grpc.request_bytes - one.request_bytes == 7 * 64 * 4  # exactly the 7 extra rows


def test_times_are_positive_and_percentiles_ordered(report):
    for r in report.records:
        assert r.encode_ms > 0 and r.decode_ms > 0
        assert 0 < r.p50_ms <= r.p90_ms
    table = report.table()
    assert len(table) == 6 and table[0]["protocol"] == "REST-JSON" and table[0]["identical"]
    assert {"request bytes", "response bytes", "encode ms", "decode ms", "p50 ms"} <= set(table[0])


def test_a_protocol_that_answers_differently_is_refused(both, monkeypatch):
    real = protocols.ProtocolClients.call

    def nudged(self, protocol, x):
        out = real(self, protocol, x)
        if protocol == "gRPC":  # the last bit of one float: not bit-identical any more
            out = out.copy()
            out.view(np.uint32)[0, 0] ^= 1
        return out

    monkeypatch.setattr(protocols.ProtocolClients, "call", nudged)
    with pytest.raises(MaaslabError, match="answered 1 rows differently"):
        compare_protocols(*both, ProtocolConfig(rows=(1,), repeats=1, warmup=0))


def test_the_api_key_goes_to_both_http_and_grpc(start_server):
    srv = start_server(models=("digits-cnn",), grpc_port=0, api_key=KEY)
    address = f"127.0.0.1:{srv.grpc_port}"
    config = ProtocolConfig(rows=(2,), repeats=1, warmup=0)
    with pytest.raises(MaaslabError, match=r"REST-JSON call to digits-cnn failed.*api_key"):
        compare_protocols(srv.url, address, config)
    keyed = compare_protocols(srv.url, address, replace(config, api_key=KEY))
    assert keyed.identical == {2: True}


def test_a_wrong_address_says_what_to_check(both):
    http_url, _ = both
    config = ProtocolConfig(rows=(1,), repeats=1, warmup=0)
    with pytest.raises(MaaslabError, match=r"gRPC call .* failed.*--grpc-port"):
        compare_protocols(http_url, "127.0.0.1:9", config)  # nobody listens on port 9


def test_the_same_seed_draws_the_same_digits():
    a, b = digit_rows(32, seed=3), digit_rows(32, seed=3)
    assert a.dtype == np.float32 and a.shape == (32, 64) and np.array_equal(a, b)
    assert not np.array_equal(a, digit_rows(32, seed=4))
    assert a.min() >= 0 and a.max() <= 16 and np.array_equal(a, np.round(a))  # sklearn's scale
    assert len({row.tobytes() for row in digit_rows(1024)}) > 1000  # distinct digits, not tiled


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rows": (0, 8)}, r"rows must be whole numbers from 1 to 1,024.*\[0\]"),
        ({"rows": (1, 1025)}, r"rows must be whole numbers from 1 to 1,024.*\[1025\]"),
        ({"rows": ()}, "rows is empty"),
        ({"rows": (4, 4)}, "named twice"),
        ({"repeats": 0}, "repeats must be 1..10,000 timed calls, got 0"),
        ({"warmup": -1}, "warmup must be 0..100"),
        ({"model": "sentiment-minilm"}, "not a digits-\\* model: use model='digits-cnn'"),
    ],
)
def test_config_says_what_to_fix(options, message):
    with pytest.raises(MaaslabError, match=message):
        ProtocolConfig(**options)


def test_repeats_default_follows_fast_mode(monkeypatch):
    monkeypatch.setenv("MAASLAB_FAST", "1")
    assert ProtocolConfig().repeats == 5
    monkeypatch.setenv("MAASLAB_FAST", "0")
    assert ProtocolConfig().repeats == 20 and ProtocolConfig(rows=32).rows == (32,)
