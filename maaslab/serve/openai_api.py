"""OpenAI-compatible routes, as vLLM serves them: the official `openai` client works unmodified.

- `GET /v1/models`, `GET /v1/models/{model}`: the served models in OpenAI's list format.
- `POST /v1/completions`, `POST /v1/chat/completions`: text from `mini-gpt`, a character-level
  GPT trained on CPython's help text. **A token is one character** for this model: `max_tokens`,
  `usage.prompt_tokens` and `usage.completion_tokens` count characters.
- `POST /v1/embeddings`: unit-length MiniLM-L6 sentence embeddings from `minilm-embed` (384
  numbers per text; `encoding_format` "float" or "base64" = little-endian float32 bytes).

Sampling follows OpenAI's parameters: `temperature` (0 = always the most likely character; a
tiny temperature tends to the same), `top_p` (a tiny one keeps only the most likely character),
`max_tokens`, `stop` (a string or up to 4; the text is cut before the first one and
`finish_reason` is "stop", else "length"), `n` choices, `seed` (choice i uses seed + i, so the
same request gives the same text, and choice 0 equals `TextGenerator.complete(seed=seed)`), and
`stream` (server-sent events `data: {chunk}` sent as each character is sampled, ending with
`data: [DONE]`). A chat turns its messages into one prompt, a line per message and an open
assistant line, which the model continues (after "assistant: ", the space included)::

    system: You explain Python.
    user: What does len do?
    assistant: (the model continues here)

Refusals come in OpenAI's shape, `{"error": {"message": ..., "type": ..., "param": ...,
"code": status}}` (404 for a model not served, 400 for anything else wrong with the request),
so the openai client's exception says what was wrong.

Generation runs on the server's thread pool, never on the event loop, one torch thread per
sampling step (see maaslab.models.gpt._sample_step). A whole answer that takes longer than the
server's per-request timeout is given up with 504; a stream runs until it is done, the client
leaves, or a shutdown's drain deadline passes (then an error event ends it, without [DONE]).
"""

import base64
import itertools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from maaslab.errors import MaaslabError
from maaslab.models.encoder import tokenize
from maaslab.serve.batching import RequestTimeout
from maaslab.serve.drain import Drain
from maaslab.serve.errors import openai_error
from maaslab.serve.models import check_served_texts
from maaslab.serve.openai_schema import (
    CHAT_TOKENS,
    COMPLETION_TOKENS,
    ERRORS,
    MAX_CHOICES,
    STREAM,
    AssistantMessage,
    ChatChoice,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
    Sampling,
    Usage,
)

log = logging.getLogger("maaslab.serve")
MAX_PROMPT_CHARS = 100_000  # the model reads only its last 64 characters; more is a mistake
OWNER = "maaslab"  # the `owned_by` of every model card
STARTED = int(time.time())  # the `created` time of every model card


# --- errors in OpenAI's shape ------------------------------------------------------------------


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    """An OpenAI-style error: {"error": {"message", "type", "param", "code"}}."""
    return JSONResponse(openai_error(status, message, param), status_code=status)


def union_branch(part: str) -> bool:
    """True for the part of a pydantic error location that names a union's branch ("str",
    "list[constrained-str]", "function-after[...]"), not a field."""
    return (
        part in {"str", "int", "float", "bool", "none"}
        or "[" in part
        or part.startswith(("function-", "constrained-", "literal"))
    )


def validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """A schema violation in words (`field: what is wrong`) and the first field at fault."""
    parts, params = [], []
    for e in err.errors():
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        # A union (str | list[str]) reports once per branch: name the field, not the branch.
        field = ".".join(x for x in loc if not union_branch(x))
        params.append(field or None)
        text = f"{field}: {e.get('msg', 'invalid')}" if field else e.get("msg", "invalid body")
        if text not in parts:
            parts.append(text)
    return "; ".join(parts) or "the request body is not valid", params[0] if params else None


class OpenAIRoute(APIRoute):
    """A route that answers refusals in OpenAI's error shape, as vLLM does (status 400 for a
    body that breaks the schema, like OpenAI), so the client's exception carries the message;
    the rest of the server answers {"error": "..."} as the Open Inference Protocol says."""

    def get_route_handler(self) -> Callable:
        """The route's handler, with refusals turned into OpenAI errors."""
        handler = super().get_route_handler()

        async def answer(request: Request) -> Any:
            try:
                return await handler(request)
            except RequestValidationError as err:
                return error_response(400, *validation_message(err))
            except StarletteHTTPException as err:
                return error_response(err.status_code, str(err.detail))
            except MaaslabError as err:
                return error_response(400, str(err))

        return answer


router = APIRouter(tags=["OpenAI-compatible"], route_class=OpenAIRoute)


# --- helpers -----------------------------------------------------------------------------------


def served(request: Request, name: str, kind: str, route: str) -> Any:
    """The served model `name`, which must be of `kind`; 404 / 400 with the choices otherwise."""
    models = request.app.state.models
    fitting = sorted(n for n, m in models.items() if m.kind == kind)
    if name not in models:
        raise HTTPException(
            404, f"model {name!r} is not served here; {route} serves {', '.join(fitting) or 'none'}"
        )
    model = models[name]
    if model.kind != kind:
        raise HTTPException(
            400,
            f"{route} needs a {kind} model and {name} is a {model.kind} model; "
            f"use {', '.join(fitting) or 'none served'}",
        )
    return model


def first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the first stop string starts in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many final characters of `text` could begin a stop string (not safe to send yet)."""
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


class Choice:
    """One sampled continuation, cut before the first stop string; iterating yields the text
    as soon as it can no longer turn out to be part of a stop string."""

    def __init__(self, pieces: Iterator[str], stops: tuple[str, ...]) -> None:
        self.pieces, self.stops = pieces, stops
        self.text = ""
        self.tokens = 0  # sampled tokens, the stop string's included: that is what was computed
        self.finish_reason = "length"

    def __iter__(self) -> Iterator[str]:
        pending = ""
        for piece in self.pieces:
            self.tokens += 1
            pending += piece
            cut = first_stop(pending, self.stops)
            if cut is not None:
                pending, self.finish_reason = pending[:cut], "stop"
                break
            keep = held_back(pending, self.stops)
            ready, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
            if ready:
                self.text += ready
                yield ready
        if pending:
            self.text += pending
            yield pending


def run_all(request: Request, choices: list[Choice]) -> None:
    """Sample every choice to its end; 504 once the server's per-request timeout has passed."""
    config = getattr(request.app.state, "config", None)
    timeout = getattr(config, "request_timeout_s", None)
    deadline = None if timeout is None else time.monotonic() + timeout
    for choice in choices:
        for _ in choice:
            if deadline is not None and time.monotonic() > deadline:
                raise RequestTimeout(
                    f"generation did not finish within {timeout:g} s; ask for "
                    "fewer tokens or choices, or stream"
                )


def stops_of(stop: str | list[str] | None) -> tuple[str, ...]:
    """The stop strings of a request as a tuple."""
    return () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)


def start_choices(wrapper: Any, prompts: list[str], body: Sampling, max_tokens: int) -> list:
    """One Choice per prompt and per n, its arguments checked now (before any byte is sent)."""
    if len(prompts) * body.n > MAX_CHOICES:
        raise HTTPException(
            400,
            f"{len(prompts)} prompts x n={body.n} asks for {len(prompts) * body.n} "
            f"choices; at most {MAX_CHOICES} per request",
        )
    for prompt in prompts:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise HTTPException(
                400,
                f"a prompt may hold at most {MAX_PROMPT_CHARS:,} characters, got "
                f"{len(prompt):,} (the model reads only the last {wrapper.context})",
            )
    # temperature 0 means "the likeliest token every time": top_k=1 does exactly that.
    greedy = body.temperature == 0
    settings = {
        "max_new_tokens": max_tokens,
        "temperature": 1.0 if greedy else body.temperature,
        "top_k": 1 if greedy else None,
        "top_p": None if body.top_p == 1 else body.top_p,
    }
    seeds = [None if body.seed is None else body.seed + j for j in range(body.n)]
    stops = stops_of(body.stop)
    return [
        Choice(primed(wrapper.generate(p, seed=seed, **settings)), stops)
        for p in prompts
        for seed in seeds
    ]


def primed(pieces: Iterator[str]) -> Iterator[str]:
    """`pieces` with its first item computed now: a failure raises here, before any byte."""
    first = next(pieces, None)
    return pieces if first is None else itertools.chain([first], pieces)


def prompt_tokens(wrapper: Any, prompts: list[str]) -> int:
    """Tokens (characters) of the prompts, as the model's tokenizer counts them."""
    return sum(len(wrapper.tokenizer.encode(p)) for p in prompts)


def usage(prompt: int, choices: list[Choice]) -> Usage:
    """Usage counts of a finished request."""
    completion = sum(c.tokens for c in choices)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def sse(payload: dict | str) -> str:
    """One server-sent event."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def event_stream(
    chunks: Iterator[dict], include_usage: bool, usage_chunk, drain: Drain | None = None
) -> Iterator[str]:
    """Server-sent events for `chunks`, the usage chunk if asked for, then [DONE].

    The first token of every choice is sampled before the response starts (start_choices), so
    a request that cannot be served gets its 4xx. An error after the first byte cannot change
    the status any more: it is sent as an `{"error": {...}}` event, which the openai client
    raises as an APIError, and the stream ends without [DONE], which only a whole answer gets.
    So does a stream still running when the server's drain deadline passes (see serve.drain).
    """
    try:
        for chunk in chunks:
            if drain is not None and drain.expired():
                drain.record_cut()
                yield sse(openai_error(503, drain.cut_message(), kind="server_shutdown"))
                return
            yield sse(chunk)
        if include_usage:
            yield sse(usage_chunk())
    except Exception as exc:  # the status is sent already: say it in the stream
        log.exception("a stream failed after its first byte")
        yield sse(openai_error(500, f"{type(exc).__name__}: {exc}; this is a bug in the server"))
        return
    yield sse("[DONE]")


# --- routes ------------------------------------------------------------------------------------


LIST_LINKS = {  # from the listing to the routes that take a model's name (OpenAPI links)
    "Model": {"operationId": "get_model", "parameters": {"model": "$response.body#/data/0/id"}},
    "Metadata": {
        "operationId": "model_metadata",
        "parameters": {"name": "$response.body#/data/0/id"},
    },
}


@router.get(
    "/v1/models",
    response_model=ModelList,
    responses={200: {"description": "The served models", "links": LIST_LINKS}},
)
def list_models(request: Request) -> ModelList:
    """The served models, in OpenAI's list format."""
    names = sorted(request.app.state.models)
    return ModelList(data=[ModelCard(id=n, created=STARTED, owned_by=OWNER) for n in names])


@router.get("/v1/models/{model}", response_model=ModelCard, responses=ERRORS)
def get_model(model: str, request: Request) -> ModelCard:
    """One served model's card."""
    if model not in request.app.state.models:
        raise HTTPException(404, f"model {model!r} is not served here")
    return ModelCard(id=model, created=STARTED, owned_by=OWNER)


def stream(
    request: Request,
    head: dict,
    choices: list[Choice],
    body: Sampling,
    piece: Callable[[str], dict],
    first: dict | None,
    tail: Callable[[], Usage],
) -> StreamingResponse:
    """Stream `choices` as OpenAI chunks: `first` (chat's role delta), a chunk per `piece` of
    text as it is sampled, one with the finish reason per choice, the usage if asked, [DONE]."""

    def chunk(index: int, finish: str | None, fields: dict) -> dict:
        return {
            **head,
            "choices": [{"index": index, **fields, "finish_reason": finish, "logprobs": None}],
        }

    def chunks() -> Iterator[dict]:
        for index, choice in enumerate(choices):
            if first is not None:
                yield chunk(index, None, first)
            for text in choice:
                yield chunk(index, None, piece(text))
            yield chunk(index, choice.finish_reason, piece("") if first is None else {"delta": {}})

    include = bool(body.stream_options and body.stream_options.include_usage)
    usage_chunk = lambda: {**head, "choices": [], "usage": tail().model_dump()}  # noqa: E731
    drain = getattr(request.app.state, "drain", None)
    return StreamingResponse(
        event_stream(chunks(), include, usage_chunk, drain), media_type="text/event-stream"
    )


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses={**ERRORS, 200: STREAM},
    description=__doc__,
)
def completions(body: CompletionRequest, request: Request) -> Any:
    """Continue the prompt with mini-gpt (one token = one character); see the module notes."""
    wrapper = served(request, body.model, "generator", "/v1/completions").wrapper
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    choices = start_choices(wrapper, prompts, body, body.max_tokens or COMPLETION_TOKENS)
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    tail = lambda: usage(prompt_tokens(wrapper, prompts), choices)  # noqa: E731
    if body.stream:
        head = {"id": ident, "object": "text_completion", "created": created, "model": body.model}
        return stream(request, head, choices, body, lambda text: {"text": text}, None, tail)
    run_all(request, choices)
    return CompletionResponse(
        id=ident,
        created=created,
        model=body.model,
        usage=tail(),
        choices=[
            CompletionChoice(index=i, text=c.text, finish_reason=c.finish_reason)
            for i, c in enumerate(choices)
        ],
    )


def chat_prompt(messages: list[ChatMessage]) -> str:
    """The chat as one prompt: a `role: content` line per message, then an open assistant line."""
    contents = [
        m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or [])
        for m in messages
    ]
    if not any(c.strip() for c in contents):
        raise HTTPException(400, "every message is empty: write a message for the model to answer")
    lines = [f"{m.role}: {c}" for m, c in zip(messages, contents, strict=True)]
    return "\n".join(lines) + "\nassistant: "


@router.post("/v1/chat/completions", response_model=ChatResponse, responses={**ERRORS, 200: STREAM})
def chat_completions(body: ChatRequest, request: Request) -> Any:
    """Answer the chat as the assistant with mini-gpt (template in the module notes)."""
    wrapper = served(request, body.model, "generator", "/v1/chat/completions").wrapper
    prompt = chat_prompt(body.messages)
    max_tokens = body.max_completion_tokens or body.max_tokens or CHAT_TOKENS
    choices = start_choices(wrapper, [prompt], body, max_tokens)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    tail = lambda: usage(prompt_tokens(wrapper, [prompt]), choices)  # noqa: E731
    if body.stream:
        head = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
        }
        role = {"delta": {"role": "assistant", "content": ""}}
        return stream(
            request, head, choices, body, lambda text: {"delta": {"content": text}}, role, tail
        )
    run_all(request, choices)
    return ChatResponse(
        id=ident,
        created=created,
        model=body.model,
        usage=tail(),
        choices=[
            ChatChoice(
                index=i, message=AssistantMessage(content=c.text), finish_reason=c.finish_reason
            )
            for i, c in enumerate(choices)
        ],
    )


@router.post("/v1/embeddings", response_model=EmbeddingResponse, responses=ERRORS)
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingResponse:
    """Unit-length sentence embeddings of each input text (minilm-embed: 384 numbers each)."""
    model = served(request, body.model, "embedder", "/v1/embeddings")
    encoder = model.wrapper.encoder
    if body.dimensions is not None and body.dimensions != encoder.dim:
        raise HTTPException(
            400,
            f"{body.model} embeddings have {encoder.dim} dimensions, not {body.dimensions}: "
            "leave `dimensions` out",
        )
    texts = check_served_texts([body.input] if isinstance(body.input, str) else list(body.input))
    if model.batcher is not None:  # queued and batched with other requests
        config = getattr(request.app.state, "config", None)
        timeout = getattr(config, "request_timeout_s", None)
        vectors = (await model.infer(texts, len(texts), timeout))["embedding"]
    else:
        vectors = (await run_in_threadpool(model.wrapper.embed, texts)).embeddings
    vectors = np.asarray(vectors, dtype=np.float32)
    # Word pieces MiniLM read, [CLS] and [SEP] included, as many as were kept after truncation.
    batch, _ = await run_in_threadpool(tokenize, encoder.tokenizer, texts, encoder.max_length, None)
    tokens = int(sum(sum(mask) for mask in batch["attention_mask"]))
    if body.encoding_format == "base64":
        data = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        data = [v.tolist() for v in vectors]
    return EmbeddingResponse(
        data=[Embedding(index=i, embedding=e) for i, e in enumerate(data)],
        model=body.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
