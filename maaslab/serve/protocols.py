"""Protocol lab: the same tensor sent as REST-JSON, REST with the binary tensor extension, and gRPC.

Each rows count gets one seeded batch of digits (sklearn's images on the 0..16 scale), sent by
the official clients three ways: `tritonclient.http` with JSON tensors (REST-JSON), with
Triton's binary tensor extension for the input and the output (REST-binary), and
`tritonclient.grpc` (gRPC, raw tensor contents). The first check is that the three answers are
bit-identical; then, per protocol and rows count:

    request / response bytes   the message as the client builds it and as the server answers:
                               HTTP the body (the JSON header and any binary tensors after it),
                               gRPC the serialized protobuf (`ByteSize()`). Not counted: HTTP
                               request and status lines and headers, HTTP/2 frame headers, gRPC's
                               5-byte message prefix, TCP/IP framing.
    encode                     the client building the request from the numpy array (gRPC: the
                               protobuf built and serialized, as its channel does)
    decode                     the client turning the response bytes into a numpy array
    latency p50 / p90          the whole tritonclient call, numpy in to numpy out, over
                               `repeats` calls after a warm-up

What a learner sees (bench/bench_service.py P15, 2 cores): binary REST and gRPC carry each float32
as its raw 4 bytes, JSON as text. The digits' pixels are small whole numbers ("16.0,"), so the
JSON request is only ~7% larger; the probabilities are full floats of ~20 characters each, so
the JSON response is ~5.6x the binary one. JSON's larger cost is time: tritonclient took ~22 ms
to write 1,024 rows as JSON against 0.1 ms for binary, and a lone call's p50 about doubled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import numpy as np

from maaslab.data import DIGIT_PIXEL_MAX, load_dataset
from maaslab.errors import MaaslabError
from maaslab.runtime import scaled
from maaslab.serve.models import kind_of

PROTOCOLS = ("REST-JSON", "REST-binary", "gRPC")
MAX_ROWS = 1024  # a request of 1,024 digits is 256 KiB of float32; 1,797 digits exist to draw from
MAX_REPEATS = 10_000
INPUT, OUTPUT = "pixels", "probabilities"  # digits-* models' OIP tensor names


@dataclass(frozen=True)
class ProtocolConfig:
    """What the protocol lab sends: which model, how many rows per request, how many calls."""

    model: str = "digits-cnn"  # a served digits-* model (pixels FP32 [N, 64] -> probabilities)
    rows: tuple[int, ...] = (1, 4, 32, 256, 1024)  # rows per request, each size measured apart
    repeats: int | None = None  # timed calls per protocol and size; None: 20 (5 with MAASLAB_FAST)
    # Untimed calls of each protocol per size first: connections, the model's first batches of
    # a shape (a freshly started server answered its first tens of calls several times slower).
    warmup: int = 5
    seed: int = 0  # which digits are drawn; the same seed sends the same arrays
    api_key: str | None = None  # sent as `Authorization: Bearer KEY` (gRPC: as metadata)
    timeout_s: float = (
        60.0  # per call; a 1,024-row JSON call took up to ~1 s on a loaded 2-core box
    )

    def __post_init__(self) -> None:
        rows = (self.rows,) if isinstance(self.rows, int) else tuple(self.rows)
        object.__setattr__(self, "rows", rows)
        if self.repeats is None:
            object.__setattr__(self, "repeats", scaled(20, 5))
        if not rows:
            raise MaaslabError("rows is empty: give at least one rows count, e.g. rows=(1, 32)")
        bad = [r for r in rows if not isinstance(r, int) or not 1 <= r <= MAX_ROWS]
        if bad:
            raise MaaslabError(
                f"rows must be whole numbers from 1 to {MAX_ROWS:,} (rows per request), got "
                f"{bad}: e.g. rows=(1, 32, 1024)"
            )
        if len(set(rows)) != len(rows):
            raise MaaslabError(f"a rows count is named twice in rows={rows}: name each once")
        if not 1 <= self.repeats <= MAX_REPEATS:
            raise MaaslabError(
                f"repeats must be 1..{MAX_REPEATS:,} timed calls, got {self.repeats}: "
                "use 2 for a smoke test, 20 or more for stable percentiles"
            )
        if not 0 <= self.warmup <= 100:
            raise MaaslabError(f"warmup must be 0..100 calls, got {self.warmup}")
        if not 0 < self.timeout_s <= 3600:
            raise MaaslabError(f"timeout_s must be in (0, 3600] seconds, got {self.timeout_s}")
        if kind_of(self.model) != "digits":
            raise MaaslabError(
                f"the protocol lab sends digit tensors; {self.model!r} is not a digits-* model: "
                "use model='digits-cnn' (or another digits-* model the server serves)"
            )


@dataclass(frozen=True)
class ProtocolRecord:
    """One protocol at one rows count: bytes on the wire and where the time went."""

    protocol: str  # one of PROTOCOLS
    rows: int
    request_bytes: int  # HTTP body / serialized protobuf, without framing (see the module doc)
    response_bytes: int
    encode_ms: float  # median of the client building the request from numpy
    decode_ms: float  # median of the client turning the response into numpy
    p50_ms: float  # latency of the whole call, numpy to numpy
    p90_ms: float


@dataclass(frozen=True)
class ProtocolReport:
    """Every protocol at every rows count, and whether their answers were bit-identical."""

    model: str
    rows: tuple[int, ...]
    records: tuple[ProtocolRecord, ...]  # one per (rows, protocol), rows ascending
    identical: dict[int, bool]  # rows -> the three protocols' outputs equal bit for bit
    repeats: int

    def record(self, protocol: str, rows: int) -> ProtocolRecord:
        """The record of `protocol` at `rows` rows per request."""
        for r in self.records:
            if r.protocol == protocol and r.rows == rows:
                return r
        raise MaaslabError(f"no record for {protocol!r} at {rows} rows: measured {self.rows}")

    def table(self) -> list[dict[str, object]]:
        """One dict per (rows, protocol), for a page or notebook to show as a table."""
        return [
            {
                "rows": r.rows,
                "protocol": r.protocol,
                "request bytes": r.request_bytes,
                "response bytes": r.response_bytes,
                "bytes per row": round((r.request_bytes + r.response_bytes) / r.rows),
                "encode ms": round(r.encode_ms, 3),
                "decode ms": round(r.decode_ms, 3),
                "p50 ms": round(r.p50_ms, 2),
                "p90 ms": round(r.p90_ms, 2),
                "identical": self.identical[r.rows],
            }
            for r in self.records
        ]

    def summary(self) -> str:
        """One line at the largest rows count: bytes moved and p50 latency of each protocol."""
        n = max(self.rows)
        grpc, binary, js = (self.record(p, n) for p in ("gRPC", "REST-binary", "REST-JSON"))
        moved = {r.protocol: r.request_bytes + r.response_bytes for r in (grpc, binary, js)}
        same = "bit-identical" if all(self.identical.values()) else "NOT identical"
        return (
            f"at {n:,} rows gRPC moves {_mb(moved['gRPC'])} (request + response), REST-binary "
            f"{_mb(moved['REST-binary'])}, REST-JSON {_mb(moved['REST-JSON'])} "
            f"({moved['REST-JSON'] / moved['gRPC']:.1f}x gRPC); p50 gRPC {grpc.p50_ms:.1f} ms, "
            f"REST-binary {binary.p50_ms:.1f} ms, REST-JSON {js.p50_ms:.1f} ms; outputs {same}"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.3g} MB"


def digit_rows(rows: int, seed: int = 0) -> np.ndarray:
    """`rows` distinct sklearn digits drawn with `seed`, float32 [rows, 64] on the 0..16 scale."""
    if not 1 <= rows <= MAX_ROWS:
        raise MaaslabError(f"rows must be 1..{MAX_ROWS:,}, got {rows}")
    data = load_dataset("digits", val_fraction=0.0)  # rows to send, not to fit: no validation
    # load_dataset scales pixels to 0..1 (x / 16, exact in binary); the server takes 0..16.
    pixels = np.concatenate([data.X_train, data.X_test]) * DIGIT_PIXEL_MAX
    pick = np.random.default_rng(seed).choice(len(pixels), size=rows, replace=False)
    return pixels[pick].astype(np.float32)


class ProtocolClients:
    """The three official clients against one server, and one call of each, timed in parts.

    Not thread-safe (tritonclient.http's client is not, and its gevent pool belongs to the
    thread that made it): a load generator makes one ProtocolClients in each of its threads.
    """

    def __init__(self, http_url: str, grpc_address: str, config: ProtocolConfig) -> None:
        import tritonclient.grpc as tgrpc
        import tritonclient.http as thttp

        self.tgrpc, self.thttp, self.config = tgrpc, thttp, config
        self.http_url = http_url.rstrip("/")
        host = self.http_url.split("://", 1)[-1]
        timeout = config.timeout_s
        self.http = thttp.InferenceServerClient(
            host, connection_timeout=timeout, network_timeout=timeout
        )
        self.grpc = tgrpc.InferenceServerClient(grpc_address)
        key = config.api_key
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.grpc_headers = {"authorization": f"Bearer {key}"} if key else None

    def close(self) -> None:
        """Close both clients' connections."""
        self.http.close()
        self.grpc.close()

    def _http_inputs(self, x: np.ndarray, binary: bool) -> tuple[list, list]:
        inp = self.thttp.InferInput(INPUT, list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        return [inp], [self.thttp.InferRequestedOutput(OUTPUT, binary_data=binary)]

    def _grpc_inputs(self, x: np.ndarray) -> tuple[list, list]:
        inp = self.tgrpc.InferInput(INPUT, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return [inp], [self.tgrpc.InferRequestedOutput(OUTPUT)]

    def _grpc_infer(self, inputs: list, outputs: list):
        c = self.config
        return self.grpc.infer(
            c.model, inputs, outputs=outputs, headers=self.grpc_headers, client_timeout=c.timeout_s
        )

    def call(self, protocol: str, x: np.ndarray) -> np.ndarray:
        """One whole tritonclient call, numpy in, numpy out (what the latency times)."""
        from tritonclient.utils import InferenceServerException

        try:
            return self._call(protocol, x)
        except (InferenceServerException, OSError) as err:
            raise MaaslabError(
                f"{protocol} call to {self.config.model} failed: {err}. Check the addresses "
                "(http_url like http://127.0.0.1:8000, grpc_address like 127.0.0.1:8001, the "
                "server started with --grpc-port), that the server serves this model, and "
                "api_key when the server needs one"
            ) from err

    def _call(self, protocol: str, x: np.ndarray) -> np.ndarray:
        if protocol == "gRPC":
            result = self._grpc_infer(*self._grpc_inputs(x))
        else:
            inputs, outputs = self._http_inputs(x, binary=protocol == "REST-binary")
            # A copy: infer() writes Inference-Header-Content-Length into the dict it is given,
            # and a JSON call that inherits a binary call's header is refused as bad JSON.
            headers = dict(self.headers)
            result = self.http.infer(self.config.model, inputs, outputs=outputs, headers=headers)
        return result.as_numpy(OUTPUT)

    def wire(self, protocol: str, x: np.ndarray) -> tuple[int, int, float, float, np.ndarray]:
        """(request bytes, response bytes, encode s, decode s, output) of one call."""
        if protocol == "gRPC":
            from tritonclient.grpc import service_pb2 as pb
            from tritonclient.grpc._utils import _get_inference_request  # what infer() sends

            t0 = time.perf_counter()
            inputs, outputs = self._grpc_inputs(x)
            request = _get_inference_request(
                self.config.model, inputs, "", "", outputs, 0, False, False, 0, None, None
            )
            request.SerializeToString()  # the channel serializes the message before sending
            encode = time.perf_counter() - t0
            # Re-serialized from the parsed answer: the same message, so the same size.
            body = self._grpc_infer(inputs, outputs).get_response().SerializeToString()
            t0 = time.perf_counter()
            out = self.tgrpc.InferResult(pb.ModelInferResponse.FromString(body)).as_numpy(OUTPUT)
            decode = time.perf_counter() - t0
            return request.ByteSize(), len(body), encode, decode, out
        t0 = time.perf_counter()
        inputs, outputs = self._http_inputs(x, binary=protocol == "REST-binary")
        body, header_length = self.thttp.InferenceServerClient.generate_request_body(
            inputs, outputs=outputs
        )
        encode = time.perf_counter() - t0
        headers = dict(self.headers)
        if header_length is not None:  # the binary extension: where the JSON header ends
            headers["Inference-Header-Content-Length"] = str(header_length)
        # A fresh connection per call: only the bodies and the decode are measured here.
        response = httpx.post(
            f"{self.http_url}/v2/models/{self.config.model}/infer",
            content=body,
            headers=headers,
            timeout=self.config.timeout_s,
        )
        if response.status_code != 200:
            raise MaaslabError(
                f"{protocol} request to {self.http_url} failed with {response.status_code}: "
                f"{response.text[:300]}"
            )
        answer_length = response.headers.get("Inference-Header-Content-Length")
        t0 = time.perf_counter()
        result = self.thttp.InferenceServerClient.parse_response_body(
            response.content, header_length=int(answer_length) if answer_length else None
        )
        out = result.as_numpy(OUTPUT)
        decode = time.perf_counter() - t0
        return len(body), len(response.content), encode, decode, out


def compare_protocols(
    http_url: str, grpc_address: str, config: ProtocolConfig | None = None
) -> ProtocolReport:
    """Send the same digits by REST-JSON, REST-binary and gRPC; bytes, times, identity check.

    Parameters
    ----------
    http_url : the server's HTTP address, e.g. "http://127.0.0.1:8000" (ServerProcess.url).
    grpc_address : its gRPC address, e.g. "127.0.0.1:8001" (ServerProcess.grpc_port).
    config : model, rows counts, repeats, seed, API key (default ProtocolConfig()).

    Raises MaaslabError when the three protocols' outputs for the same input differ by a bit.
    """
    config = config or ProtocolConfig()
    clients = ProtocolClients(http_url, grpc_address, config)
    records: list[ProtocolRecord] = []
    identical: dict[int, bool] = {}
    try:
        for n in sorted(config.rows):
            x = digit_rows(n, config.seed)
            outputs = {p: clients.call(p, x) for p in PROTOCOLS}  # the first check, and a warm-up
            first = outputs[PROTOCOLS[0]]
            identical[n] = all(
                o.dtype == first.dtype and np.array_equal(o, first) for o in outputs.values()
            )
            if not identical[n]:
                differ = {p: f"{o.dtype}{list(o.shape)}" for p, o in outputs.items()}
                raise MaaslabError(
                    f"the protocols answered {n} rows differently ({differ}, largest gap "
                    f"{_gap(outputs):.3g}): the server must return the same float32 bytes "
                    "whatever the encoding; check how it writes JSON floats and binary tensors"
                )
            for _ in range(config.warmup):
                for protocol in PROTOCOLS:
                    clients.call(protocol, x)
            wires = {
                p: [clients.wire(p, x) for _ in range(min(config.repeats, 5))] for p in PROTOCOLS
            }
            for protocol, calls in wires.items():
                if not all(np.array_equal(w[4], first) for w in calls):
                    raise MaaslabError(f"{protocol} decoded {n} rows differently on a second call")
            # Interleaved (JSON, binary, gRPC, JSON, ...): a burst of other work on the machine
            # slows each protocol alike instead of whichever ran at the time.
            lat = {p: np.empty(config.repeats) for p in PROTOCOLS}
            for i in range(config.repeats):
                for protocol in PROTOCOLS:
                    t0 = time.perf_counter()
                    clients.call(protocol, x)
                    lat[protocol][i] = (time.perf_counter() - t0) * 1e3
            for protocol in PROTOCOLS:
                calls = wires[protocol]
                records.append(
                    ProtocolRecord(
                        protocol=protocol,
                        rows=n,
                        request_bytes=calls[0][0],
                        response_bytes=calls[0][1],
                        encode_ms=float(np.median([w[2] for w in calls])) * 1e3,
                        decode_ms=float(np.median([w[3] for w in calls])) * 1e3,
                        p50_ms=float(np.percentile(lat[protocol], 50)),
                        p90_ms=float(np.percentile(lat[protocol], 90)),
                    )
                )
    finally:
        clients.close()
    return ProtocolReport(
        model=config.model,
        rows=tuple(sorted(config.rows)),
        records=tuple(records),
        identical=identical,
        repeats=config.repeats,
    )


def _gap(outputs: dict[str, np.ndarray]) -> float:
    arrays = [o.astype(np.float64) for o in outputs.values()]
    if any(a.shape != arrays[0].shape for a in arrays):
        return float("inf")
    return max(float(np.abs(a - arrays[0]).max(initial=0.0)) for a in arrays)
