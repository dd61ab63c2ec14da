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
    the default below, cut to what the context leaves. A completion's prompt may also be the
    model's token ids (a list of ints, or a list of such lists), as OpenAI's API allows, and
    `ignore_eos: true` (vLLM's extension) samples past the end-of-text token up to
    `max_tokens`: what a benchmark needs for exact output lengths (maaslab.serve.llm_load).
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

import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from maaslab.errors import MaaslabError
from maaslab.models.encoder import tokenize
from maaslab.serve.access import add_tokens
from maaslab.serve.errors import openai_error
from maaslab.serve.models import check_served_texts
from maaslab.serve.openai_schema import (
    CHAT_TOKENS,
    COMPLETION_TOKENS,
    ERRORS,
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
from maaslab.serve.streaming import (
    CLIENT_LEFT,
    Choice,
    Event,
    check_prompt_sizes,
    choice_events,
    engine_choices,
    engine_max_tokens,
    prompt_tokens,
    run_all,
    run_events,
    start_choices,
    stream,
    usage,
)

log = logging.getLogger("maaslab.serve")
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
    prompts: list[str] | list[list[int]] | None,
    chat: list | None,
    asked: int | None,
    default: int,
) -> tuple[list[Choice], AsyncIterator[Event], Callable[[], Usage]]:
    """The request's choices started on `model` (mini-gpt or a language model), their events
    and their usage. `prompts` for a completion, `chat` (messages) for a chat."""
    wrapper = model.wrapper
    token_ids = prompts is not None and not all(isinstance(p, str) for p in prompts)
    if model.service is None and token_ids:
        raise HTTPException(
            400,
            f"{body.model} reads text, not token ids: send the prompt as a string "
            "(token-id prompts are for the language models the engine serves)",
        )
    if model.service is None:  # mini-gpt: characters, on the thread pool
        texts = prompts if chat is None else [chat_prompt(chat)]
        max_tokens = asked or default
        choices = await run_in_threadpool(start_choices, wrapper, texts, body, max_tokens)
        tail = metered(request, lambda: usage(prompt_tokens(wrapper, texts), choices))
        return choices, iterate_in_threadpool(choice_events(choices)), tail
    if token_ids:  # the model's own tokens: the engine checks them against its vocabulary
        ids = [list(p) for p in prompts]
    elif chat is None:
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
    return choices, events, metered(request, lambda: usage(sum(len(p) for p in ids), choices))


def metered(request: Request, count: Callable[[], Usage]) -> Callable[[], Usage]:
    """`count` that also adds the usage to the caller's tenant, once (see serve.access); the
    response or the end of its stream calls it."""
    done: list[bool] = []

    def tail() -> Usage:
        counted = count()
        if not done:
            done.append(True)
            add_tokens(request, counted.prompt_tokens, counted.completion_tokens)
        return counted

    return tail


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
    prompt = body.prompt
    # one prompt (a text or a list of token ids) or a list of them
    one = isinstance(prompt, str) or isinstance(prompt[0], int)
    prompts = [prompt] if one else list(prompt)
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
    add_tokens(request, tokens)
    if body.encoding_format == "base64":
        data = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        data = [v.tolist() for v in vectors]
    return EmbeddingResponse(
        data=[Embedding(index=i, embedding=e) for i, e in enumerate(data)],
        model=body.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
