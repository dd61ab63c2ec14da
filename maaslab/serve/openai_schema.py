"""Request and response bodies of the OpenAI-compatible routes (see maaslab.serve.openai_api).

They follow OpenAI's API reference field by field, so FastAPI's /openapi.json describes what the
server accepts and answers, and schemathesis can check every answer against it.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from maaslab.models.gpt import MAX_NEW_TOKENS
from maaslab.serve.errors import ERROR_RESPONSES as SERVER_ERRORS

MAX_CHOICES = 8  # choices per request (n x prompts): each one is a separate sampling run
MAX_STOPS = 4  # stop strings per request, as OpenAI allows
MAX_EMBED_INPUTS = 256  # texts per embeddings request; more belongs in several requests
COMPLETION_TOKENS = 16  # /v1/completions default max_tokens, as OpenAI's
CHAT_TOKENS = 128  # /v1/chat/completions default max_tokens (OpenAI's is "until done")
MAX_PROMPT_IDS = 65_536  # token ids in one prompt; a model's context refuses far fewer

Seed = Annotated[int, Field(ge=0, le=2**63 - 1, description="same seed -> same text")]
TokenId = Annotated[int, Field(ge=0, lt=2**31, description="a token id of the model's vocabulary")]
TokenIds = Annotated[list[TokenId], Field(min_length=1, max_length=MAX_PROMPT_IDS)]
Stop = Annotated[str, Field(min_length=1)]


# --- request and response bodies ---------------------------------------------------------------


class StreamOptions(BaseModel):
    """Streaming options: `include_usage` adds a last chunk with the usage counts."""

    include_usage: bool = False


class Sampling(BaseModel):
    """Parameters shared by completions and chat completions."""

    model: str = Field(description="a served generator model, e.g. mini-gpt or mini-llama")
    temperature: float = Field(1.0, ge=0, le=2, description="0 = always the likeliest token")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass, (0, 1]")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="choices to sample")
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = None
    seed: Seed | None = None
    stream: bool = Field(False, description="send server-sent events as tokens are sampled")
    stream_options: StreamOptions | None = None
    ignore_eos: bool = Field(
        False,
        description="keep sampling past the end-of-text token until max_tokens (a language "
        "model; vLLM's extension, for benchmarks that need exact output lengths)",
    )


class CompletionRequest(Sampling):
    """POST /v1/completions: continue a prompt (or each of a list of prompts)."""

    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_CHOICES)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_CHOICES)]
    ) = Field(
        description="a text, a list of texts, or (a language model) a prompt of token ids "
        "or a list of them, as OpenAI's API allows"
    )
    max_tokens: int | None = Field(
        COMPLETION_TOKENS,
        ge=1,
        le=MAX_NEW_TOKENS,
        description="tokens to sample at most (characters for mini-gpt)",
    )


class TextPart(BaseModel):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of a chat."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None


class ChatRequest(Sampling):
    """POST /v1/chat/completions: answer a chat as the assistant."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(
        None,
        ge=1,
        le=MAX_NEW_TOKENS,
        description=f"tokens to sample (default {CHAT_TOKENS}, within the context)",
    )


class EmbeddingRequest(BaseModel):
    """POST /v1/embeddings: embed a text or a list of texts."""

    model: str = Field(description="a served embedder model, e.g. minilm-embed")
    input: str | Annotated[list[str], Field(min_length=1, max_length=MAX_EMBED_INPUTS)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="must equal the model's width if given")


class Usage(BaseModel):
    """Token counts of a request (characters for mini-gpt, the model's tokens otherwise)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class EmbeddingUsage(BaseModel):
    """Word pieces MiniLM read ([CLS] and [SEP] included, after truncation)."""

    prompt_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    """One sampled continuation."""

    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class CompletionResponse(BaseModel):
    """OpenAI's text_completion object."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    """The assistant's answer."""

    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    """One sampled answer."""

    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class ChatResponse(BaseModel):
    """OpenAI's chat.completion object."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class Embedding(BaseModel):
    """One text's embedding: floats, or base64 of little-endian float32 bytes."""

    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    """OpenAI's embeddings list."""

    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ModelCard(BaseModel):
    """One served model."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """The served models."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    """What was wrong, in words, with OpenAI's error fields."""

    message: str
    type: str  # "invalid_request_error" or "not_found_error"
    param: str | None = None  # the request field at fault, when there is one
    code: int  # the HTTP status


class ErrorBody(BaseModel):
    """OpenAI's error shape: the openai client shows `error.message` in its exception."""

    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "a parameter is missing, out of range or of the "
        "wrong type, or the model is of the wrong kind",
    },
    404: {"model": ErrorBody, "description": "the model is not served"},
    # Refused before the route runs (API key, body size) or by the queue: the server's shape.
    **{code: SERVER_ERRORS[code] for code in (401, 413, 503, 504)},
    "4XX": {"model": ErrorBody, "description": "any other refusal of the request"},
}
# One server-sent event (Open API 3.1: the schema of an event stream describes each event).
EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "string",
            "description": "an OpenAI chunk object as JSON (text_completion or "
            "chat.completion.chunk), an error object, or [DONE] at the end",
        },
        "event": {"type": "string"},
    },
}
STREAM = {
    "description": "JSON, or with stream=true server-sent events `data: {chunk}`, then "
    "`data: [DONE]`",
    "content": {"text/event-stream": {"schema": EVENT}},
}
