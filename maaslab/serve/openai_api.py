"""OpenAI-compatible routes, as vLLM serves them: the official `openai` client works unmodified.

- `GET /v1/models`, `GET /v1/models/{model}`: the served models in OpenAI's list format.
- `POST /v1/completions`, `POST /v1/chat/completions`: text from a generator model:
  - `mini-gpt`, a character-level GPT trained on CPython's help text. **A token is one
    character** for this model: `max_tokens`, `usage.prompt_tokens` and
    `usage.completion_tokens` count characters. It reads the last 64 characters of its text.
  - a language model (`mini-llama`, or any Llama / GPT-2 folder it was given), run by the
    engine of lesson 15 (maaslab.llm: paged KV cache, continuous batching, prefix caching) on a
    thread of its own (maaslab.serve.llm_service). Tokens are the model's own subword tokens;
    a prompt plus `max_tokens` must fit its context (else 400), and `max_tokens` left out is
    the default below, cut to what the context leaves.
- `POST /v1/embeddings`: unit-length MiniLM-L6 sentence embeddings from `minilm-embed` (384
  numbers per text; `encoding_format` "float" or "base64" = little-endian float32 bytes).

Sampling follows OpenAI's parameters: `temperature` (0 = always the most likely token; a tiny
temperature tends to the same), `top_p` (a tiny one keeps only the most likely token),
`max_tokens` (chat: also `max_completion_tokens`), `stop` (a string or up to 4; the text is cut
before the first one and `finish_reason` is "stop"; a language model also stops with "stop" at
its end-of-text token, else "length"), `n` choices, `seed` (choice i uses seed + i, so the same
request gives the same text, and choice 0 equals `TextGenerator.complete(seed=seed)` or the
engine's tokens for that seed), and `stream` (server-sent events `data: {chunk}` sent as each
token is sampled, ending with `data: [DONE]`; a language model's token that ends inside a
multi-byte character waits for the rest of it). A chat to mini-gpt is one prompt, a line per
message and an open assistant line, which the model continues (after "assistant: ", the space
included)::

    system: You explain Python.
    user: What does len do?
    assistant: (the model continues here)

A language model's chat goes through its own chat template (tokenizer_config.json) with the
assistant's turn opened; a "developer" message is a system message there.

Refusals come in OpenAI's shape, `{"error": {"message": ..., "type": ..., "param": ...,
"code": status}}` (404 for a model not served, 400 for anything else wrong with the request,
503 with Retry-After when a model's queue is full), so the openai client's exception says what
was wrong.

mini-gpt generates on the server's thread pool, never on the event loop, one torch thread per
sampling step (see maaslab.models.gpt._sample_step). A whole answer that takes longer than the
server's per-request timeout is given up with 504 (so is a stream whose first token has not come
by then); a stream runs until it is done, the client leaves (a language model's sequences are
then aborted at once, freeing their KV blocks), or a shutdown's drain deadline passes (then an
error event ends it, without [DONE]).
"""

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from maaslab.errors import MaaslabError
from maaslab.llm.sequence import SamplingParams
from maaslab.models.encoder import tokenize
from maaslab.serve.batching import RequestTimeout
from maaslab.serve.drain import Drain
from maaslab.serve.errors import openai_error
from maaslab.serve.llm_service import Generation
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
MAX_PROMPT_CHARS = 100_000  # mini-gpt reads its last 64 characters, a language model its context
DISCONNECT_POLL_S = 0.25  # how often a request waiting for its tokens checks its client is there
CLIENT_LEFT = 499  # the status logged for a request whose client left before its answer
Event = tuple[int, str, str | None]  # (choice index, text, finish reason once the choice ends)
T = TypeVar("T")
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
            except ClientDisconnect:  # nobody reads this; nginx's "client closed request"
                return Response(status_code=CLIENT_LEFT)

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
    """One sampled continuation, cut before the first stop string.

    Each token's text goes through `feed`, which returns the text that can no longer turn out
    to be part of a stop string; `flush` gives what was held back once the choice has ended.
    Iterating a Choice made with `pieces` does both and yields the text as it becomes safe.
    """

    def __init__(self, pieces: Iterable[str] = (), stops: tuple[str, ...] = ()) -> None:
        self.pieces, self.stops = pieces, stops
        self.text = ""
        self.tokens = 0  # sampled tokens, the stop string's included: that is what was computed
        self.finish_reason = "length"
        self.stopped = False  # a stop string was found: nothing more comes
        self._pending = ""  # text that may begin a stop string

    def feed(self, piece: str) -> str:
        """Take one token's text; the text now safe to send ("" if none)."""
        self.tokens += 1
        pending = self._pending + piece
        cut = first_stop(pending, self.stops)
        if cut is not None:
            ready, self._pending = pending[:cut], ""
            self.finish_reason, self.stopped = "stop", True
        else:
            keep = held_back(pending, self.stops)
            ready, self._pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
        self.text += ready
        return ready

    def flush(self) -> str:
        """The held-back text, at the end of the choice (it began no stop string after all)."""
        rest, self._pending = self._pending, ""
        self.text += rest
        return rest

    def __iter__(self) -> Iterator[str]:
        for piece in self.pieces:
            ready = self.feed(piece)
            if ready:
                yield ready
            if self.stopped:
                return
        rest = self.flush()
        if rest:
            yield rest


def too_slow(timeout: float) -> RequestTimeout:
    """The 504 of an answer that took longer than the per-request timeout."""
    return RequestTimeout(
        f"generation did not finish within {timeout:g} s; ask for fewer tokens or choices, "
        "or stream"
    )


def request_timeout(request: Request) -> float | None:
    """The server's per-request timeout in seconds (None: no limit)."""
    return getattr(getattr(request.app.state, "config", None), "request_timeout_s", None)


def run_all(request: Request, choices: list[Choice]) -> None:
    """Sample every choice to its end; 504 once the server's per-request timeout has passed."""
    timeout = request_timeout(request)
    deadline = None if timeout is None else time.monotonic() + timeout
    for choice in choices:
        for _ in choice:
            if deadline is not None and time.monotonic() > deadline:
                raise too_slow(timeout)


def stops_of(stop: str | list[str] | None) -> tuple[str, ...]:
    """The stop strings of a request as a tuple."""
    return () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)


def check_choices(prompts: int, n: int) -> None:
    """Refuse more than MAX_CHOICES choices (prompts x n) in one request."""
    if prompts * n > MAX_CHOICES:
        raise HTTPException(
            400,
            f"{prompts} prompts x n={n} asks for {prompts * n} choices; at most "
            f"{MAX_CHOICES} per request",
        )


def check_prompt_sizes(prompts: list[str], reads: str) -> None:
    """Refuse a prompt over MAX_PROMPT_CHARS characters; `reads` says what the model reads."""
    for prompt in prompts:
        if len(prompt) > MAX_PROMPT_CHARS:
            raise HTTPException(
                400,
                f"a prompt may hold at most {MAX_PROMPT_CHARS:,} characters, got "
                f"{len(prompt):,} (the model reads {reads})",
            )


def start_choices(wrapper: Any, prompts: list[str], body: Sampling, max_tokens: int) -> list:
    """mini-gpt: one Choice per prompt and per n, its first token sampled now (before any
    byte is sent)."""
    check_choices(len(prompts), body.n)
    check_prompt_sizes(prompts, f"only the last {wrapper.context}")
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


def choice_events(choices: list[Choice]) -> Iterator[Event]:
    """mini-gpt's choices as events, one choice after the other."""
    for index, choice in enumerate(choices):
        for text in choice:
            yield index, text, None
        yield index, "", choice.finish_reason


def prompt_tokens(wrapper: Any, prompts: list[str]) -> int:
    """Tokens (characters) of the prompts, as the model's tokenizer counts them."""
    return sum(len(wrapper.tokenizer.encode(p)) for p in prompts)


def usage(prompt: int, choices: list[Choice]) -> Usage:
    """Usage counts of a finished request."""
    completion = sum(c.tokens for c in choices)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


# --- language models: the engine's tokens as choices -------------------------------------------


def engine_max_tokens(
    asked: int | None, default: int, context: int, prompts: list[list[int]]
) -> int:
    """What the request asked for, or `default` cut to the room the context leaves (>= 1)."""
    if asked is not None:
        return asked
    return max(1, min(default, context - max(len(p) for p in prompts)))


def sampling_params(body: Sampling, max_tokens: int) -> list[SamplingParams]:
    """The engine's settings for each of the n choices of a prompt (choice j: seed + j)."""
    return [
        SamplingParams(
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            # seed + j wraps around below 2**63, where the engine's seeds end
            seed=None if body.seed is None else (body.seed + j) % 2**63,
        )
        for j in range(body.n)
    ]


async def while_connected(request: Request, work: Awaitable[T], timeout: float | None) -> T:
    """Await `work` while the client is still there: ClientDisconnect once it has left (so its
    sequences are aborted), RequestTimeout once `timeout` seconds have passed."""
    task = asyncio.ensure_future(work)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            wait = DISCONNECT_POLL_S
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - time.monotonic()))
            done, _ = await asyncio.wait({task}, timeout=wait)
            if done:
                return task.result()
            if deadline is not None and time.monotonic() >= deadline:
                raise too_slow(timeout)
            if await request.is_disconnected():
                raise ClientDisconnect()
    finally:
        task.cancel()


async def engine_choices(
    request: Request, model: Any, body: Sampling, prompts: list[list[int]], max_tokens: int
) -> tuple[list[Choice], AsyncIterator[Event]]:
    """A language model's choices (n per prompt) started in its engine, each with its first
    token already there (a refusal or failure raises here, before any byte), and their events.

    Overloaded (503) when the model's queue is full; a prompt that does not fit the context is
    the engine's MaaslabError (400).
    """
    check_choices(len(prompts), body.n)
    params = sampling_params(body, max_tokens)
    gen = model.service.submit([p for p in prompts for _ in params], params * len(prompts))
    try:
        await while_connected(request, gen.wait_first(), request_timeout(request))
    except BaseException:
        gen.close()
        raise
    choices = [Choice((), stops_of(body.stop)) for _ in range(gen.count)]
    return choices, engine_events(gen, [model.wrapper.decoder() for _ in choices], choices)


async def engine_events(
    gen: Generation, decoders: list, choices: list[Choice]
) -> AsyncIterator[Event]:
    """The choices' text as the engine samples it, interleaved: (index, text, None) for text
    and (index, "", finish_reason) when a choice ends. Closing it aborts what still runs."""
    try:
        while not gen.finished:
            index, out = await gen.next()
            choice, decoder = choices[index], decoders[index]
            piece = decoder.push(out.token) + (decoder.flush() if out.finished else "")
            text = choice.feed(piece)
            if choice.stopped:
                gen.abort(index)  # its stop string came: free its blocks now
            elif out.finished:
                text += choice.flush()
                choice.finish_reason = "stop" if out.finish_reason == "stop" else "length"
            if text:
                yield index, text, None
            if choice.stopped or out.finished:
                yield index, "", choice.finish_reason
    finally:
        gen.close()


async def run_events(request: Request, events: AsyncIterator[Event]) -> None:
    """Run a language model's choices to their end (504 after the request timeout; the
    sequences are aborted if the client leaves)."""

    async def drain() -> None:
        async with contextlib.aclosing(events):
            async for _ in events:
                pass

    await while_connected(request, drain(), request_timeout(request))


# --- server-sent events ------------------------------------------------------------------------


def sse(payload: dict | str) -> str:
    """One server-sent event."""
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def event_stream(
    chunks: AsyncIterator[dict], include_usage: bool, usage_chunk, drain: Drain | None = None
) -> AsyncIterator[str]:
    """Server-sent events for `chunks`, the usage chunk if asked for, then [DONE].

    The first token of every choice is sampled before the response starts (start_choices,
    engine_choices), so a request that cannot be served gets its 4xx. An error after the first
    byte cannot change the status any more: it is sent as an `{"error": {...}}` event, which the
    openai client raises as an APIError, and the stream ends without [DONE], which only a whole
    answer gets. So does a stream still running when the server's drain deadline passes (see
    serve.drain).
    """
    async with contextlib.aclosing(chunks):
        try:
            async for chunk in chunks:
                if drain is not None and drain.expired():
                    drain.record_cut()
                    yield sse(openai_error(503, drain.cut_message(), kind="server_shutdown"))
                    return
                yield sse(chunk)
            if include_usage:
                yield sse(usage_chunk())
        except Exception as exc:  # the status is sent already: say it in the stream
            log.exception("a stream failed after its first byte")
            message = f"{type(exc).__name__}: {exc}; this is a bug in the server"
            yield sse(openai_error(500, message))
            return
    yield sse("[DONE]")


def stream(
    request: Request,
    head: dict,
    events: AsyncIterator[Event],
    body: Sampling,
    piece: Callable[[str], dict],
    first: dict | None,
    tail: Callable[[], Usage],
) -> StreamingResponse:
    """Stream choices' events as OpenAI chunks: `first` (chat's role delta) before a choice's
    first text, a chunk per `piece` of text as it is sampled, one with the finish reason per
    choice, the usage if asked, [DONE]."""

    def chunk(index: int, finish: str | None, fields: dict) -> dict:
        return {
            **head,
            "choices": [{"index": index, **fields, "finish_reason": finish, "logprobs": None}],
        }

    async def chunks() -> AsyncIterator[dict]:
        begun: set[int] = set()
        async with contextlib.aclosing(events):
            async for index, text, finish in events:
                if first is not None and index not in begun:
                    begun.add(index)
                    yield chunk(index, None, first)
                if finish is None:
                    yield chunk(index, None, piece(text))
                else:
                    yield chunk(index, finish, piece("") if first is None else {"delta": {}})

    include = bool(body.stream_options and body.stream_options.include_usage)
    usage_chunk = lambda: {**head, "choices": [], "usage": tail().model_dump()}  # noqa: E731
    drain = getattr(request.app.state, "drain", None)
    return StreamingResponse(
        event_stream(chunks(), include, usage_chunk, drain), media_type="text/event-stream"
    )


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
    """The served models (language models included), in OpenAI's list format."""
    names = sorted(request.app.state.models)
    return ModelList(data=[ModelCard(id=n, created=STARTED, owned_by=OWNER) for n in names])


@router.get("/v1/models/{model}", response_model=ModelCard, responses=ERRORS)
def get_model(model: str, request: Request) -> ModelCard:
    """One served model's card."""
    if model not in request.app.state.models:
        raise HTTPException(404, f"model {model!r} is not served here")
    return ModelCard(id=model, created=STARTED, owned_by=OWNER)


async def generated(
    request: Request,
    model: Any,
    body: Sampling,
    prompts: list[str] | None,
    chat: list | None,
    asked: int | None,
    default: int,
) -> tuple[list[Choice], AsyncIterator[Event], Callable[[], Usage]]:
    """The request's choices started on `model` (mini-gpt or a language model), their events
    and their usage. `prompts` for a completion, `chat` (messages) for a chat."""
    wrapper = model.wrapper
    if model.service is None:  # mini-gpt: characters, on the thread pool
        texts = prompts if chat is None else [chat_prompt(chat)]
        max_tokens = asked or default
        choices = await run_in_threadpool(start_choices, wrapper, texts, body, max_tokens)
        tail = lambda: usage(prompt_tokens(wrapper, texts), choices)  # noqa: E731
        return choices, iterate_in_threadpool(choice_events(choices)), tail
    if chat is None:
        check_prompt_sizes(prompts, f"at most {wrapper.context} tokens")
        ids = await run_in_threadpool(lambda: [wrapper.encode(p) for p in prompts])
    else:
        roles = {"developer": "system"}
        messages = [
            {"role": roles.get(m.role, m.role), "content": text}
            for m, text in zip(chat, message_texts(chat), strict=True)
        ]
        check_prompt_sizes([m["content"] for m in messages], f"at most {wrapper.context} tokens")
        ids = [await run_in_threadpool(wrapper.chat_ids, messages)]
    max_tokens = engine_max_tokens(asked, default, wrapper.context, ids)
    choices, events = await engine_choices(request, model, body, ids, max_tokens)
    return choices, events, lambda: usage(sum(len(p) for p in ids), choices)


@router.post(
    "/v1/completions",
    response_model=CompletionResponse,
    responses={**ERRORS, 200: STREAM},
    description=__doc__,
)
async def completions(body: CompletionRequest, request: Request) -> Any:
    """Continue the prompt with a generator model (mini-gpt: one token = one character, or a
    language model through its engine); see the module notes."""
    model = served(request, body.model, "generator", "/v1/completions")
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    asked = body.max_tokens if "max_tokens" in body.model_fields_set else None
    choices, events, tail = await generated(
        request, model, body, prompts, None, asked, body.max_tokens or COMPLETION_TOKENS
    )
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        head = {"id": ident, "object": "text_completion", "created": created, "model": body.model}
        return stream(request, head, events, body, lambda text: {"text": text}, None, tail)
    await finish(request, model, choices, events)
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


async def finish(
    request: Request, model: Any, choices: list[Choice], events: AsyncIterator
) -> None:
    """Run every choice to its end for a whole answer (504 past the request timeout)."""
    if model.service is None:
        await run_in_threadpool(run_all, request, choices)
    else:
        await run_events(request, events)


def message_texts(messages: list[ChatMessage]) -> list[str]:
    """Each message's text (its parts joined); 400 if every one is empty."""
    contents = [
        m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or [])
        for m in messages
    ]
    if not any(c.strip() for c in contents):
        raise HTTPException(400, "every message is empty: write a message for the model to answer")
    return contents


def chat_prompt(messages: list[ChatMessage]) -> str:
    """mini-gpt's chat as one prompt: a `role: content` line per message, then an open
    assistant line."""
    lines = [f"{m.role}: {c}" for m, c in zip(messages, message_texts(messages), strict=True)]
    return "\n".join(lines) + "\nassistant: "


@router.post("/v1/chat/completions", response_model=ChatResponse, responses={**ERRORS, 200: STREAM})
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    """Answer the chat as the assistant (mini-gpt's template is in the module notes; a language
    model uses its own chat template)."""
    model = served(request, body.model, "generator", "/v1/chat/completions")
    asked = body.max_completion_tokens or body.max_tokens
    choices, events, tail = await generated(
        request, model, body, None, body.messages, asked, CHAT_TOKENS
    )
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        head = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
        }
        role = {"delta": {"role": "assistant", "content": ""}}
        return stream(
            request, head, events, body, lambda text: {"delta": {"content": text}}, role, tail
        )
    await finish(request, model, choices, events)
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
