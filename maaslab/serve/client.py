"""A small HTTP client for the MaaS Lab server: the JSON bodies each model takes, one call that
records what went over the wire, and readers that turn answers back into numbers.

The Serve page and lesson 14 use it to show a request exactly as it is sent: a plain JSON body
(the Open Inference Protocol v2 for tensors, OpenAI's shape for text), the status code, the
latency and the JSON that came back. A server that is down or refuses gets a message, not an
exception.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from maaslab.errors import MaaslabError
from maaslab.explain.core import Attribution

# Which endpoint and body each shipped model speaks, by name prefix.
KINDS = {
    "digits": "digits",
    "sentiment": "sentiment",
    "mini-gpt": "generator",
    "minilm": "embedder",
}
EXPLAINABLE = ("digits", "sentiment")  # kinds the explain extension covers
TIMEOUT_S = 60.0  # a first request may wait for a model's warm-up; an explanation takes seconds
SHOWN_CHARS = 6_000  # a body longer than this is cut in what a page shows (a digit is ~400)


@dataclass(frozen=True)
class Call:
    """One request and its answer, as they went over the wire."""

    method: str  # "GET" or "POST"
    url: str
    request: dict[str, Any] | None  # the JSON body sent (None for a GET)
    status: int | None  # None when no answer came back (server down, timeout)
    response: Any  # the parsed JSON answer, or the raw text when it was not JSON
    seconds: float  # from sending to the whole answer read
    error: str | None = None  # what went wrong, in words, when the call did not succeed

    @property
    def ok(self) -> bool:
        """True for a 2xx answer."""
        return self.status is not None and 200 <= self.status < 300


def kind_of(model: str) -> str:
    """The kind of a served model by name: digits, sentiment, generator or embedder."""
    for prefix, kind in KINDS.items():
        if model.startswith(prefix):
            return kind
    raise MaaslabError(f"unknown model {model!r}: expected one of the shipped names")


def digits_body(pixels: Any) -> dict[str, Any]:
    """An OIP v2 infer body for one digit: `pixels` FP32 [1, 64] on sklearn's 0..16 scale."""
    x = np.asarray(pixels, dtype=np.float32).reshape(-1)
    if x.size != 64:
        raise MaaslabError(f"a digit has 64 pixels, got {x.size}")
    data = [round(float(v), 4) for v in x]
    return {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": data}]}


def text_body(text: str) -> dict[str, Any]:
    """An OIP v2 infer body for one text: `text` BYTES [1] (JSON carries the string as is)."""
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def explain_body(infer: dict[str, Any], method: str, seed: int = 0) -> dict[str, Any]:
    """The explain extension's body: an infer body plus parameters.method ("shap" or "lime")."""
    return {**infer, "parameters": {"method": method, "seed": int(seed)}}


def completion_body(
    model: str, prompt: str, max_tokens: int, temperature: float, seed: int = 0
) -> dict[str, Any]:
    """An OpenAI /v1/completions body."""
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": int(max_tokens),
        "temperature": float(temperature),
        "seed": int(seed),
    }


def embedding_body(model: str, text: str) -> dict[str, Any]:
    """An OpenAI /v1/embeddings body for one sentence."""
    return {"model": model, "input": text}


def error_text(status: int, answer: Any) -> str:
    """The server's own words for a refusal: {"error": "..."} (OIP) or {"error": {"message"}}."""
    detail = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(detail, dict):
        detail = detail.get("message")
    if not detail:
        detail = str(answer)[:300] or "no details"
    return f"HTTP {status}: {detail}"


def call(
    url: str, path: str, body: dict[str, Any] | None = None, timeout: float = TIMEOUT_S
) -> Call:
    """POST `body` as JSON to url+path (GET when body is None) and record the exchange.

    Parameters
    ----------
    url : the server, e.g. "http://127.0.0.1:8000".
    path : the endpoint, e.g. "/v2/models/digits-cnn/infer".
    body : the JSON request; None sends a GET.
    timeout : seconds to wait for the whole answer.
    """
    method, target = ("GET" if body is None else "POST"), url.rstrip("/") + path
    started = time.perf_counter()
    try:
        r = httpx.request(method, target, json=body, timeout=timeout)
    except httpx.TimeoutException:
        why = f"no answer within {timeout:g} s: the server is busy or stuck"
        return Call(method, target, body, None, None, time.perf_counter() - started, why)
    except httpx.HTTPError as err:
        why = f"cannot reach {url}: {err or type(err).__name__}; is the server running?"
        return Call(method, target, body, None, None, time.perf_counter() - started, why)
    seconds = time.perf_counter() - started
    try:
        answer: Any = r.json()
    except ValueError:
        answer = r.text
    error = None if r.is_success else error_text(r.status_code, answer)
    return Call(method, target, body, r.status_code, answer, seconds, error)


def shown(body: Any) -> str:
    """A body as indented JSON for a page, cut after SHOWN_CHARS characters."""
    text = json.dumps(body, indent=2) if not isinstance(body, str) else body
    if len(text) > SHOWN_CHARS:
        return text[:SHOWN_CHARS] + f"\n… ({len(text) - SHOWN_CHARS:,} more characters)"
    return text


def output(answer: dict[str, Any], name: str) -> np.ndarray:
    """One OIP output tensor of a JSON answer as an array of its shape."""
    for tensor in answer.get("outputs", []):
        if tensor.get("name") == name:
            data = tensor.get("data")
            if tensor.get("datatype") == "BYTES":
                return np.array(data, dtype=object).reshape(tensor["shape"])
            return np.asarray(data, dtype=np.float64).reshape(tensor["shape"])
    raise MaaslabError(f"the answer has no output named {name!r}")


def completion_text(answer: dict[str, Any]) -> str:
    """The first choice's text of an OpenAI completion answer."""
    return str(answer["choices"][0]["text"])


def embedding_of(answer: dict[str, Any]) -> np.ndarray:
    """The first embedding of an OpenAI embeddings answer."""
    return np.asarray(answer["data"][0]["embedding"], dtype=np.float64)


def attribution_of(
    answer: dict[str, Any], kind: str, row: int = 0, seconds: float = 0.0
) -> Attribution:
    """Row `row` of an explain answer as an Attribution, so maaslab.plots can draw it.

    `seconds` is the round trip the caller measured (the answer does not carry the time).
    """
    count = int(output(answer, "feature_count")[row])
    params = answer.get("parameters", {})
    return Attribution(
        values=output(answer, "values")[row, :count],
        base_value=float(output(answer, "base_value")[row]),
        prediction=float(output(answer, "prediction")[row]),
        target=int(output(answer, "target")[row]),
        target_name=str(output(answer, "target_name")[row]),
        method=str(params.get("method", "")),
        features=tuple(str(f) for f in output(answer, "features")[row, :count]),
        kind="image" if kind == "digits" else "text",
        evaluations=int(params.get("evaluations", 0)),
        seconds=seconds,
        seed=int(params.get("seed", 0)),
        shape=(8, 8) if kind == "digits" else (),
    )
