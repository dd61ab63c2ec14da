"""Language models over real HTTP: the openai client, unmodified, gets from a Llama or GPT-2
folder served through the engine the tokens the engine gives in process for the same seed;
streams go token by token, full queues answer 503, a client that leaves frees its KV blocks,
and the Prometheus metrics follow the engine.

The models are tiny random ones built here (a byte-level BPE tokenizer with mini-llama's special
tokens and chat template; Llama and GPT-2 weights), so the suite needs no trained model; the
shipped mini-llama is tested too once its folder exists.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
from openai import AsyncOpenAI, OpenAI

from maaslab.auto import is_language_model, load
from maaslab.llm.engine import EngineConfig, LLMEngine
from maaslab.llm.sequence import SamplingParams
from maaslab.paths import MODELS_DIR
from maaslab.serve.models import kind_of
from maaslab.zoo import ChatModel, TextDecoder

SPECIAL = ["<|pad|>", "<|begin|>", "<|end_of_text|>", "<|end|>"]
ROLES = ["<|system|>", "<|user|>", "<|assistant|>"]
TEMPLATE = (  # mini-llama's (maaslab.subwords.CHAT_TEMPLATE)
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. len() returns the number of items.",
    "Café, naïve, résumé: accents and “quotes”; 日本語 and 🙂 are spelled in bytes.",
    "def add(x, y):\n    return x + y\n\nfor item in range(10):\n    print(item)\n",
] * 4
CONTEXT = {"tiny-llama": 256, "tiny-gpt2": 128}
PROMPT = "The quick brown fox"
LONG_PROMPT = "def add(x, y): return x + y. The quick brown fox jumps over the lazy dog, twice."


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL + ROLES,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="<|begin|> $A", special_tokens=[("<|begin|>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|begin|>",
        eos_token="<|end_of_text|>",
        pad_token="<|pad|>",
        additional_special_tokens=SPECIAL[3:] + ROLES,
        clean_up_tokenization_spaces=False,
    )


def save_tiny(folder: Path, family: str) -> Path:
    from transformers import (
        GenerationConfig,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    if family == "llama":
        tokenizer.chat_template = TEMPLATE
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=CONTEXT["tiny-llama"],
            **ids,
        )
        model = LlamaForCausalLM(config)
    else:  # no chat template: a plain text model
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=64,
            n_layer=2,
            n_head=4,
            n_positions=CONTEXT["tiny-gpt2"],
            **ids,
        )
        model = GPT2LMHeadModel(config)
    with torch.no_grad():  # the special tokens' logits are 0, so greedy runs never end early
        model.lm_head.weight[:4] = 0
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=[2, 3], pad_token_id=0)
    tokenizer.model_max_length = config.max_position_embeddings
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("language-models")
    return {
        "tiny-llama": save_tiny(root / "tiny-llama", "llama"),
        "tiny-gpt2": save_tiny(root / "tiny-gpt2", "gpt2"),
    }


@pytest.fixture(scope="module")
def lm(start_server, folders):
    return start_server(models=tuple(str(f) for f in folders.values()))


@pytest.fixture(scope="module")
def client(lm) -> OpenAI:
    return OpenAI(base_url=lm.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def engines(folders) -> dict[str, LLMEngine]:
    """The same models in process, through the engine alone."""
    return {name: LLMEngine.from_folder(f, EngineConfig()) for name, f in folders.items()}


@pytest.fixture(scope="module")
def tokenizer(folders):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folders["tiny-llama"])


def reference(engine, prompts, params) -> list[list[int]]:
    return engine.generate(prompts, params)


def text_of(tokenizer, tokens: list[int]) -> str:
    return tokenizer.decode(tokens, skip_special_tokens=True)


def seeded(n: int, seed: int, max_tokens: int, temperature=0.8, top_p=0.9) -> list:
    return [
        SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed + j)
        for j in range(n)
    ]


def scrape_text(server) -> str:
    return httpx.get(server.url + "/metrics").text


def scrape(url: str, model: str = "tiny-llama") -> dict[str, float]:
    """The maaslab_llm_* samples of `model` on /metrics, by name."""
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        m = re.match(r'(maaslab_llm_\w+)\{(?:le="[^"]*",)?model="([^"]*)"\} (\S+)', line)
        if m and m.group(2) == model and "_bucket" not in m.group(1):
            out[m.group(1)] = float(m.group(3))
    return out


def wait_for(condition, seconds: float = 10.0) -> None:
    """Poll `condition` until it holds; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def service(server, name: str = "tiny-llama"):
    return server.app.state.models[name].service


def test_language_models_load_by_folder_and_are_listed(client, folders, lm):
    assert {"tiny-llama", "tiny-gpt2"} <= {m.id for m in client.models.list()}
    llama, gpt2 = load(folders["tiny-llama"]), load(folders["tiny-gpt2"])
    assert isinstance(llama, ChatModel) and kind_of(llama) == kind_of("mini-llama") == "generator"
    assert (llama.context, gpt2.context) == (256, 128) and llama.eos_token_ids == (2, 3)
    assert llama.chat_template and not gpt2.chat_template
    assert lm.app.state.models["tiny-gpt2"].service is not None
    # what the server checks, before loading anything, to leave a core to its event loop
    assert is_language_model("mini-llama") and is_language_model(folders["tiny-gpt2"])
    assert not is_language_model("mini-gpt") and not is_language_model("digits-cnn")
    assert not is_language_model(folders["tiny-llama"] / "config.json")  # a file, not a folder
    assert not is_language_model(MODELS_DIR / "digits-cnn")


def test_completions_equal_the_engine_in_process(client, engines, tokenizer):
    ids = tokenizer(PROMPT)["input_ids"]
    for name in ("tiny-llama", "tiny-gpt2"):
        out = client.completions.create(model=name, prompt=PROMPT, max_tokens=20, temperature=0)
        (want,) = reference(engines[name], [ids], SamplingParams(max_tokens=20, temperature=0))
        assert out.choices[0].text == text_of(tokenizer, want)
        assert out.choices[0].finish_reason == "length"
        assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (len(ids), 20)
    # n seeded choices: choice j is the engine's draw with seed + j.
    out = client.completions.create(
        model="tiny-llama", prompt=PROMPT, max_tokens=12, n=3, seed=5, temperature=0.8, top_p=0.9
    )
    want = reference(engines["tiny-llama"], [ids] * 3, seeded(3, 5, 12))
    texts = [c.text for c in sorted(out.choices, key=lambda c: c.index)]
    assert texts == [text_of(tokenizer, w) for w in want] and len(set(texts)) == 3
    assert out.usage.completion_tokens == 36 and out.usage.prompt_tokens == len(ids)
    # Several prompts: n choices each, in prompt order.
    two = client.completions.create(
        model="tiny-llama", prompt=[PROMPT, "x"], max_tokens=4, temperature=0, n=2
    )
    assert len(two.choices) == 4 and two.choices[0].text == two.choices[1].text


def test_chat_renders_the_models_chat_template(client, engines, tokenizer):
    messages = [
        {"role": "developer", "content": "You explain Python."},
        {"role": "user", "content": "What does len do?"},
    ]
    out = client.chat.completions.create(
        model="tiny-llama", messages=messages, max_completion_tokens=15, seed=2
    )
    rendered = [{"role": "system", "content": messages[0]["content"]}, messages[1]]
    ids = tokenizer.apply_chat_template(rendered, add_generation_prompt=True, return_dict=False)
    assert tokenizer.decode(ids).endswith("<|end|>\n<|assistant|>\n")
    (want,) = reference(
        engines["tiny-llama"], [ids], SamplingParams(max_tokens=15, temperature=1.0, seed=2)
    )
    assert out.choices[0].message.content == text_of(tokenizer, want)
    assert out.usage.prompt_tokens == len(ids) and out.usage.completion_tokens == 15
    # Left out, max_tokens is chat's default cut to what the context leaves.
    long = [{"role": "user", "content": LONG_PROMPT * 5}]
    room = CONTEXT["tiny-llama"] - len(
        tokenizer.apply_chat_template(long, add_generation_prompt=True, return_dict=False)
    )
    out = client.chat.completions.create(model="tiny-llama", messages=long, temperature=0)
    assert 0 < room < 128 and out.usage.completion_tokens == room
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        client.chat.completions.create(model="tiny-gpt2", messages=messages)


def test_a_stream_sends_each_tokens_text_as_soon_as_it_is_whole(client, engines, tokenizer):
    ids = tokenizer(PROMPT)["input_ids"]
    # Greedy: this random model's sampled text is mostly stray bytes, which wait for more.
    (want,) = reference(engines["tiny-llama"], [ids], SamplingParams(60, temperature=0))
    decoder = TextDecoder(tokenizer)
    pieces = [decoder.push(t) for t in want[:-1]] + [decoder.push(want[-1]) + decoder.flush()]
    chunks = list(
        client.completions.create(
            model="tiny-llama",
            prompt=PROMPT,
            max_tokens=60,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert texts == [p for p in pieces if p]  # a chunk per token that completes some text
    assert len(texts) > 30 and "".join(texts) == text_of(tokenizer, want)
    assert chunks[-2].choices[0].finish_reason == "length" and chunks[-2].choices[0].text == ""
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 60
    # Chat: the role first for each choice; n choices interleave as their tokens come.
    body = {
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "temperature": 0,
        "n": 2,
        "stream": True,
    }
    with httpx.stream("POST", f"{client.base_url}chat/completions", json=body) as r:
        events = [e for e in r.iter_text() for e in e.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    parsed = [json.loads(e[6:])["choices"][0] for e in events[:-1]]
    for index in (0, 1):
        mine = [c for c in parsed if c["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert mine[-1]["finish_reason"] == "length"
    assert {c["index"] for c in parsed[:4]} == {0, 1}  # not one choice after the other


def test_the_decoder_never_splits_a_character(tokenizer):
    text = "Grüße: Ω ≈ √2, 中文 🚀"  # unseen in training: spelled in byte tokens
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = TextDecoder(tokenizer)
    pieces = [decoder.push(t) for t in ids]
    assert "".join(pieces) + decoder.flush() == text
    assert "" in pieces and not any("\ufffd" in p for p in pieces)  # some bytes waited


def test_stop_strings_cut_the_text_and_free_the_sequence(
    client, lm, engines, tokenizer, monkeypatch
):
    ids = tokenizer(PROMPT)["input_ids"]
    (want,) = reference(engines["tiny-llama"], [ids], SamplingParams(max_tokens=40, temperature=0))
    full = text_of(tokenizer, want)
    stop = full[12:15]
    cut = full.index(stop)
    decoder = TextDecoder(tokenizer)
    seen = list(itertools.accumulate(decoder.push(t) for t in want))  # text after each token
    used = next(t for t, text in enumerate(seen, 1) if stop in text)  # tokens until it is whole
    svc = service(lm)
    real, aborted = svc.engine.step, svc.aborted
    monkeypatch.setattr(svc.engine, "step", lambda: time.sleep(0.01) or real())  # a slower model
    for stream in (False, True):
        out = client.completions.create(
            model="tiny-llama",
            prompt=PROMPT,
            max_tokens=40,
            temperature=0,
            stop=[stop, "\x00never"],
            stream=stream,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        )
        if stream:
            chunks = list(out)
            text = "".join(c.choices[0].text for c in chunks if c.choices)
            finish, tokens = chunks[-2].choices[0].finish_reason, chunks[-1].usage
        else:
            text, finish, tokens = out.choices[0].text, out.choices[0].finish_reason, out.usage
        assert text == full[:cut] and finish == "stop"
        assert tokens.completion_tokens == used < 40  # sampled up to the stop's end, no more
    # The rest of each was never computed: both left the engine early, with their blocks.
    wait_for(lambda: svc.aborted == aborted + 2 and svc.stats.blocks.used == 0)


def test_n_choices_share_their_prompts_blocks(client, lm, engines, tokenizer):
    prompt = LONG_PROMPT + " (shared)"
    ids = tokenizer(prompt)["input_ids"]
    full_blocks = (len(ids) - 1) // EngineConfig().block_size
    before = service(lm).stats.blocks
    out = client.completions.create(
        model="tiny-llama", prompt=prompt, max_tokens=10, n=3, seed=1, temperature=1.0
    )
    after = service(lm).stats.blocks
    assert full_blocks >= 2
    assert after.prefix_hits - before.prefix_hits == 2 * full_blocks  # each sibling, each block
    want = reference(engines["tiny-llama"], [ids] * 3, seeded(3, 1, 10, temperature=1.0, top_p=1))
    texts = [c.text for c in sorted(out.choices, key=lambda c: c.index)]
    assert texts == [text_of(tokenizer, w) for w in want]
    assert scrape(lm.url)["maaslab_llm_prefix_cache_hit_rate"] > 0


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"prompt": "word " * 400, "max_tokens": 4}, "more than the model's context of 256"),
        ({"prompt": PROMPT, "max_tokens": 300}, "more than the model's context of 256"),
        ({"prompt": PROMPT, "temperature": 3}, "temperature"),
        ({"prompt": PROMPT, "top_p": 0}, "top_p"),
        ({"prompt": ["a", "b", "c"], "n": 3, "max_tokens": 4}, "at most 8"),
        ({"prompt": "x" * 100_001}, "at most 100,000 characters"),
    ],
)
def test_bad_requests_are_400s_with_a_message(lm, body, words):
    r = httpx.post(lm.url + "/v1/completions", json={"model": "tiny-llama", **body}, timeout=30)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert words in error["message"] and error["code"] == 400
    assert error["type"] == "invalid_request_error"


def test_a_full_queue_answers_503_with_retry_after(start_server, folders, monkeypatch):
    srv = start_server(models=(str(folders["tiny-llama"]),), max_batch_size=1, max_queue=1)
    svc = service(srv)
    go, real = threading.Event(), svc.engine.step
    monkeypatch.setattr(svc.engine, "step", lambda: go.wait(30) and real())
    body = {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": 5, "temperature": 0}
    first: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: first.append(httpx.post(srv.url + "/v1/completions", json=body, timeout=60))
    )
    waiting.start()
    try:
        deadline = time.monotonic() + 10
        while svc.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = httpx.post(
            srv.url + "/v1/chat/completions",
            timeout=30,
            json={"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "overloaded" in r.json()["error"]["message"]
    finally:
        go.set()
        waiting.join(60)
    assert first[0].status_code == 200 and first[0].json()["usage"]["completion_tokens"] == 5


def test_a_request_waiting_for_its_first_token_is_given_up_at_the_timeout_or_when_its_client_leaves(
    start_server, folders, monkeypatch
):
    srv = start_server(models=(str(folders["tiny-llama"]),), request_timeout_s=1)
    svc = service(srv)
    go, real = threading.Event(), svc.engine.step
    monkeypatch.setattr(svc.engine, "step", lambda: go.wait(30) and real())  # a stuck engine
    body = {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": 5}
    try:
        r = httpx.post(srv.url + "/v1/completions", json=body | {"stream": True}, timeout=30)
        assert r.status_code == 504 and "did not finish within 1 s" in r.json()["error"]["message"]
        wait_for(lambda: svc.depth == 0)
        with pytest.raises(httpx.ReadTimeout):  # this client leaves before the server's timeout
            httpx.post(srv.url + "/v1/completions", json=body, timeout=0.3)
        wait_for(lambda: svc.depth == 0)
        left = re.search(r'maaslab_requests_total\{[^}]*code="499"[^}]*\} (\S+)', scrape_text(srv))
        assert left and float(left.group(1)) == 1
    finally:
        go.set()
    wait_for(lambda: svc.stats.blocks.used == 0 and svc.stats.running == 0)


def test_a_client_that_leaves_midstream_frees_its_blocks(lm, monkeypatch):
    svc = service(lm)
    real = svc.engine.step
    monkeypatch.setattr(svc.engine, "step", lambda: time.sleep(0.01) or real())
    before = scrape(lm.url)
    body = {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": 200, "stream": True}
    with httpx.stream("POST", lm.url + "/v1/completions", json=body | {"temperature": 0}) as r:
        for count, _ in enumerate(r.iter_lines()):
            if count == 6:
                assert scrape(lm.url)["maaslab_llm_kv_blocks_used"] > 0
                break  # the client leaves: the connection closes here
    freed = {"maaslab_llm_kv_blocks_used": 0, "maaslab_llm_running_sequences": 0}
    wait_for(lambda: freed.items() <= scrape(lm.url).items())
    now = scrape(lm.url)
    assert now["maaslab_llm_aborted_total"] == before["maaslab_llm_aborted_total"] + 1
    generated = (
        now["maaslab_llm_generated_tokens_total"] - before["maaslab_llm_generated_tokens_total"]
    )
    assert generated < 100  # far from the 200 asked for


def test_16_concurrent_streams_all_complete_with_the_engines_tokens(lm, engines, tokenizer):
    prompts = [f"{PROMPT} number {i}" + " and more" * (i % 5) for i in range(16)]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    params = [
        SamplingParams(max_tokens=48, temperature=0.9, top_p=0.95, seed=100 + i) for i in range(16)
    ]
    started = time.perf_counter()
    want = reference(engines["tiny-llama"], ids, params)
    in_process = time.perf_counter() - started

    async def one(client: AsyncOpenAI, i: int) -> str:
        stream = await client.completions.create(
            model="tiny-llama",
            prompt=prompts[i],
            max_tokens=48,
            temperature=0.9,
            top_p=0.95,
            seed=100 + i,
            stream=True,
        )
        return "".join([c.choices[0].text async for c in stream if c.choices])

    async def all_16() -> list[str]:
        async with AsyncOpenAI(base_url=lm.url + "/v1", api_key="unused", max_retries=0) as c:
            return await asyncio.gather(*(one(c, i) for i in range(16)))

    started = time.perf_counter()
    texts = asyncio.run(all_16())
    over_http = time.perf_counter() - started
    assert texts == [text_of(tokenizer, w) for w in want]
    tokens = sum(len(w) for w in want)
    print(
        f"16 streams, {tokens} tokens: {tokens / over_http:.0f} tokens/s over HTTP, "
        f"{tokens / in_process:.0f} tokens/s in process"
    )


def test_the_prometheus_metrics_follow_the_engine(client, lm):
    before = scrape(lm.url)
    out = client.completions.create(model="tiny-llama", prompt="x", max_tokens=7, temperature=0)
    after = scrape(lm.url)
    moved = {k: after[k] - before.get(k, 0) for k in after}
    assert out.usage.completion_tokens == 7
    assert moved["maaslab_llm_time_to_first_token_seconds_count"] == 1
    assert moved["maaslab_llm_inter_token_latency_seconds_count"] == 6
    assert moved["maaslab_llm_e2e_request_latency_seconds_count"] == 1
    assert moved["maaslab_llm_generated_tokens_total"] == 7
    assert after["maaslab_llm_time_to_first_token_seconds_sum"] > before.get(
        "maaslab_llm_time_to_first_token_seconds_sum", 0
    )
    blocks = EngineConfig().num_blocks
    assert after["maaslab_llm_kv_blocks_used"] + after["maaslab_llm_kv_blocks_free"] == blocks
    assert after["maaslab_llm_running_sequences"] == after["maaslab_llm_waiting_sequences"] == 0
    assert "maaslab_llm_preemptions_total" in after
    queue = httpx.get(lm.url + "/metrics").text
    assert 'maaslab_queue_depth{model="tiny-llama"} 0.0' in queue


def test_an_engine_failure_is_a_500_before_the_first_token_and_an_event_after(lm, monkeypatch):
    svc, calls = service(lm), []
    real = svc.engine.step

    def fails(after: int):
        def step():
            calls.append(1)
            if len(calls) > after:
                raise RuntimeError("the engine broke")
            return real()

        return step

    # ignore_eos: a sampled end-of-text would end the answer before the failing step (it did,
    # once in about 25 runs, with this random-weight model)
    body = {
        "model": "tiny-llama",
        "prompt": PROMPT,
        "max_tokens": 5,
        "stream": True,
        "ignore_eos": True,
    }
    monkeypatch.setattr(svc.engine, "step", fails(0))
    reply = httpx.post(lm.url + "/v1/completions", json=body, timeout=30)
    assert reply.status_code == 500 and reply.json()["error"]["type"] == "server_error"
    calls.clear()
    monkeypatch.setattr(svc.engine, "step", fails(2))
    reply = httpx.post(lm.url + "/v1/completions", json=body, timeout=30)
    events = [e for e in reply.text.split("\n\n") if e]
    assert reply.status_code == 200 and events[-1] != "data: [DONE]"
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and "the engine broke" in error["message"]
    monkeypatch.setattr(svc.engine, "step", real)
    assert httpx.post(lm.url + "/v1/completions", json=body, timeout=30).status_code == 200


def test_the_drain_deadline_ends_a_late_stream_and_stops_the_engine(start_server, folders):
    srv = start_server(
        models=(str(folders["tiny-llama"]),), request_timeout_s=0.5, drain_timeout_s=0.5
    )
    svc = service(srv)
    svc.engine.eos_token_ids = ()  # a random model may end its text early: the stream must not
    real = svc.engine.step
    svc.engine.step = lambda: time.sleep(0.02) or real()
    body = {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": 200, "stream": True}
    with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=30) as r:
        events = []
        for line in r.iter_lines():
            if line:
                events.append(line)
            if len(events) == 2:
                srv.uvicorn.should_exit = True  # as SIGTERM does
    srv.thread.join(30)
    assert not srv.thread.is_alive() and not svc._thread.is_alive()
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["type"] == "server_shutdown" and "data: [DONE]" not in events
    assert 3 <= len(events) < 150 and srv.app.state.drain.cut == 1
    assert svc.engine.stats().blocks.used == 0  # aborted, or failed at the engine's stop


def test_python_m_maaslab_serve_serves_a_language_model_folder(spawn_server, folders, engines):
    srv = spawn_server("--models", str(folders["tiny-gpt2"]))
    r = httpx.post(
        srv.url + "/v1/completions",
        json={"model": "tiny-gpt2", "prompt": "x", "max_tokens": 6, "temperature": 0},
        timeout=60,
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folders["tiny-gpt2"])
    (want,) = reference(
        engines["tiny-gpt2"], [tokenizer("x")["input_ids"]], SamplingParams(6, temperature=0)
    )
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == text_of(tokenizer, want)


@pytest.mark.skipif(
    not (MODELS_DIR / "mini-llama" / "model.safetensors").is_file(),
    reason="mini-llama is not built yet (python -m maaslab assets mini-llama)",
)
def test_the_shipped_mini_llama_chats_as_its_engine_does(start_server):
    srv = start_server(models=("mini-llama",))
    wrapper = srv.app.state.models["mini-llama"].wrapper
    client = OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    messages = [{"role": "user", "content": "What does json.dumps do?"}]
    out = client.chat.completions.create(
        model="mini-llama", messages=messages, max_tokens=40, temperature=0
    )
    engine = LLMEngine.from_folder(MODELS_DIR / "mini-llama")
    (want,) = engine.generate([wrapper.chat_ids(messages)], SamplingParams(40, temperature=0))
    assert out.choices[0].message.content == wrapper.tokenizer.decode(
        want, skip_special_tokens=True
    )
    assert out.choices[0].finish_reason == ("stop" if len(want) < 40 else "length")


# --- token-id prompts, ignore_eos, and the streaming load generator ---------------------------


def test_a_prompt_of_token_ids_gives_what_its_text_gives(client, tokenizer, server):
    ids = tokenizer.encode(PROMPT)
    by_text = client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=9, seed=4)
    by_ids = client.completions.create(model="tiny-llama", prompt=ids, max_tokens=9, seed=4)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == by_text.usage.prompt_tokens == len(ids)
    two = client.completions.create(model="tiny-llama", prompt=[ids, ids[:3]], max_tokens=9, seed=4)
    assert two.choices[0].text == by_text.choices[0].text and len(two.choices) == 2
    with pytest.raises(openai.BadRequestError, match=r"token ids must be in 0\.\.\d+"):
        client.completions.create(model="tiny-llama", prompt=[5, 10**6], max_tokens=2)
    text_only = OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="reads text, not token ids"):
        text_only.completions.create(model="mini-gpt", prompt=[5, 6], max_tokens=2)


def test_ignore_eos_samples_past_the_end_of_text_token(client, engines, tokenizer):
    ids = tokenizer.encode(PROMPT)
    engine = engines["tiny-llama"]

    def params(seed: int, ignore: bool) -> SamplingParams:
        return SamplingParams(max_tokens=60, temperature=2.0, seed=seed, ignore_eos=ignore)

    # a seed whose sampled text reaches the end-of-text token before max_tokens
    seed = next(s for s in range(200) if len(reference(engine, [ids], params(s, False))[0]) < 60)
    (ended,) = reference(engine, [ids], params(seed, False))
    (whole,) = reference(engine, [ids], params(seed, True))
    assert len(whole) == 60 and whole[: len(ended) - 1] == ended[:-1]
    ask = {"model": "tiny-llama", "prompt": ids, "max_tokens": 60, "temperature": 2.0}
    short = client.completions.create(**ask, seed=seed)
    assert short.usage.completion_tokens == len(ended) and short.choices[0].finish_reason == "stop"
    out = client.completions.create(**ask, seed=seed, extra_body={"ignore_eos": True})
    assert out.usage.completion_tokens == 60 and out.choices[0].finish_reason == "length"
    assert out.choices[0].text == text_of(tokenizer, whole)


def test_the_load_generator_streams_a_workload_and_counts_every_token(lm, folders):
    from maaslab.llm.measure import Workload
    from maaslab.serve.llm_load import run_llm_load

    work = Workload(requests=6, prompt_tokens=(4, 20), output_tokens=(5, 30), vocab=(10, 300))
    asked = sum(n for _, _, n in work.draw())
    burst = run_llm_load(lm.url, "tiny-llama", work, slo=(60.0, 10.0))
    closed = run_llm_load(lm.url, "tiny-llama", work, concurrency=2, slo=(1e-9, 1e-9))
    for result in (burst, closed):
        assert len(result.timings) == 6 and not result.refused and not result.errors
        assert result.report.output_tokens == asked and result.report.requests == 6
        for t in result.timings:
            assert t.ttft <= t.e2e and t.token_times == sorted(t.token_times)
            assert t.tpot <= t.e2e
    assert burst.mode == "open loop, all at once" and "6/6 streams done" in burst.line()
    assert closed.report.goodput == 0  # nobody meets a 1 ns SLO
    loose = burst.report
    assert loose.goodput == pytest.approx(6 / loose.seconds)  # everyone meets a 60 s SLO
    poisson = Workload(
        requests=4, prompt_tokens=(4, 8), output_tokens=(3, 3), rate=20.0, vocab=(10, 300)
    )
    paced = run_llm_load(lm.url, "tiny-llama", poisson)
    assert paced.mode == "open loop, Poisson 20 req/s" and paced.report.output_tokens == 12
    # Each request leaves at its arrival time, never before (a busy machine can only delay it,
    # so no timed upper bound here): the open loop paces, it does not send all at once.
    sent = sorted(t.sent - paced.started for t in paced.timings)
    arrivals = [a for a, _, _ in poisson.draw()]
    assert arrivals[-1] > 0.05 and len(sent) == len(arrivals)
    assert all(s >= a - 1e-3 for s, a in zip(sent, arrivals, strict=True)), (sent, arrivals)


def test_the_load_generator_counts_refusals_and_says_what_failed(start_server, folders):
    from maaslab.llm.measure import Workload
    from maaslab.serve.llm_load import run_llm_load

    srv = start_server(models=(str(folders["tiny-llama"]),), max_queue=1)
    work = Workload(requests=12, prompt_tokens=(4, 8), output_tokens=(40, 40), vocab=(10, 300))
    crowded = run_llm_load(srv.url, "tiny-llama", work)
    assert crowded.refused >= 1 and len(crowded.timings) + crowded.refused == 12
    assert "refused (503)" in crowded.line()
    too_long = Workload(
        requests=1, prompt_tokens=(250, 250), output_tokens=(40, 40), vocab=(10, 300)
    )
    failed = run_llm_load(srv.url, "tiny-llama", too_long)
    assert failed.report is None and sum(failed.errors.values()) == 1
    (message,) = failed.errors
    assert message.startswith("HTTP 400") and "context of 256 tokens" in message
    nobody = run_llm_load("http://127.0.0.1:9", "tiny-llama", too_long)
    assert nobody.errors == {"ConnectError": 1} and "1 failed" in nobody.line()


def test_cancelling_a_load_test_ends_its_streams_and_frees_the_engine(lm):
    from maaslab.llm.measure import Workload
    from maaslab.serve.llm_load import run_llm_load

    def three(seed: int) -> Workload:
        return Workload(3, (4, 8), (5, 200), vocab=(10, 300), seed=seed)

    # a workload of one short answer and two long ones, sent at once
    seed = next(
        s
        for s in range(500)
        if sorted(n for _, _, n in three(s).draw())[:2]
        in ([a, b] for a in range(5, 20) for b in range(150, 201))
    )
    cancel = threading.Event()
    result = run_llm_load(
        lm.url, "tiny-llama", three(seed), progress=lambda *_: cancel.set(), cancel=cancel
    )
    # the short one ended and set it: the two long ones in flight ended at their next chunk
    assert len(result.timings) == 1 and result.cancelled == 2 and result.sent == 1
    assert "2 cancelled" in result.line()
    wait_for(lambda: not service(lm).engine.has_work)  # the server aborted the dropped streams

    cancel.clear()  # closed loop: the requests not sent yet are cancelled too
    work = Workload(requests=6, prompt_tokens=(4, 8), output_tokens=(8, 8), vocab=(10, 300))
    result = run_llm_load(
        lm.url, "tiny-llama", work, concurrency=1, progress=lambda *_: cancel.set(), cancel=cancel
    )
    assert len(result.timings) == 1 and result.cancelled == 5


def test_tenants_take_turns_into_the_engine_and_a_flood_fills_only_its_own_queue(folders):
    # Tenant A has 10 requests queued when B sends one: B's first token comes after a few of
    # A's (the engine takes 2 at a time), not after all ten. The engine's first two steps are
    # held until the test has queued what it means to, so the order is the same every run.
    from maaslab.serve.batching import Overloaded
    from maaslab.serve.llm_service import EngineService

    engine = LLMEngine.from_folder(folders["tiny-llama"], EngineConfig(max_running=2))
    params = [SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)]
    firsts: list[str] = []
    entered = [threading.Event(), threading.Event()]  # the engine is inside step 1 / step 2
    release = [threading.Event(), threading.Event()]
    real, steps = engine.step, itertools.count()

    def held_step():
        k = next(steps)
        if k < 2:
            entered[k].set()
            release[k].wait(30)
        return real()

    engine.step = held_step

    async def first(gen, who: str) -> None:
        await gen.wait_first()
        firsts.append(who)
        while not gen.finished:
            await gen.next()

    async def main() -> None:
        svc = EngineService("tiny", engine, max_queue=10)
        waits = [first(svc.submit([[5, 6, 7, 0]], params, tenant="A"), "a0")]
        await asyncio.to_thread(entered[0].wait, 30)  # a0 is in the engine, step 1 held
        waits += [
            first(svc.submit([[5, 6, 7, i]], params, tenant="A"), f"a{i}") for i in range(1, 10)
        ]
        with pytest.raises(Overloaded, match="A's queue full"):
            svc.submit([[5, 6, 7]], params, tenant="A")
        release[0].set()
        await asyncio.to_thread(entered[1].wait, 30)  # a1..a9 taken in, step 2 held
        waits.append(first(svc.submit([[9, 8, 7]], params, tenant="B"), "b"))
        release[1].set()
        try:
            await asyncio.wait_for(asyncio.gather(*waits), 60)
        finally:
            await svc.close()

    asyncio.run(main())
    assert sorted(firsts) == sorted([f"a{i}" for i in range(10)] + ["b"])
    assert firsts.index("b") <= 4, firsts  # first come, first served would make it last
    assert [x for x in firsts if x != "b"] == [f"a{i}" for i in range(10)]  # A's in order
