"""The OpenAI-compatible API over real HTTP: the official openai client, unmodified, gets the same
text and embeddings as the in-process models, streaming included, and every bad request a 4xx
whose message says what was wrong."""

import base64
import json

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from maaslab.models.gpt import MAX_NEW_TOKENS
from maaslab.serve.streaming import Choice, held_back

PROMPT = "The function "


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def gpt(shared_wrappers):
    return shared_wrappers.get_or_load(("mini-gpt",))["mini-gpt"]


@pytest.fixture(scope="module")
def embedder(shared_wrappers):
    return shared_wrappers.get_or_load(("minilm-embed",))["minilm-embed"]


def test_models_are_listed_in_openai_format(client, server):
    ids = [m.id for m in client.models.list()]
    assert ids == sorted(server.app.state.models) and "mini-gpt" in ids
    card = client.models.retrieve("minilm-embed")
    assert card.id == "minilm-embed" and card.object == "model" and card.owned_by == "maaslab"
    with pytest.raises(openai.NotFoundError, match="not served"):
        client.models.retrieve("gpt-4")


def test_completion_equals_the_in_process_model(client, gpt):
    out = client.completions.create(model="mini-gpt", prompt=PROMPT, max_tokens=30, seed=7)
    ref = gpt.complete(PROMPT, 30, seed=7)
    assert out.choices[0].text == ref.text and out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == len(PROMPT) == ref.prompt_tokens  # a token is a character
    assert out.usage.completion_tokens == 30 and out.usage.total_tokens == 30 + len(PROMPT)
    # n choices: choice j is the seed + j draw; temperature and top_p reach the sampler.
    out = client.completions.create(
        model="mini-gpt", prompt=PROMPT, max_tokens=12, seed=3, n=3, temperature=0.7, top_p=0.9
    )
    texts = [c.text for c in sorted(out.choices, key=lambda c: c.index)]
    assert texts == [gpt.complete(PROMPT, 12, 0.7, None, 0.9, 3 + j).text for j in range(3)]
    assert len(set(texts)) > 1 and out.usage.completion_tokens == 36
    # temperature 0 is greedy: always the likeliest character.
    greedy = client.completions.create(
        model="mini-gpt", prompt=PROMPT, max_tokens=12, temperature=0
    )
    assert greedy.choices[0].text == gpt.complete(PROMPT, 12, top_k=1, seed=0).text


def test_stop_cuts_the_text_before_the_first_stop_string(client, gpt):
    full = gpt.complete(PROMPT, 60, seed=11).text
    stop = full[20:23]  # three characters from the middle; may also occur earlier
    cut = full.index(stop)
    out = client.completions.create(
        model="mini-gpt", prompt=PROMPT, max_tokens=60, seed=11, stop=[stop, "\x00never"]
    )
    assert out.choices[0].text == full[:cut] and out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens == cut + len(stop)  # sampled up to the stop's end
    # Streamed, the held-back prefix of a stop is never sent.
    stream = client.completions.create(
        model="mini-gpt", prompt=PROMPT, max_tokens=60, seed=11, stop=stop, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == full[:cut]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stop_scanner_holds_back_only_a_possible_stop_start():
    assert held_back("abc\nus", ("\nuser:",)) == 3 and held_back("abc", ("\nuser:",)) == 0
    choice = Choice(iter("ab\nuxy\nuser: z"), ("\nuser:",))
    # "\n" and "\nu" wait (they may start "\nuser:"); "\nux" cannot, so it goes out whole.
    assert list(choice) == ["a", "b", "\nux", "y"] and choice.text == "ab\nuxy"
    assert choice.finish_reason == "stop" and choice.tokens == 12


def test_chat_answers_as_the_assistant_with_the_documented_template(client, gpt):
    messages = [
        {"role": "system", "content": "You explain Python."},
        {"role": "user", "content": "What does len do?"},
    ]
    out = client.chat.completions.create(model="mini-gpt", messages=messages, max_tokens=25, seed=2)
    prompt = "system: You explain Python.\nuser: What does len do?\nassistant: "
    ref = gpt.complete(prompt, 25, seed=2)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == ref.text
    assert out.usage.prompt_tokens == len(prompt) and out.usage.completion_tokens == 25


def test_streaming_chat_sends_one_chunk_per_token(client, gpt):
    messages = [{"role": "user", "content": "Explain sorted()"}]
    pieces, chunks = [], []
    stream = client.chat.completions.create(
        model="mini-gpt",
        messages=messages,
        max_tokens=150,
        seed=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    ref = gpt.complete("user: Explain sorted()\nassistant: ", 150, seed=4)
    assert "".join(pieces) == ref.text and len(pieces) == 150  # one chunk per character
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 150


def test_raw_stream_is_server_sent_events_ending_in_done(server):
    body = {"model": "mini-gpt", "prompt": "x", "max_tokens": 3, "stream": True, "seed": 0}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in r.iter_text() for e in e.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert [c["object"] for c in chunks] == ["text_completion"] * 4
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "length"]


def test_stream_chunks_leave_the_server_as_they_are_sampled(server):
    # A buffered answer of 100 chunks (about 20 kB) would reach the socket in one or two reads;
    # sent as sampled, the reads are many (a few chunks may share one when the client lags).
    body = {"model": "mini-gpt", "prompt": "x", "max_tokens": 100, "stream": True, "seed": 0}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        reads = [len(b) for b in r.iter_raw()]
    assert sum(reads) > 10_000 and len(reads) > 20


def test_embeddings_equal_the_in_process_encoder(client, embedder, server):
    texts = ["the cat sat on the mat", "Unit tests catch regressions."]
    out = client.embeddings.create(model="minilm-embed", input=texts)
    got = np.array([d.embedding for d in sorted(out.data, key=lambda d: d.index)])
    ref = embedder.embed(texts).embeddings
    assert got.shape == (2, 384) and np.allclose(got, ref, atol=1e-5)
    assert out.usage.prompt_tokens == out.usage.total_tokens > 10
    # A single string, and base64 of little-endian float32 (what the client asks for by default
    # in some versions), decode to the same numbers.
    r = httpx.post(
        server.url + "/v1/embeddings",
        timeout=30,
        json={"model": "minilm-embed", "input": texts[0], "encoding_format": "base64"},
    )
    vector = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    assert r.status_code == 200 and np.allclose(vector, ref[0], atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"model": "gpt-4", "prompt": "x"}, 404, "not served"),
        ({"model": "minilm-embed", "prompt": "x"}, 400, "generator"),
        ({"model": "mini-gpt", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "mini-gpt", "prompt": "x", "max_tokens": MAX_NEW_TOKENS + 1}, 400, "max_tokens"),
        ({"model": "mini-gpt", "prompt": "x", "temperature": -0.5}, 400, "temperature"),
        ({"model": "mini-gpt", "prompt": "x", "top_p": 0}, 400, "top_p"),
        ({"model": "mini-gpt", "prompt": "x", "top_p": 1.5}, 400, "top_p"),
        ({"model": "mini-gpt", "prompt": "x", "n": 9}, 400, "n"),
        ({"model": "mini-gpt", "prompt": "x", "stop": ""}, 400, "stop"),
        ({"model": "mini-gpt", "prompt": "   "}, 400, "prompt is empty"),
        ({"model": "mini-gpt", "prompt": 12}, 400, "prompt"),
        ({"model": "mini-gpt", "prompt": ["a", "b", "c"], "n": 3}, 400, "at most 8"),
        ({"model": "mini-gpt", "prompt": "x", "stream": True, "max_tokens": -1}, 400, "max_tokens"),
        ({"prompt": "x"}, 400, "model"),
        ({"model": "mini-gpt", "prompt": "x", "stream": "yes please"}, 400, "stream: "),
    ],
)
def test_bad_completion_requests_are_refused_with_a_message(server, body, status, words):
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"] and error["code"] == status


def test_bad_chat_and_embedding_requests_are_refused_with_a_message(client, server):
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="mini-gpt", messages=[])
    with pytest.raises(openai.BadRequestError, match="every message is empty"):
        client.chat.completions.create(
            model="mini-gpt", messages=[{"role": "user", "content": " "}]
        )
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="mini-gpt", messages=[{"role": "x", "content": "a"}])
    with pytest.raises(openai.BadRequestError, match="embedder"):
        client.embeddings.create(model="mini-gpt", input="a")
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.embeddings.create(model="minilm-embed", input=["fine", ""])
    with pytest.raises(openai.BadRequestError, match="384 dimensions"):
        client.embeddings.create(model="minilm-embed", input="a", dimensions=10)
    r = httpx.post(
        server.url + "/v1/chat/completions",
        content=b"{not json",
        timeout=30,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_a_generation_past_the_request_timeout_gets_504(start_server):
    quick = start_server(models=("mini-gpt",), request_timeout_s=0.05)
    body = {"model": "mini-gpt", "prompt": "x", "max_tokens": MAX_NEW_TOKENS}
    r = httpx.post(quick.url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 504
    assert "did not finish within 0.05 s" in r.json()["error"]["message"]  # OpenAI's shape


@pytest.mark.parametrize(
    "extreme",
    [{"temperature": 1e-38}, {"top_p": 1e-300}, {"temperature": 5e-324, "top_p": 5e-324}],
)
@pytest.mark.parametrize("streamed", [False, True])
def test_degenerate_sampling_is_greedy_decoding(client, extreme, streamed):
    # temperature -> 0 and top_p -> 0 both tend to "the likeliest token every time".
    ask = {"model": "mini-gpt", "prompt": PROMPT, "max_tokens": 12, "seed": 3}
    greedy = client.completions.create(**ask, temperature=0).choices[0].text
    if streamed:
        text = "".join(
            c.choices[0].text for c in client.completions.create(**ask, **extreme, stream=True)
        )
    else:
        text = client.completions.create(**ask, **extreme).choices[0].text
    assert text == greedy and len(text) > 0


def test_a_stream_that_fails_before_its_first_token_gets_a_status_not_a_200(server, monkeypatch):
    import maaslab.models.gpt as gpt_module

    def broken(model, ids):
        raise RuntimeError("the model broke")

    monkeypatch.setattr(gpt_module, "_sample_step", broken)
    body = {"model": "mini-gpt", "prompt": PROMPT, "max_tokens": 5, "stream": True}
    reply = httpx.post(server.url + "/v1/completions", json=body, timeout=30)
    assert reply.status_code == 500 and reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["type"] == "server_error"


def test_a_stream_that_fails_midway_ends_with_an_error_event_and_no_done(server, monkeypatch):
    import maaslab.models.gpt as gpt_module

    real, calls = gpt_module._sample_step, []

    def fails_third(model, ids):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the model broke")
        return real(model, ids)

    monkeypatch.setattr(gpt_module, "_sample_step", fails_third)
    body = {"model": "mini-gpt", "prompt": PROMPT, "max_tokens": 5, "stream": True}
    reply = httpx.post(server.url + "/v1/completions", json=body, timeout=30)
    events = [e for e in reply.text.split("\n\n") if e]
    assert reply.status_code == 200 and events[-1] != "data: [DONE]"
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert error["type"] == "server_error" and "the model broke" in error["message"]
    assert len(events) == 3  # two tokens, then the error
