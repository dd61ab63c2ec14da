"""A small HTTP client for the MaaS Lab server: the request each model kind takes, one call that
records what went over the wire, and readers that turn answers back into numbers.

The Serve page, the load generator and lesson 14 use it to show a request exactly as it is
sent: a plain JSON body (the Open Inference Protocol v2 for tensors, OpenAI's shape for text),
the status code, the latency and the JSON that came back. A server that is down or refuses gets
a message, not an exception.

    kind            request (request_for)                      answer (answer_of)
    digits          POST /v2/models/{name}/infer  pixels FP32  probabilities
    sentiment       POST /v2/models/{name}/infer  text BYTES   probabilities, label
    generator       POST /v1/completions          prompt       text, usage
                    POST /v1/chat/completions     messages     text, usage   (chat=True)
    embedder        POST /v1/embeddings           input        embedding

digits and sentiment also answer POST /v2/models/{name}/explain (explain_request).
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
from maaslab.serve.models import kind_of

__all__ = ["kind_of"]  # re-exported: the one function that decides a model's kind (serve.models)

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

    @property
    def status_text(self) -> str:
        """The status code, or "no answer" when none came back."""
        return str(self.status) if self.status is not None else "no answer"

    @property
    def latency_text(self) -> str:
        """The round trip in milliseconds, e.g. "12.3 ms"."""
        return f"{self.seconds * 1000:.1f} ms"

    def line(self) -> str:
        """The exchange in one markdown line: method, URL, status and latency."""
        return f"`{self.method} {self.url}` → **{self.status_text}** in {self.latency_text}"


def digits_body(pixels: Any) -> dict[str, Any]:
    """An OIP v2 infer body for digits: `pixels` FP32 [N, 64] on sklearn's 0..16 scale.

    One digit (64 values) is sent as [1, 64]; an (N, 64) array as N rows.
    """
    x = np.asarray(pixels, dtype=np.float32)
    rows = 1 if x.ndim <= 1 else x.shape[0]
    if x.size != 64 * rows or x.size == 0:
        raise MaaslabError(f"a digit has 64 pixels, got {x.size}")
    data = [round(float(v), 4) for v in x.reshape(-1)]
    return {"inputs": [{"name": "pixels", "shape": [rows, 64], "datatype": "FP32", "data": data}]}


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


def chat_body(
    model: str, message: str, max_tokens: int, temperature: float, seed: int = 0
) -> dict[str, Any]:
    """An OpenAI /v1/chat/completions body: one user message, the model's answer to come."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": message}],
        "max_tokens": int(max_tokens),
        "temperature": float(temperature),
        "seed": int(seed),
    }


def embedding_body(model: str, text: str) -> dict[str, Any]:
    """An OpenAI /v1/embeddings body for one sentence."""
    return {"model": model, "input": text}


def infer_path(model: str) -> str:
    """The OIP v2 infer endpoint of a served model."""
    return f"/v2/models/{model}/infer"


@dataclass(frozen=True)
class Request:
    """One request to a served model: its kind, the endpoint and the JSON body."""

    model: str
    kind: str  # kind_of(model)
    path: str  # e.g. "/v2/models/digits-cnn/infer"
    body: dict[str, Any]


def request_for(
    model: str,
    data: Any,
    *,
    max_tokens: int = 80,
    temperature: float = 0.8,
    seed: int = 0,
    chat: bool = False,
) -> Request:
    """The request a served model takes for one input, by its kind.

    Parameters
    ----------
    model : the served name (its kind comes from kind_of).
    data : 64 pixels on 0..16 (digits), a review (sentiment), a prompt (generator) or a
        sentence (embedder).
    max_tokens, temperature, seed : sampling settings of a generator.
    chat : a generator's input is a user's message to answer (/v1/chat/completions, through
        the model's chat template) instead of a prompt to continue (/v1/completions).
    """
    kind = kind_of(model)
    if kind == "digits":
        return Request(model, kind, infer_path(model), digits_body(data))
    if kind == "sentiment":
        return Request(model, kind, infer_path(model), text_body(data))
    if kind == "generator" and chat:
        body = chat_body(model, data, max_tokens, temperature, seed)
        return Request(model, kind, "/v1/chat/completions", body)
    if kind == "generator":
        body = completion_body(model, data, max_tokens, temperature, seed)
        return Request(model, kind, "/v1/completions", body)
    return Request(model, kind, "/v1/embeddings", embedding_body(model, data))


def explain_request(request: Request, method: str, seed: int = 0) -> Request:
    """The explain-extension request for an infer request ("shap" or "lime")."""
    if request.kind not in EXPLAINABLE:
        raise MaaslabError(
            f"{request.model} is a {request.kind} model; explanations cover "
            f"{' and '.join(EXPLAINABLE)} models"
        )
    path = f"/v2/models/{request.model}/explain"
    return Request(request.model, request.kind, path, explain_body(request.body, method, seed))


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


def send(url: str, request: Request, timeout: float = TIMEOUT_S) -> Call:
    """POST a Request to the server at `url` and record the exchange."""
    return call(url, request.path, request.body, timeout)


def ask(url: str, request: Request, explain: str | None = None) -> list[Call]:
    """Send `request`; with `explain` ("shap" or "lime") and a good answer, its explanation too."""
    calls = [send(url, request)]
    if explain and calls[0].ok:
        calls.append(send(url, explain_request(request, explain)))
    return calls


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


@dataclass(frozen=True)
class Answer:
    """A good answer read back by kind (the fields the kind does not have are None)."""

    kind: str
    probabilities: np.ndarray | None = None  # digits, sentiment: first row's class probabilities
    label: str | None = None  # sentiment: the predicted label
    text: str | None = None  # generator: the completion (or the chat's answer)
    usage: dict[str, Any] | None = None  # generator: prompt_tokens, completion_tokens
    embedding: np.ndarray | None = None  # embedder: the first sentence's vector

    def lines(self, true_label: int | None = None) -> tuple[str, str]:
        """(a markdown headline, a caption) for a page; "" where the kind has none.

        `true_label` is the label of the digit sent, shown next to the prediction.
        """
        if self.kind == "digits":
            return f"**Prediction: {int(self.probabilities.argmax())}** (label {true_label})", ""
        if self.kind == "sentiment":
            return f"**Sentiment: {self.label}** ({self.probabilities.max():.0%} sure)", ""
        if self.kind == "generator":
            u = self.usage
            used = f"{u.get('prompt_tokens')} prompt tokens · {u.get('completion_tokens')}"
            return "", used + " completion tokens"
        v = self.embedding
        first = "First values: " + ", ".join(f"{x:+.4f}" for x in v[:8]) + ", …"
        return f"**{len(v)} dimensions** · length {np.linalg.norm(v):.3f}", first


def answer_of(kind: str, answer: dict[str, Any]) -> Answer:
    """The numbers in a JSON answer of a model of `kind` (first row)."""
    if kind == "digits":
        return Answer(kind, probabilities=output(answer, "probabilities")[0])
    if kind == "sentiment":
        proba = output(answer, "probabilities")[0]
        return Answer(kind, probabilities=proba, label=str(output(answer, "label")[0]))
    if kind == "generator":
        return Answer(kind, text=completion_text(answer), usage=dict(answer.get("usage", {})))
    return Answer(kind, embedding=embedding_of(answer))


def completion_text(answer: dict[str, Any]) -> str:
    """The first choice's text of an OpenAI completion answer, or its message's content for a
    chat answer."""
    choice = answer["choices"][0]
    return str(choice["text"] if "text" in choice else choice["message"]["content"])


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
