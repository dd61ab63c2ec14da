"""Lesson 14's auto-checked exercises: Little's law, an OIP v2 request body, a p99 latency, and
Triton's binary encoding of a BYTES tensor.

Each check runs the learner's function on fixed probes and compares it with the server's own
code (the request is decoded by the parser the server uses) or a reference the tests compare
with tritonclient and numpy. When an answer matches a known mistake the message names it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import numpy as np

from maaslab.errors import MaaslabError
from maaslab.exercises.grading import (
    CheckResult,
    call_answer,
    exercise,
    failed,
    first_mistake,
    passed,
)
from maaslab.serve.tensors import join_bytes

# --- exercise 1: Little's law ---------------------------------------------------------------------

LITTLE_PROBES = ((120.0, 250.0), (40.0, 12.5), (7.0, 1000.0))  # (answers/s, mean latency ms)


def requests_in_system(throughput_per_s: float, latency_ms: float) -> float:
    """Little's law: the mean number of requests in the system, L = lambda x W."""
    return throughput_per_s * latency_ms / 1000.0


@exercise
def check_littles_law(fn: Callable) -> CheckResult:
    """Check `fn(throughput_per_s, latency_ms) -> requests in the system on average`."""
    name = "Little's law: requests in the system"
    for lam, w_ms in LITTLE_PROBES:
        got, bad = call_answer(name, fn, lam, w_ms)
        if bad is not None:
            return bad
        try:
            got = float(got)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return failed(name, f"expected a number, got {type(got).__name__}")
        want = requests_in_system(lam, w_ms)
        if np.isclose(got, want, rtol=1e-6):
            continue
        where = f"for {lam:g} answers/s and {w_ms:g} ms you gave {got:g}, expected {want:g}"
        if np.isclose(got, lam * w_ms, rtol=1e-6):
            return failed(
                name,
                f"{where}: the latency is in milliseconds; turn it into "
                "seconds before multiplying (answers per second x seconds)",
            )
        if np.isclose(got, lam / (w_ms / 1000), rtol=1e-6) or np.isclose(got, lam / w_ms):
            return failed(name, f"{where}: L = lambda x W multiplies throughput by latency")
        return failed(name, f"{where}. Hint: L = throughput (per second) x latency (seconds).")
    return passed(
        name,
        "L = lambda x W: at 120 answers/s and 250 ms, 30 requests are inside "
        "the server on average, queued or running",
    )


# --- exercise 2: an OIP v2 inference request for reviews ------------------------------------------

REQUEST_PROBES = (
    ["A gorgeous, moving film.", "Two hours I will never get back."],
    ["Très bien — j'ai adoré ✨", "meh"],
)


@exercise
def check_infer_request(fn: Callable) -> CheckResult:
    """Check `fn(texts) -> dict`: a JSON OIP v2 request body sentiment-minilm accepts."""
    from maaslab.serve.tensors import decode_inputs

    name = "an OIP v2 request body for sentiment-minilm"
    for texts in REQUEST_PROBES:
        got, bad = call_answer(name, fn, list(texts))
        if bad is not None:
            return bad
        if not isinstance(got, dict):
            return failed(name, f"return a dict (the JSON body), not {type(got).__name__}")
        try:
            json.dumps(got)
        except (TypeError, ValueError) as err:
            return failed(name, f"the body is not JSON-serialisable: {err}")
        try:
            inputs = decode_inputs(got, b"")
        except MaaslabError as err:
            return failed(name, f"the server would answer 400: {err}")
        if set(inputs) != {"text"}:
            return failed(
                name,
                f"sentiment-minilm takes one input named 'text', got "
                f"{', '.join(map(repr, inputs))}",
            )
        t = inputs["text"]
        if t.datatype != "BYTES":
            return failed(name, f"text travels as datatype 'BYTES', not {t.datatype!r}")
        if list(t.shape) not in ([len(texts)], [len(texts), 1]):
            return failed(
                name, f"shape must be [{len(texts)}] (one element per review), got {list(t.shape)}"
            )
        if [b.decode() for b in t.data] != list(texts):
            return failed(name, "'data' must hold the reviews themselves, in order")
    return passed(
        name, "the body decodes with the server's own parser: one BYTES tensor 'text' of shape [N]"
    )


# --- exercise 3: p99 latency ----------------------------------------------------------------------


def _latency_probes() -> list[np.ndarray]:
    # Skewed like real latencies (a long right tail), in an order that is not sorted.
    rng = np.random.default_rng(14)
    return [rng.gamma(2.0, 20.0, n) + 5.0 for n in (200, 1000, 37)]


@exercise
def check_p99(fn: Callable) -> CheckResult:
    """Check `fn(latencies_ms) -> the 99th percentile`: linear interpolation or nearest rank."""
    name = "p99 latency"
    for lat in _latency_probes():
        got, bad = call_answer(name, fn, [float(x) for x in lat])
        if bad is not None:
            return bad
        try:
            got = float(got)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return failed(name, f"expected a number, got {type(got).__name__}")
        ordered = np.sort(lat)
        linear = float(np.percentile(lat, 99))
        nearest = float(ordered[int(np.ceil(0.99 * len(lat))) - 1])
        if np.isclose(got, linear, rtol=1e-6) or np.isclose(got, nearest, rtol=1e-6):
            continue
        where = f"for {len(lat)} latencies you gave {got:.3f} ms, expected {linear:.3f} ms"
        mistakes = [
            (float(np.mean(lat)), "this is the mean: a percentile comes from the sorted values"),
            (float(np.median(lat)), "this is the median (p50)"),
            (float(ordered[-1]), "this is the maximum: p99 leaves out the slowest 1 %"),
            (float(lat[int(np.ceil(0.99 * len(lat))) - 1]), "sort the latencies first"),
            (float(np.percentile(lat, 0.99)), "99 is a percentage: q=99, not 0.99"),
        ]
        why = first_mistake(got, mistakes, rtol=1e-6, atol=1e-8)
        if why:
            return failed(name, f"{where}: {why}")
        return failed(
            name,
            f"{where}. Hint: np.percentile(latencies, 99), or sort and take "
            "the value at rank ceil(0.99 n)",
        )
    return passed(
        name, "p99: 99 % of requests were at least this fast; one in a hundred was slower"
    )


# --- exercise 4: a BYTES tensor in Triton's binary format -----------------------------------------

BYTES_PROBES = (["good", "bad"], ["très bien", "", "✨ five stars ✨"])


def encode_bytes_tensor(texts: list[str]) -> bytes:
    """Triton's binary BYTES layout: each element as a 4-byte little-endian length, then UTF-8."""
    return join_bytes([t.encode("utf-8") for t in texts])


@exercise
def check_bytes_tensor(fn: Callable) -> CheckResult:
    """Check `fn(texts) -> bytes`: the binary_data form of a BYTES tensor of `texts`."""
    name = "a BYTES tensor in binary"
    for texts in BYTES_PROBES:
        got, bad = call_answer(name, fn, list(texts))
        if bad is not None:
            return bad
        if not isinstance(got, bytes | bytearray):
            return failed(name, f"return bytes, not {type(got).__name__}")
        want = encode_bytes_tensor(texts)
        if bytes(got) == want:
            continue
        where = f"for {texts!r} you gave {bytes(got)[:40]!r}, expected {want[:40]!r}"
        encoded = [t.encode() for t in texts]
        big = b"".join(struct.pack(">I", len(b)) + b for b in encoded)
        chars = b"".join(struct.pack("<I", len(t)) + t.encode() for t in texts)
        if bytes(got) == big:
            return failed(name, f"{where}: the length is little-endian ('<I'), not big-endian")
        if bytes(got) == chars:
            return failed(
                name,
                f"{where}: the length counts UTF-8 bytes, not characters "
                "('è' and '✨' take more than one byte)",
            )
        if bytes(got) == b"".join(encoded):
            return failed(
                name,
                f"{where}: each element needs its 4-byte length before it, "
                "or the reader cannot tell where one ends",
            )
        return failed(
            name, f"{where}. Hint: struct.pack('<I', len(b)) + b for each b = text.encode('utf-8')"
        )
    return passed(name, "length-prefixed UTF-8: what tritonclient sends for a BYTES input")
