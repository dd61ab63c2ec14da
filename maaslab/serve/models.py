"""The models a server holds: load them from model folders, run batches of requests through them.

Every model is a maaslab.zoo wrapper (the same object a notebook or a page calls), so a request
answered by the server gives the numbers `maaslab.auto.load(name).predict(...)` gives. A
language model (a zoo ChatModel: mini-llama, a Hugging Face folder) is a generator too, served
through an EngineService: maaslab.llm's engine on a thread of its own.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maaslab.errors import MaaslabError
from maaslab.llm.engine import EngineConfig
from maaslab.serve.batching import Batcher, ModelQueue
from maaslab.serve.config import ServeConfig
from maaslab.serve.llm_service import EngineService

# A served text may hold this many characters; MiniLM reads only its first 128 tokens anyway,
# so more is wasted bandwidth and tokenizer time (the library's own cap is far higher).
MAX_SERVED_TEXT_CHARS = 20_000
KINDS = ("digits", "sentiment", "generator", "embedder")
Result = dict[str, Any]  # output name -> per-request numpy array or list of strings


@dataclass
class ServedModel:
    """One model behind the server: its wrapper, where it runs and its request queue."""

    name: str  # the name in URLs (/v2/models/{name}) and in the OpenAI `model` field
    kind: str  # "digits" | "sentiment" | "generator" | "embedder"
    wrapper: Any  # the maaslab.zoo wrapper: predict / generate / complete / embed
    device: torch.device
    # Its request queue: a Batcher, or one that forwards to replicas elsewhere (ModelQueue);
    # None for models answered one request at a time.
    batcher: ModelQueue | None = None
    service: EngineService | None = None  # a language model's engine (generators: mini-llama)
    precision: str = "fp32"  # "fp16" when half precision on CUDA kept the answers
    load_seconds: float = 0.0
    version: str = "1"  # its version under `name` (a --models item is version 1)

    async def infer(
        self, payload: Any, rows: int, timeout: float | None, tenant: str | None = None
    ) -> Result:
        """Run one request of `tenant` through the model's queue (batched with others when
        allowed; tenants take turns, see maaslab.serve.batching)."""
        if self.batcher is None:
            raise MaaslabError(f"model {self.name!r} ({self.kind}) takes no tensor requests")
        return await self.batcher.submit(payload, rows, timeout, tenant)


# A served name's kind by its prefix: the shipped names, and folders named after them (an
# exported variant is written as "<model>-<variant>").
NAME_KINDS = {
    "digits": "digits",
    "sentiment": "sentiment",
    "mini-gpt": "generator",
    "mini-llama": "generator",
    "minilm": "embedder",
}


def kind_of(model: object) -> str:
    """A model's kind, one of KINDS: from its zoo wrapper's class, or from its served name.

    The server decides from the loaded wrapper; a client that only knows the name (the Serve
    page, the load generator) gets the same answer for the shipped names and their exports.
    A language model (ChatModel) is a generator: it takes the same requests as mini-gpt
    (/v1/completions and /v1/chat/completions); the server runs it through its engine.
    """
    if isinstance(model, str):
        for prefix, kind in NAME_KINDS.items():
            if model.startswith(prefix):
                return kind
        raise MaaslabError(f"unknown model {model!r}: expected one of the shipped names")
    from maaslab.zoo import (
        ChatModel,
        DigitsClassifier,
        SentimentModel,
        TextEmbedder,
        TextGenerator,
    )

    kinds = {
        DigitsClassifier: "digits",
        SentimentModel: "sentiment",
        TextGenerator: "generator",
        ChatModel: "generator",
        TextEmbedder: "embedder",
    }
    for cls, kind in kinds.items():
        if isinstance(model, cls):
            return kind
    raise MaaslabError(f"{type(model).__name__} is not a model the server can serve")


def served_name(spec: str) -> str:
    """The URL name of a --models item: a shipped name as is, a folder by its folder name."""
    from maaslab.auto import shipped

    return spec if shipped(spec) else Path(spec).expanduser().name


def check_served_texts(texts: object) -> list[str]:
    """The wrapper's own text checks plus the server's length cap."""
    from maaslab.models.encoder import check_texts

    texts = check_texts(texts)
    for i, text in enumerate(texts):
        if len(text) > MAX_SERVED_TEXT_CHARS:
            raise MaaslabError(
                f"text {i} holds {len(text):,} characters; the server takes at "
                f"most {MAX_SERVED_TEXT_CHARS:,} per text"
            )
    return texts


def _batched(
    call: Callable[[Any], Result],
    join: Callable[[list[Any]], Any],
    payloads: list[Any],
    sizes: list[int],
) -> list[Result | Exception]:
    # One call for the whole batch; if the wrapper refuses it (one bad request among good
    # ones), run each request alone so only the bad one gets the error.
    try:
        # inference_mode: no autograd bookkeeping at all (the wrappers' no_grad still tracks
        # versions); this runs in the batcher's thread, where the mode is thread-local.
        with torch.inference_mode():
            joined = call(join(payloads))
    except MaaslabError:
        out: list[Result | Exception] = []
        for payload in payloads:
            try:
                with torch.inference_mode():
                    out.append(call(payload))
            except Exception as err:
                out.append(err)
        return out
    bounds = np.cumsum([0, *sizes])
    return [{k: v[a:b] for k, v in joined.items()} for a, b in itertools.pairwise(bounds)]


def batch_function(wrapper: Any, kind: str) -> Callable[[list[Any]], Sequence[Any]]:
    """payloads -> one result each: pixel arrays (digits) or lists of texts (text models)."""
    if kind == "digits":

        def call(x: np.ndarray) -> Result:
            return {"probabilities": wrapper.predict(x).probabilities}

        return lambda ps: _batched(call, np.concatenate, ps, [len(p) for p in ps])
    if kind == "sentiment":

        def call(texts: list[str]) -> Result:
            pred = wrapper.predict(texts)
            return {"probabilities": pred.probabilities, "label": list(pred.labels)}

    elif kind == "embedder":

        def call(texts: list[str]) -> Result:
            return {"embedding": np.asarray(wrapper.embed(texts).embeddings, dtype=np.float32)}

    else:
        raise MaaslabError(f"{kind} models are not run in batches")
    return lambda ps: _batched(call, lambda p: [t for x in p for t in x], ps, [len(p) for p in ps])


def try_half(wrapper: Any, kind: str, texts: Sequence[str] | None = None) -> str:
    """Switch a text classifier on a GPU to fp16 if it keeps its answers; "fp16" or "fp32".

    fp16 on a GPU roughly halves the encoder's time, but it is kept only when it gives the
    same labels and probabilities within 0.01 on held-out reviews; digits stay fp32 (their
    inputs arrive as float32 and the model is too small to gain), and so does every CPU model.
    """
    if kind != "sentiment" or wrapper.device.type != "cuda":
        return "fp32"
    if texts is None:
        from maaslab.reviews import load_reviews

        texts = list(load_reviews("test").texts[:64])
    before = wrapper.predict(list(texts))
    wrapper.model.half()
    after = wrapper.predict(list(texts))
    same = tuple(before.labels) == tuple(after.labels)
    if same and float(np.abs(before.probabilities - after.probabilities).max()) < 0.01:
        return "fp16"
    wrapper.model.float()
    return "fp32"


def on(
    executor: ThreadPoolExecutor | None, fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> Any:
    """fn(*args, **kwargs) on the executor's thread and wait for it (here when None)."""
    if executor is None:
        return fn(*args, **kwargs)
    return executor.submit(fn, *args, **kwargs).result()


def load_models(
    config: ServeConfig,
    preloaded: dict[str, Any] | None = None,
    executor: ThreadPoolExecutor | None = None,
    engines: bool = True,
) -> dict[str, ServedModel]:
    """Load every --models item on the configured device, with a batcher for tensor models.

    Parameters
    ----------
    config : what to load and how to batch it.
    preloaded : served name -> wrapper already in memory (tests share one load across servers).
    executor : compute threads shared by every batcher; models are loaded on the first of them
        so torch's CPU thread team lives there alone (see maaslab.serve.batching). None: each
        batcher gets threads of its own and models load on the calling thread.
    engines : False leaves a language model without an engine (service None): Ray Serve's
        ingress, whose replicas run it, keeps only the tokenizer and metadata.

    A language model gets an EngineService instead of a batcher: `max_batch_size` bounds its
    running batch (sequences per step; 1 with --no-batching) and `max_queue` the sequences
    waiting for their first token.
    """
    from maaslab.device import get_device

    device = get_device(config.device)
    served: dict[str, ServedModel] = {}
    for spec in config.models:
        name = served_name(spec)
        if name in served:
            raise MaaslabError(f"two --models items are both served as {name!r}")
        wrapper = (preloaded or {}).get(name)
        served[name] = build_served(name, spec, config, device, executor, wrapper, engine=engines)
    return served


def build_served(
    name: str,
    spec: str | Path,
    config: ServeConfig,
    device: torch.device,
    executor: ThreadPoolExecutor | None,
    wrapper: Any = None,
    version: str = "1",
    engine: bool = True,
) -> ServedModel:
    """One model ready to serve as `name` (version `version`): loaded from `spec` (a shipped
    name or a folder) unless `wrapper` is given, with its batcher or engine (not started;
    engine=False: a language model gets none, see load_models)."""
    from maaslab.auto import load
    from maaslab.zoo import ChatModel

    started = time.perf_counter()
    if wrapper is None:
        wrapper = on(executor, load, spec, device=str(device))
    kind = kind_of(wrapper)
    precision = on(executor, try_half, wrapper, kind) if config.half_precision else "fp32"
    batcher = service = None
    label = name if version == "1" else f"{name}/{version}"
    if isinstance(wrapper, ChatModel):  # a language model: its engine, started with the app
        if engine:
            service = EngineService.for_model(
                label,
                wrapper.model,
                wrapper.eos_token_ids,
                EngineConfig(max_running=config.effective_batch_size),
                config.max_queue,
            )
    elif kind != "generator":
        batcher = Batcher(
            label,
            batch_function(wrapper, kind),
            max_batch_size=config.effective_batch_size,
            max_delay_s=config.effective_delay_s,
            max_queue=config.max_queue,
            instances=config.instances,
            executor=executor,
        )
    return ServedModel(
        name,
        kind,
        wrapper,
        torch.device(wrapper.device),
        batcher,
        service,
        precision,
        time.perf_counter() - started,
        version,
    )
