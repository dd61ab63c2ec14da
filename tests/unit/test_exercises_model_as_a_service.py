"""Lesson 14's checks pass right answers and name the mistake in wrong ones."""

from __future__ import annotations

import struct

import numpy as np
from tritonclient.utils import serialize_byte_tensor

from maaslab.exercises.model_as_a_service import (
    BYTES_PROBES,
    check_bytes_tensor,
    check_infer_request,
    check_littles_law,
    check_p99,
    encode_bytes_tensor,
)


def test_littles_law():
    assert check_littles_law(lambda lam, w_ms: lam * w_ms / 1000).passed
    wrong = check_littles_law(lambda lam, w_ms: lam * w_ms)
    assert not wrong.passed and "milliseconds" in wrong.message
    assert "multiplies" in check_littles_law(lambda lam, w_ms: lam / (w_ms / 1000)).message
    assert "returned None" in check_littles_law(lambda lam, w_ms: None).message


def test_infer_request_is_checked_with_the_servers_parser():
    def right(texts):
        return {
            "inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]
        }

    assert check_infer_request(right).passed
    two_d = check_infer_request(
        lambda t: {"inputs": [{**right(t)["inputs"][0], "shape": [len(t), 1]}]}
    )
    assert two_d.passed  # [N, 1] is what tritonclient users often send; the server takes it
    bad_count = check_infer_request(lambda t: {"inputs": [{**right(t)["inputs"][0], "shape": [1]}]})
    assert not bad_count.passed and "400" in bad_count.message
    bad_type = check_infer_request(
        lambda t: {"inputs": [{**right(t)["inputs"][0], "datatype": "FP32"}]}
    )
    assert not bad_type.passed
    bad_name = check_infer_request(
        lambda t: {"inputs": [{**right(t)["inputs"][0], "name": "texts"}]}
    )
    assert not bad_name.passed and "'text'" in bad_name.message
    reversed_ = check_infer_request(lambda t: right(t[::-1]))
    assert not reversed_.passed and "in order" in reversed_.message
    assert "dict" in check_infer_request(lambda t: [t]).message


def test_p99():
    assert check_p99(lambda x: np.percentile(x, 99)).passed
    assert check_p99(lambda x: sorted(x)[int(np.ceil(0.99 * len(x))) - 1]).passed  # nearest rank
    assert "mean" in check_p99(lambda x: float(np.mean(x))).message
    assert "maximum" in check_p99(max).message
    assert "sort" in check_p99(lambda x: x[int(np.ceil(0.99 * len(x))) - 1]).message
    assert "q=99" in check_p99(lambda x: np.percentile(x, 0.99)).message


def test_bytes_tensor_reference_matches_tritonclient():
    for texts in BYTES_PROBES:
        oracle = serialize_byte_tensor(np.array([t.encode() for t in texts], dtype=np.object_))
        assert encode_bytes_tensor(texts) == oracle.item()  # a 0-d object array of bytes


def test_bytes_tensor():
    assert check_bytes_tensor(encode_bytes_tensor).passed
    big = check_bytes_tensor(
        lambda ts: b"".join(struct.pack(">I", len(t.encode())) + t.encode() for t in ts)
    )
    assert not big.passed and "little-endian" in big.message
    chars = check_bytes_tensor(
        lambda ts: b"".join(struct.pack("<I", len(t)) + t.encode() for t in ts)
    )
    assert not chars.passed and "UTF-8 bytes, not characters" in chars.message
    bare = check_bytes_tensor(lambda ts: b"".join(t.encode() for t in ts))
    assert not bare.passed and "4-byte length" in bare.message
    assert "return bytes" in check_bytes_tensor(lambda ts: "good").message
