"""The explain extension of the Open Inference Protocol (ours, in the spirit of TorchServe's and
KServe's explainers): `POST /v2/models/{name}/explain`.

The request is an inference request (the same inputs as `/infer`, JSON or Triton's binary tensor
data) with `parameters`:

- `method`: "shap" or "lime" (required). "shap" is DeepSHAP for the digits models (one backward
  pass, additive to float precision) and Partition SHAP for sentiment-minilm (one feature per
  word); any key of `maaslab.explain.METHODS` that fits the model may be named instead
  ("kernel_shap", "permutation_shap", "gradient_shap", ...).
- `seed` (default 0): the same seed gives the same numbers as
  `maaslab.explain.explain(explainable(name), x, method, seed=seed)` in a notebook.
- `target` (default: each input's predicted class): the class index to explain.

Each input row is explained on its own (at most MAX_EXPLAIN_ROWS rows per request); the answer
holds, for N rows and F features (64 pixels, or the words of the longest text):

- `values` FP32 [N, F]: how much each feature moved the target's probability (a shorter text's
  row is padded with zeros, which keeps its sum);
- `base_value` FP32 [N]: the probability with every feature absent (SHAP) or LIME's intercept;
  for SHAP, base_value + sum(values) = prediction;
- `prediction` FP32 [N]: the model's probability of the target class;
- `target` INT32 [N] and `target_name` BYTES [N]: the class explained;
- `features` BYTES [N, F]: pixel names ("r3c5") or the words (padding: "");
- `feature_count` INT32 [N]: how many of the F columns belong to each row;

and `parameters` with the method used, the seed and the model evaluations spent. Digits use
the background the library uses (50 training digits chosen with seed 0), the same for every
request, so a seed alone decides the answer.
"""

import asyncio
import copy
import json
import threading
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from maaslab.data import DIGIT_PIXEL_MAX
from maaslab.errors import MaaslabError
from maaslab.explain import (
    METHODS,
    Attribution,
    Explainable,
    explain,
    explainable,
)
from maaslab.serve.batching import RequestTimeout
from maaslab.serve.errors import ERROR_RESPONSES
from maaslab.serve.models import ServedModel
from maaslab.serve.oip import (
    VERSION,
    InferRequest,
    InferResponse,
    _inline_schema,
    _payload,
    get_model,
)
from maaslab.serve.parsing import request_json
from maaslab.serve.tensors import HEADER, decode_inputs, encode_response, requested_outputs

MAX_EXPLAIN_ROWS = 8  # rows per request: each one is a whole explanation (tens of model calls)
SHAP = {"digits": "deep_shap", "sentiment": "partition_shap"}  # "shap" for each model kind
OUTPUTS = [
    ("values", "FP32"),
    ("base_value", "FP32"),
    ("prediction", "FP32"),
    ("target", "INT32"),
    ("target_name", "BYTES"),
    ("features", "BYTES"),
    ("feature_count", "INT32"),
]

router = APIRouter(prefix="/v2", tags=["Explain extension"], responses=ERROR_RESPONSES)


class ExplainParameters(BaseModel):
    """What to explain and how."""

    method: str = Field(description='"shap" or "lime" (or a maaslab.explain.METHODS key)')
    seed: int = Field(0, ge=0, description="the same seed gives the same values")
    target: int | None = Field(None, ge=0, description="class index; default the predicted one")


class ExplainRequest(InferRequest):
    """POST /v2/models/{name}/explain: an inference request with the explain parameters."""

    parameters: ExplainParameters  # type: ignore[assignment]


class ExplainResponse(InferResponse):
    """The attributions as output tensors, with the method used in `parameters`."""

    parameters: dict[str, Any]


class Explainers:
    """One Explainable per served model, built on first use, with a lock: an Explainable counts
    its model calls in place, so two explanations of one model take turns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[str, tuple[Explainable, threading.Lock]] = {}

    def get(self, model: ServedModel) -> tuple[Explainable, threading.Lock]:
        """The model's Explainable and its lock."""
        with self._lock:
            if model.name not in self._made:
                # DeepSHAP hooks every layer of the module it explains and reads values the
                # hooks store; a private copy keeps the batcher's forward passes out of them.
                wrapper = copy.deepcopy(model.wrapper) if model.kind == "digits" else model.wrapper
                self._made[model.name] = (explainable(wrapper), threading.Lock())
            return self._made[model.name]


def method_for(model: ServedModel, explainer: Explainable, asked: object) -> str:
    """The maaslab.explain method for a request's `method` ("shap", "lime" or a method key)."""
    keys = [k for k, m in METHODS.items() if explainer.kind in m.kinds]
    if asked == "shap":
        return SHAP[model.kind]
    if asked == "lime" or asked in keys:
        return str(asked)
    raise MaaslabError(
        f"parameters.method must be 'shap' or 'lime' (or one of {', '.join(keys)} "
        f"for {model.name}), got {asked!r}"
    )


def parameters(body: dict[str, Any]) -> tuple[object, int, int | None]:
    """(method, seed, target) from the request's `parameters`, checked."""
    params = body.get("parameters")
    if not isinstance(params, dict) or "method" not in params:
        raise MaaslabError("the request needs parameters.method: 'shap' or 'lime'")
    seed, target = params.get("seed", 0), params.get("target")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise MaaslabError(f"parameters.seed must be a whole number 0..2**32-1, got {seed!r}")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool)):
        raise MaaslabError(f"parameters.target must be a class index, got {target!r}")
    return params["method"], seed, target


def check_rows(explainer: Explainable, rows: list[Any], method: str) -> None:
    """Refuse inputs a method cannot explain, before any work starts."""
    for x in rows:
        explainer.check_input(x)  # empty text, too many words, wrong size: a clear message


def explain_rows(
    explainer: Explainable,
    lock: threading.Lock,
    rows: list[Any],
    method: str,
    seed: int,
    target: int | None,
    cancel: threading.Event,
) -> list[Attribution]:
    """An Attribution per row (runs on a worker thread; `cancel` stops it between model calls)."""
    with lock:
        explainer.cancel = cancel
        try:
            return [explain(explainer, x, method, target=target, seed=seed) for x in rows]
        finally:
            explainer.cancel = None


def tensors(attributions: list[Attribution]) -> list[tuple[str, str, Any]]:
    """The Attributions as (name, datatype, value) outputs, rows padded to the widest."""
    width = max(len(a.values) for a in attributions)
    values = np.zeros((len(attributions), width), dtype=np.float32)
    features: list[str] = []
    for i, a in enumerate(attributions):
        values[i, : len(a.values)] = a.values
        features += [*a.features, *[""] * (width - len(a.features))]
    columns = {
        "values": values,
        "base_value": np.array([a.base_value for a in attributions], dtype=np.float32),
        "prediction": np.array([a.prediction for a in attributions], dtype=np.float32),
        "target": np.array([a.target for a in attributions], dtype=np.int32),
        "target_name": [a.target_name for a in attributions],
        "features": features,
        "feature_count": np.array([len(a.values) for a in attributions], dtype=np.int32),
    }
    return [(name, dtype, columns[name]) for name, dtype in OUTPUTS]


def shape_features(
    content: bytes, header_length: int | None, shape: list[int]
) -> tuple[bytes, int | None]:
    """The encoded answer with `features` shaped [N, F] (encode_response sends BYTES flat)."""
    answer = json.loads(content if header_length is None else content[:header_length])
    for tensor in answer["outputs"]:
        if tensor["name"] == "features":
            tensor["shape"] = shape
    head = json.dumps(answer).encode()
    if header_length is None:
        return head, None
    return head + content[header_length:], len(head)


REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": _inline_schema(ExplainRequest)},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
ANSWER = {
    "model": ExplainResponse,
    "description": "The attributions (JSON, or a JSON header then binary tensors with "
    "Inference-Header-Content-Length)",
}


@router.post(
    "/models/{name}/explain",
    summary="Explain (extension)",
    description=__doc__,
    openapi_extra={"requestBody": REQUEST_BODY},
    responses={200: ANSWER},
)
async def explain_route(request: Request, name: str) -> Response:
    """Explain each input row with SHAP or LIME: attributions as tensors (see the docstring)."""
    model = get_model(request, name)
    if model.kind not in SHAP:
        raise MaaslabError(
            f"model {name!r} ({model.kind}) cannot be explained: explanations "
            "cover the digits models and sentiment-minilm"
        )
    body, binary = await request_json(request)
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise MaaslabError("'id' must be a string")
    asked, seed, target = parameters(body)
    wanted = requested_outputs(body, [n for n, _ in OUTPUTS])
    payload, count = _payload(model, decode_inputs(body, binary))
    if count > MAX_EXPLAIN_ROWS:
        raise MaaslabError(
            f"{count} inputs to explain; a request takes at most "
            f"{MAX_EXPLAIN_ROWS} (each is a whole explanation)"
        )
    state = request.app.state
    if not hasattr(state, "explainers"):
        state.explainers = Explainers()
    explainer, lock = await run_in_threadpool(state.explainers.get, model)
    method = method_for(model, explainer, asked)
    # The library explains digits as pixels in 0..1; the protocol sends sklearn's 0..16.
    rows = list(payload / DIGIT_PIXEL_MAX) if model.kind == "digits" else list(payload)
    check_rows(explainer, rows, method)
    cancel = threading.Event()
    work = asyncio.ensure_future(
        run_in_threadpool(explain_rows, explainer, lock, rows, method, seed, target, cancel)
    )
    timeout = state.config.request_timeout_s
    if not (await asyncio.wait({work}, timeout=timeout))[0]:
        cancel.set()  # the worker stops at its next model call, raising Cancelled
        work.add_done_callback(lambda task: task.cancelled() or task.exception())  # seen
        raise RequestTimeout(
            f"the explanation did not finish within {timeout:g} s; explain fewer inputs per request"
        )
    attributions = work.result()
    head: dict[str, Any] = {"model_name": name, "model_version": VERSION}
    if request_id is not None:
        head["id"] = request_id
    head["parameters"] = {
        "method": method,
        "library": METHODS[method].library,
        "seed": seed,
        "evaluations": sum(a.evaluations for a in attributions),
    }
    outputs = tensors(attributions)
    content, header_length = encode_response(head, outputs, wanted)
    if "features" in wanted:
        content, header_length = shape_features(content, header_length, list(outputs[0][2].shape))
    if header_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content, media_type="application/octet-stream", headers={HEADER: str(header_length)}
    )
