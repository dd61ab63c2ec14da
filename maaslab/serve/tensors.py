"""Open Inference Protocol v2 tensors: JSON and Triton's binary tensor data extension.

A request body is a JSON header, optionally followed by raw tensors when the header length is
given in `Inference-Header-Content-Length`: each input with `parameters.binary_data_size` takes
that many bytes, in input order. Numbers are little-endian; a BYTES element is a 4-byte
little-endian length and then the bytes. Responses use the same layout when the client asks.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from maaslab.errors import MaaslabError

HEADER = "Inference-Header-Content-Length"
NUMPY_DTYPES = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


@dataclass(frozen=True)
class Tensor:
    """One decoded input: numbers as a numpy array, BYTES as a list of bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any


def _shape(raw: object, name: str) -> tuple[int, ...]:
    ok = isinstance(raw, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in raw)
    if not ok or any(d < 0 for d in raw):  # type: ignore[union-attr]
        raise MaaslabError(f"input {name!r}: shape must be a list of non-negative whole numbers")
    return tuple(raw)  # type: ignore[arg-type]


def join_bytes(items: Sequence[bytes]) -> bytes:
    """BYTES elements in Triton's binary form: each a 4-byte little-endian length, then itself."""
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def _split_bytes(raw: bytes, name: str) -> list[bytes]:
    # BYTES in binary: each element is a 4-byte little-endian length, then that many bytes.
    items, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise MaaslabError(f"input {name!r}: a BYTES element is cut off in the binary data")
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise MaaslabError(f"input {name!r}: a BYTES element says {n} bytes, fewer remain")
        items.append(raw[pos : pos + n])
        pos += n
    return items


JSON_NUMBERS = frozenset({int, float})  # the types json gives a number (a bool is neither)


def _flatten(data: object, name: str) -> list[Any]:
    # JSON data may be flat (the spec) or nested row by row (what many clients send).
    if not isinstance(data, list):
        raise MaaslabError(f"input {name!r}: 'data' must be a list")
    if list not in set(map(type, data)):  # flat already: one C-level pass, no copy
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            out.append(x)
        else:
            stack.pop()
    return out


def decode_inputs(request: dict[str, Any], binary: bytes) -> dict[str, Tensor]:
    """The request's inputs by name, with shapes checked against the data they carry."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise MaaslabError("the request needs an 'inputs' list with at least one tensor")
    out, offset = {}, 0
    for spec in inputs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise MaaslabError("every input must be an object with a 'name'")
        name, dtype = spec["name"], spec.get("datatype")
        # a JSON object or list is unhashable: test the type before the dict lookup
        if not isinstance(dtype, str) or (dtype != "BYTES" and dtype not in NUMPY_DTYPES):
            raise MaaslabError(f"input {name!r}: unknown datatype {dtype!r}")
        shape = _shape(spec.get("shape"), name)
        count = math.prod(shape)
        params = spec.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise MaaslabError(
                    f"input {name!r}: binary_data_size {size!r} does not fit the "
                    f"{len(binary) - offset} bytes left in the body"
                )
            raw = binary[offset : offset + size]
            offset += size
            if dtype == "BYTES":
                data: Any = _split_bytes(raw, name)
            else:
                width = np.dtype(NUMPY_DTYPES[dtype]).itemsize
                if size != count * width:
                    raise MaaslabError(
                        f"input {name!r}: shape {list(shape)} of {dtype} needs "
                        f"{count * width} bytes, got {size}"
                    )
                data = np.frombuffer(raw, dtype=NUMPY_DTYPES[dtype])
        elif "data" in spec:
            flat = _flatten(spec["data"], name)
            if dtype == "BYTES":
                if not all(isinstance(x, str) for x in flat):
                    raise MaaslabError(f"input {name!r}: BYTES data must be strings")
                data = [x.encode() for x in flat]
            else:
                # JSON numbers are ints and floats (a bool is neither here); one C-level pass
                # answers for them, the item-by-item test for anything else
                numbers = set(map(type, flat)) <= JSON_NUMBERS or all(
                    isinstance(x, int | float) and not isinstance(x, bool) for x in flat
                )
                if not numbers:
                    raise MaaslabError(f"input {name!r}: {dtype} data must be numbers")
                data = np.asarray(flat, dtype=np.float64)
        else:
            raise MaaslabError(f"input {name!r} has neither 'data' nor binary_data_size")
        if len(data) != count:
            raise MaaslabError(
                f"input {name!r}: shape {list(shape)} holds {count} elements, "
                f"but {len(data)} were sent"
            )
        if name in out:
            raise MaaslabError(f"input {name!r} is given twice")
        out[name] = Tensor(name, dtype, shape, data)
    if offset != len(binary):
        raise MaaslabError(f"{len(binary) - offset} bytes of binary data belong to no input")
    return out


def requested_outputs(request: dict[str, Any], available: list[str]) -> dict[str, bool]:
    """Output name -> send as binary, for the outputs the client asked for (all by default)."""
    params = request.get("parameters") or {}
    default = bool(params.get("binary_data_output", False)) if isinstance(params, dict) else False
    asked = request.get("outputs")
    if asked is None:
        return dict.fromkeys(available, default)
    if not isinstance(asked, list):
        raise MaaslabError("'outputs' must be a list of objects with a 'name'")
    out = {}
    for spec in asked:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise MaaslabError("every requested output must be an object with a 'name'")
        if spec["name"] not in available:
            raise MaaslabError(
                f"unknown output {spec['name']!r}: this model gives {', '.join(available)}"
            )
        p = spec.get("parameters") or {}
        if isinstance(p, dict) and p.get("classification"):
            raise MaaslabError(
                "the classification extension is not supported: ask for "
                "'probabilities' and take the argmax"
            )
        out[spec["name"]] = bool(p.get("binary_data", default)) if isinstance(p, dict) else default
    return out


def raw_output(datatype: str, value: Any) -> tuple[list[int], bytes]:
    """(shape, bytes) of an output in the binary layout: Triton's binary data over HTTP and
    gRPC's raw_output_contents, so both protocols send the very same bytes."""
    if datatype == "BYTES":
        items = [v.encode() if isinstance(v, str) else bytes(v) for v in value]
        return [len(items)], join_bytes(items)
    arr = np.ascontiguousarray(value, dtype=NUMPY_DTYPES[datatype])
    return list(arr.shape), arr.tobytes()


def encode_response(
    head: dict[str, Any], outputs: list[tuple[str, str, Any]], binary: dict[str, bool]
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None) for outputs given as (name, datatype, value)."""
    tensors, blobs = [], []
    for name, dtype, value in outputs:
        if name not in binary:
            continue
        tensor: dict[str, Any] = {"name": name, "datatype": dtype}
        if binary[name]:
            tensor["shape"], blob = raw_output(dtype, value)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif dtype == "BYTES":
            items = [v if isinstance(v, str) else bytes(v).decode() for v in value]
            tensor["shape"], tensor["data"] = [len(items)], items
        else:
            arr = np.ascontiguousarray(value, dtype=NUMPY_DTYPES[dtype])
            tensor["shape"], tensor["data"] = list(arr.shape), arr.ravel().tolist()
        tensors.append(tensor)
    header = json.dumps({**head, "outputs": tensors}).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
