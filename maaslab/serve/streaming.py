"""Answers as streams: choices cut at stop strings, server-sent events, and a language model's
engine tokens turned into choices (the OpenAI-compatible routes' machinery; see openai_api).

A `Choice` is one sampled continuation: iterating it yields text as soon as the text can no
longer turn out to be part of a stop string. mini-gpt's choices are sampled on the server's
thread pool; a language model's come token by token from its EngineService. Either way they
reach the client as OpenAI's chunks over server-sent events (`stream`), or are gathered into one
answer. Events after the first byte follow the server's rules: an error is an error event with
no [DONE], and a shutdown's drain deadline ends a stream the same way (maaslab.serve.drain).
"""

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from maaslab.llm.sequence import SamplingParams
from maaslab.serve.access import tenant_name
from maaslab.serve.batching import Overloaded, RequestTimeout
from maaslab.serve.drain import Drain
from maaslab.serve.errors import openai_error
from maaslab.serve.llm_service import Generation
from maaslab.serve.openai_schema import (
    MAX_CHOICES,
    Sampling,
    Usage,
)

log = logging.getLogger("maaslab.serve")
MAX_PROMPT_CHARS = 100_000  # mini-gpt reads its last 64 characters, a language model its context
DISCONNECT_POLL_S = 0.25  # how often a request waiting for its tokens checks its client is there
CLIENT_LEFT = 499  # the status logged for a request whose client left before its answer
Event = tuple[int, str, str | None]  # (choice index, text, finish reason once the choice ends)
T = TypeVar("T")


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
            ignore_eos=body.ignore_eos,
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
    gen = model.service.submit(
        [p for p in prompts for _ in params], params * len(prompts), tenant_name(request)
    )
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
    serve.drain), and one whose model can no longer run it (Overloaded, e.g. Ray's replica
    died: a 503 event to retry later, not a server bug).
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
        except Overloaded as exc:  # e.g. the replica running it died: try again later
            log.warning("a stream was cut after its first byte: %s", exc)
            yield sse(openai_error(503, f"{type(exc).__name__}: {exc}"))
            return
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
        try:
            async with contextlib.aclosing(events):
                async for index, text, finish in events:
                    if first is not None and index not in begun:
                        begun.add(index)
                        yield chunk(index, None, first)
                    if finish is None:
                        yield chunk(index, None, piece(text))
                    else:
                        yield chunk(index, finish, piece("") if first is None else {"delta": {}})
        finally:
            tail()  # counted (and metered for the caller's key) whether the usage is sent or not

    include = bool(body.stream_options and body.stream_options.include_usage)
    usage_chunk = lambda: {**head, "choices": [], "usage": tail().model_dump()}  # noqa: E731
    drain = getattr(request.app.state, "drain", None)
    return StreamingResponse(
        event_stream(chunks(), include, usage_chunk, drain), media_type="text/event-stream"
    )
