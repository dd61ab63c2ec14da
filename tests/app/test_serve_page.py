"""The Serve page through AppTest: start a real server, call it, load it, stop it."""

import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from apptest_helpers import alive, has_button, until
from streamlit.testing.v1 import AppTest

from maaslab.auto import LANGUAGE_MODELS, LOADERS, load
from maaslab.data import load_dataset
from maaslab.llm.engine import LLMEngine
from maaslab.llm.measure import Workload
from maaslab.llm.sequence import SamplingParams

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
MODELS = ["digits-cnn", "sentiment-minilm", "mini-gpt", "minilm-embed"]
REVIEW = "A warm, funny film; I loved every minute of it."
QUESTION = "What does os.path.join do?"


def start_from_page(request, models: list[str], queue: int | None = None) -> tuple[AppTest, int]:
    """A fresh page that started a server for `models` (and `queue`: its Max queue) with its
    Start button; (page, pid). The server is killed at the end of the module if a test left it
    running."""
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page("views/serve.py").run()
    at.multiselect(key="serve.models").set_value(models).run()
    if queue is not None:
        at.number_input(key="serve.queue").set_value(queue).run()
    at.button(key="serve.start").click().run()
    until(
        at, lambda a: has_button(a, "serve.stop") or a.error, timeout=150, what="the server start"
    )
    assert not at.error, at.error[0].value
    shown = next(s.value for s in at.success if "Serving" in s.value)
    pid = int(re.search(r"pid (\d+)", shown).group(1))

    def kill() -> None:  # whatever a failing test left behind: no server outlives the module
        if alive(pid):
            os.kill(pid, signal.SIGTERM)

    request.addfinalizer(kill)
    return at, pid


@pytest.fixture(scope="module")
def served(request):
    """The page with a server it started (digits-cnn + sentiment-minilm), and its pid."""
    return start_from_page(request, MODELS)


def test_the_page_without_a_server(open_page, page_text):
    at = open_page("serve")
    assert at.title[0].value == "Serve"
    assert at.multiselect(key="serve.models").value == ["digits-cnn", "sentiment-minilm"]
    assert has_button(at, "serve.start") and not has_button(at, "serve.stop")
    assert "Send a request" not in page_text(at)
    at.multiselect(key="serve.models").set_value([]).run()
    at.button(key="serve.start").click().run()
    assert [e.value for e in at.error] == ["Choose at least one model to serve."]
    assert not has_button(at, "serve.stop")


def test_start_brings_a_loopback_server_up(served, page_text):
    at, pid = served
    assert alive(pid)
    text = page_text(at)
    assert re.search(r"at `http://127\.0\.0\.1:\d+`", text)
    assert "batching on (up to 32 rows, 5 ms wait)" in text
    assert at.selectbox(key="serve.model").options == MODELS
    assert at.selectbox(key="serve.load_model").options == MODELS[:2]  # the OIP tensor models


def test_a_review_gets_the_in_process_label(served, page_text):
    at, _ = served
    at.selectbox(key="serve.model").set_value("sentiment-minilm").run()
    at.text_area(key="serve.review").input(REVIEW).run()
    at.button(key="serve.send").click().run()
    assert not at.error, [e.value for e in at.error]
    expected = load("sentiment-minilm").predict([REVIEW])
    label, sure = expected.labels[0], expected.probabilities[0].max()
    assert f"**Sentiment: {label}** ({sure:.0%} sure)" in page_text(at)
    assert at.metric[0].value == "200"
    wire = at.session_state["serve.call"]["calls"][0]
    assert wire.request["inputs"][0]["data"] == [REVIEW]
    assert wire.url.endswith("/v2/models/sentiment-minilm/infer")


def test_a_digit_with_its_explanation(served, page_text):
    at, _ = served
    at.selectbox(key="serve.model").set_value("digits-cnn").run()
    at.slider(key="serve.digit").set_value(5).run()
    at.checkbox(key="serve.explain").check().run()
    at.button(key="serve.send").click().run()
    assert not at.error, [e.value for e in at.error]
    data = load_dataset("digits", seed=0)
    predicted = int(load("digits-cnn").predict(data.X_test[5:6] * 16).probabilities[0].argmax())
    assert f"**Prediction: {predicted}** (label {data.y_test[5]})" in page_text(at)
    calls = at.session_state["serve.call"]["calls"]
    assert [c.status for c in calls] == [200, 200]
    assert calls[1].url.endswith("/v2/models/digits-cnn/explain")
    values = np.asarray(calls[1].response["outputs"][0]["data"])
    assert values.shape == (64,) and np.abs(values).sum() > 0


def test_a_completion_and_an_embedding_over_the_openai_api(served, page_text):
    at, _ = served
    at.selectbox(key="serve.model").set_value("mini-gpt").run()
    at.number_input(key="serve.max_tokens").set_value(12).run()
    at.button(key="serve.send").click().run()
    assert not at.error, [e.value for e in at.error]
    call = at.session_state["serve.call"]["calls"][0]
    assert call.url.endswith("/v1/completions") and call.request["max_tokens"] == 12
    text = call.response["choices"][0]["text"]
    assert call.request["temperature"] == 0.8 and call.request["seed"] == 0
    expected = load("mini-gpt").complete(call.request["prompt"], 12, 0.8, seed=0).text
    assert text == expected and 0 < len(text) <= 12
    assert call.request["prompt"] + text in [c.value for c in at.code]
    assert f"{len(text)} completion tokens" in page_text(at)

    at.selectbox(key="serve.model").set_value("minilm-embed").run()
    at.button(key="serve.send").click().run()
    assert not at.error, [e.value for e in at.error]
    vector = np.asarray(at.session_state["serve.call"]["calls"][0].response["data"][0]["embedding"])
    assert "**384 dimensions** · length 1.000" in page_text(at)
    assert vector.shape == (384,) and f"{vector[0]:+.4f}" in page_text(at)


def test_an_empty_review_is_refused_with_a_message(served):
    at, _ = served
    at.selectbox(key="serve.model").set_value("sentiment-minilm").run()
    at.checkbox(key="serve.explain").uncheck().run()
    at.text_area(key="serve.review").input("   ").run()
    at.button(key="serve.send").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("HTTP 400: ") and "empty" in errors[0]
    assert at.metric[0].value == "400"


def test_a_load_test_shows_its_numbers(served, page_text):
    at, _ = served
    at.selectbox(key="serve.load_model").set_value("digits-cnn").run()
    at.slider(key="serve.concurrency").set_value(4).run()
    at.slider(key="serve.duration").set_value(2).run()
    at.button(key="serve.start_load").click().run()
    until(at, lambda a: "serve.final" in a.session_state, timeout=60, what="the load test")
    metrics = {m.label: m.value for m in at.metric}
    completed = int(metrics["Completed"].replace(",", ""))
    assert completed > 0 and metrics["Rejected (503)"] == "0"
    assert float(metrics["Throughput overall"].removesuffix("/s")) > 0
    assert re.fullmatch(r"[\d.]+ ms", metrics["p90 latency"])
    result = at.session_state["serve.final"][2]
    assert result.ok == completed and result.concurrency == 4
    assert "digits-cnn c=4:" in page_text(at)


def test_stop_ends_the_process(served, page_text):
    at, pid = served
    at.button(key="serve.stop").click().run()
    assert not alive(pid)
    assert "exited with code 0" in page_text(at)
    assert has_button(at, "serve.start") and "Send a request" not in page_text(at)


# --- a language model: mini-llama through the engine --------------------------------------------


@pytest.fixture(scope="module")
def llama(request):
    """A page serving mini-llama alone, two requests at most waiting for their first token (a
    crowd gets 503s); the engine's own greedy answer, for comparison."""
    at, pid = start_from_page(request, ["mini-llama"], queue=2)
    wrapper = load("mini-llama")
    engine = LLMEngine.from_folder(wrapper.folder)

    def greedy(ids: list[int], max_tokens: int) -> str:
        tokens = engine.generate([ids], SamplingParams(max_tokens=max_tokens, temperature=0))[0]
        return wrapper.tokenizer.decode(tokens, skip_special_tokens=True)

    return at, pid, wrapper, greedy


def test_the_language_models_are_offered(open_page):
    at = open_page("serve")
    assert at.multiselect(key="serve.models").options == [*LOADERS, *LANGUAGE_MODELS]
    assert "mini-llama" in at.multiselect(key="serve.models").options


def test_a_chat_with_mini_llama_gets_the_engines_answer(llama, page_text):
    at, pid, wrapper, greedy = llama
    assert alive(pid) and at.selectbox(key="serve.model").options == ["mini-llama"]
    assert at.radio(key="serve.route").value == "/v1/chat/completions"  # a chat model: chat
    at.text_area(key="serve.message").input(QUESTION).run()
    at.slider(key="serve.temperature").set_value(0.0).run()
    at.number_input(key="serve.max_tokens").set_value(24).run()
    at.button(key="serve.send").click().run()
    assert not at.error, [e.value for e in at.error]
    call = at.session_state["serve.call"]["calls"][0]
    assert call.status == 200 and call.url.endswith("/v1/chat/completions")
    assert call.request["messages"] == [{"role": "user", "content": QUESTION}]
    answer = call.response["choices"][0]["message"]["content"]
    expected = greedy(wrapper.chat_ids([{"role": "user", "content": QUESTION}]), 24)
    assert answer == expected and answer.strip()
    said = [(m.name, m.text[0].value) for m in at.chat_message]
    assert said == [("user", QUESTION), ("assistant", answer)]
    used = call.response["usage"]["completion_tokens"]
    assert 0 < used <= 24 and f"{used} completion tokens" in page_text(at)


def test_a_completion_with_mini_llama_and_a_request_too_long(llama):
    at, _, wrapper, greedy = llama
    at.radio(key="serve.route").set_value("/v1/completions").run()
    at.slider(key="serve.temperature").set_value(0.0).run()
    at.number_input(key="serve.max_tokens").set_value(16).run()
    at.button(key="serve.send").click().run()
    assert not at.error, [e.value for e in at.error]
    call = at.session_state["serve.call"]["calls"][0]
    assert call.url.endswith("/v1/completions") and "messages" not in call.request
    text = call.response["choices"][0]["text"]
    assert text == greedy(wrapper.encode(call.request["prompt"]), 16)
    assert call.request["prompt"] + text in [c.value for c in at.code]

    at.number_input(key="serve.max_tokens").set_value(512).run()  # with the prompt: > 512
    at.button(key="serve.send").click().run()
    assert not at.exception and at.metric[0].value == "400"
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("HTTP 400: ")
    assert "more than the model's context of 512 tokens" in errors[0]


def llm_workload(at, requests: int, prompt: tuple[int, int], output: tuple[int, int]) -> None:
    """Fill in the language-model load test's workload."""
    at.number_input(key="serve.llm_requests").set_value(requests)
    at.number_input(key="serve.llm_prompt_min").set_value(prompt[0])
    at.number_input(key="serve.llm_prompt_max").set_value(prompt[1])
    at.number_input(key="serve.llm_output_min").set_value(output[0])
    at.number_input(key="serve.llm_output_max").set_value(output[1]).run()


def run_llm_load_from_page(at) -> object:
    """Press Run and wait for the LLMLoadResult the page keeps (or the reason it has none)."""
    at.button(key="serve.run_llm_load").click().run()
    keys = ("serve.llm_final", "serve.llm_note")
    until(at, lambda a: any(k in a.session_state for k in keys), timeout=180, what="the load test")
    assert "serve.llm_note" not in at.session_state, at.session_state["serve.llm_note"]
    return at.session_state["serve.llm_final"]


def test_a_load_test_of_mini_llama_shows_what_its_streams_measured(llama, page_text):
    at, _, _, _ = llama
    assert at.selectbox(key="serve.load_model").options == ["mini-llama"]
    assert not has_button(at, "serve.start_load")  # the OIP form is for the tensor models
    llm_workload(at, 4, (8, 16), (4, 8))
    at.radio(key="serve.llm_arrivals").set_value("closed").run()
    at.number_input(key="serve.llm_users").set_value(2)
    at.number_input(key="serve.llm_ttft").set_value(60_000)
    at.number_input(key="serve.llm_tpot").set_value(10_000).run()
    result = run_llm_load_from_page(at)

    vocab = 4096  # mini-llama's: every token id drawn is one it knows
    asked = sum(n for _, _, n in Workload(4, (8, 16), (4, 8), vocab=(10, vocab)).draw())
    r = result.report
    assert result.model == "mini-llama" and result.mode == "closed loop, 2 users"
    assert len(result.timings) == 4 and not result.refused and not result.errors
    assert r.requests == 4 and r.output_tokens == asked  # ignore_eos: each its max_tokens
    assert r.slo == (60.0, 10.0) and r.goodput == pytest.approx(4 / r.seconds)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Streams done"] == "4/4" and metrics["Output tokens"] == f"{asked:,}"
    assert metrics["Tokens/s"] == f"{r.tokens_per_s:,.1f}"
    assert metrics["Goodput"] == f"{r.goodput:.2f} req/s"
    table = at.table[0].value
    assert list(table.index) == ["TTFT", "ITL", "TPOT", "e2e"]
    assert list(table.columns) == ["p50", "p90", "p99"]
    for name, shown in table.iterrows():
        measured = getattr(r, name.lower())
        assert shown.to_dict() == pytest.approx({q: v * 1e3 for q, v in measured.items()})
    assert result.line() in page_text(at) and not any("refused" in w.value for w in at.warning)
    assert "serve.llm_streams" in [c.key for c in at.get("plotly_chart")]


def test_bad_ranges_get_a_message_and_a_crowd_gets_503s_counted(llama, page_text):
    at, _, _, _ = llama
    llm_workload(at, 4, (8, 16), (8, 4))
    at.button(key="serve.run_llm_load").click().run()
    assert not at.exception  # the 400 of the request above is still shown, and then:
    assert [e.value for e in at.error][-1] == (
        "Output tokens: min (8) is more than max (4). Set min to at most max."
    )
    assert "serve.llm_final" in at.session_state  # the last run's result stays
    llm_workload(at, 4, (8, 500), (4, 40))
    at.button(key="serve.run_llm_load").click().run()
    error = at.error[-1].value
    assert "needs 540 positions, more than the model's context of 512" in error

    llm_workload(at, 12, (4, 8), (40, 40))  # all at once, to a queue of 2
    at.radio(key="serve.llm_arrivals").set_value("burst").run()
    result = run_llm_load_from_page(at)
    assert result.mode == "open loop, all at once" and result.sent == 12
    assert result.refused >= 1 and len(result.timings) + result.refused == 12
    (warning,) = [w.value for w in at.warning if "refused" in w.value]
    assert f"{result.refused} of 12 refused (HTTP 503: " in warning
    assert f"{result.refused} refused (503)" in page_text(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Streams done"] == f"{len(result.timings)}/12"
    assert metrics["Output tokens"] == f"{40 * len(result.timings):,}"


def test_cancel_drops_the_streams_in_flight(llama, page_text):
    at, _, _, _ = llama
    llm_workload(at, 8, (8, 16), (150, 150))  # one user: a dozen seconds in all
    at.radio(key="serve.llm_arrivals").set_value("closed").run()
    at.number_input(key="serve.llm_users").set_value(1).run()
    at.button(key="serve.run_llm_load").click().run()
    assert "serve.llm_final" not in at.session_state  # the last run's result went
    until(at, lambda a: has_button(a, "serve.cancel_llm_load"), timeout=150, what="the run")
    assert at.button(key="serve.run_llm_load").disabled  # one load test at a time
    at.button(key="serve.cancel_llm_load").click().run()
    until(at, lambda a: "serve.llm_note" in a.session_state, timeout=150, what="the cancel")
    assert at.session_state["serve.llm_note"][0] == "info"
    assert "the requests in flight were dropped." in page_text(at)
    assert "Load test cancelled after " in page_text(at)
    assert not at.button(key="serve.run_llm_load").disabled

    llm_workload(at, 2, (8, 8), (4, 4))  # the server freed what the dropped streams held
    result = run_llm_load_from_page(at)
    assert result.report.output_tokens == 8 and "serve.llm_note" not in at.session_state


def test_stop_ends_mini_llamas_server(llama, page_text):
    at, pid, _, _ = llama
    at.button(key="serve.stop").click().run()
    assert not alive(pid) and "exited with code 0" in page_text(at)
