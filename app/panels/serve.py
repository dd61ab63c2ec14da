"""The Serve page's parts: this session's server slot, the answer and raw-JSON panel, the
per-kind request inputs, and the load test with its live dashboard."""

import streamlit as st
from components import digits_test, session_slot

from maaslab import plots
from maaslab.auto import LANGUAGE_MODELS
from maaslab.data import DIGIT_PIXEL_MAX
from maaslab.jobs import Task
from maaslab.serve import client
from maaslab.serve.loadtest import LoadGenerator, loadable, scrape_or_none
from maaslab.serve.process import ServerProcess

ss = st.session_state
CALL, LIVE, FINAL, NOTE = "serve.call", "serve.live", "serve.final", "serve.note"
EXAMPLES = {
    "sentiment": "I expected to hate it, but honestly it was not bad at all.",
    "generator": "The for statement ",
    "chat": "What does the zip function do?",
    "embedder": "A server answers requests in batches.",
}


class Slot:
    """This browser session's server, the task starting it, and its load generator."""

    server: ServerProcess | None = None
    starting: Task | None = None
    load: LoadGenerator | None = None

    def stop(self) -> int | None:
        """Stop the load, then the server (SIGTERM: it drains); the server's exit code."""
        if self.load is not None:
            self.load.stop()
        server, self.server, self.starting, self.load = self.server, None, None, None
        return server.stop() if server is not None else None


def my_slot() -> Slot:
    """This session's Slot (a closed tab's server is stopped)."""
    return session_slot("serve", Slot)


def request_input(kind: str, chat_model: bool = False) -> tuple[object, dict, dict]:
    """The input widgets for a model of `kind`: (data, request options, what to remember).

    A `chat_model` (a language model with a chat template, e.g. mini-llama) is asked a
    question through /v1/chat/completions, or given a prompt to continue on /v1/completions.
    """
    options, extra = {}, {}
    if kind == "digits":
        X, y = digits_test()
        index = st.slider("Test digit", 0, len(y) - 1, 0, key="serve.digit")
        data, extra = X[index], {"pixels": X[index], "label": int(y[index])}
        title = f"Test digit {index} · label {y[index]}"
        st.plotly_chart(plots.digit_canvas(X[index], title=title), key="serve.digit_chart")
    elif kind == "sentiment":
        data = st.text_area("A review", EXAMPLES[kind], max_chars=20_000, key="serve.review")
    elif kind == "generator":
        chat = chat_model and (
            st.radio(
                "Endpoint",
                ["/v1/chat/completions", "/v1/completions"],
                format_func=lambda path: "Chat" if "chat" in path else "Completion",
                horizontal=True,
                key="serve.route",
                help="Chat: your message goes through the model's chat template and it answers "
                "as the assistant. Completion: the model continues your text.",
            )
            == "/v1/chat/completions"
        )
        if chat:
            data = st.text_area("Message", EXAMPLES["chat"], max_chars=10_000, key="serve.message")
        else:
            data = st.text_area("Prompt", EXAMPLES[kind], max_chars=10_000, key="serve.prompt")
        c1, c2, c3 = st.columns(3)
        options = {
            "chat": chat,
            "max_tokens": int(c1.number_input("Max tokens", 1, 512, 80, key="serve.max_tokens")),
            "temperature": c2.slider("Temperature", 0.0, 2.0, 0.8, 0.1, key="serve.temperature"),
            "seed": int(c3.number_input("Seed", 0, 2**31 - 1, 0, key="serve.seed")),
        }
    else:
        data = st.text_input("A sentence", EXAMPLES[kind], max_chars=20_000, key="serve.sentence")
    return data, options, extra


def show_answer(answer: client.Answer, call: client.Call, sent: dict) -> None:
    """A good answer in pictures, by kind."""
    headline, caption = answer.lines(sent.get("label"))
    if headline:
        st.markdown(headline)
    if answer.kind == "digits":
        bars = plots.probability_bars(answer.probabilities, true_label=sent["label"])
        st.plotly_chart(bars, key="serve.p")
    elif answer.kind == "sentiment":
        bars = plots.probability_bars(answer.probabilities, ["negative", "positive"])
        st.plotly_chart(bars, key="serve.p")
    elif answer.kind == "generator" and "messages" in call.request:  # a chat
        st.chat_message("user").text(call.request["messages"][-1]["content"])
        st.chat_message("assistant").text(answer.text)
    elif answer.kind == "generator":
        st.code(call.request["prompt"] + answer.text, language=None, wrap_lines=True)
    if caption:
        st.caption(caption)


def show_call(sent: dict) -> None:
    """Status, latency, the answer in pictures, and the raw JSON both ways."""
    kind, calls = sent["kind"], sent["calls"]
    first = calls[0]
    c1, c2, c3 = st.columns(3)
    c1.metric("HTTP status", first.status_text)
    c2.metric("Latency", first.latency_text)
    c3.metric("Model", sent["model"])
    if not first.ok:
        (st.warning if first.status in (None, 503, 504) else st.error)(first.error)
    else:
        show_answer(client.answer_of(kind, first.response), first, sent)
    if len(calls) > 1:
        if calls[1].ok:
            attr = client.attribution_of(calls[1].response, kind, seconds=calls[1].seconds)
            x = sent["pixels"] / DIGIT_PIXEL_MAX if kind == "digits" else None
            st.plotly_chart(plots.attribution_figure(attr, x), key="serve.attr")
        else:
            st.error(f"Explain: {calls[1].error}")
    with st.expander("What went over the wire (raw JSON)"):
        for c in calls:
            st.markdown(c.line())
            left, right = st.columns(2)
            left.code(client.shown(c.request), language="json")
            answer = client.shown(c.response) if c.response is not None else c.error
            right.code(answer, language="json")


def dashboard(live: list, model: str, metrics, result=None) -> None:
    """The numbers, the timeline and the batch sizes of a load test (running or done)."""
    stats, depth = live[-1]
    tiles = plots.dashboard_tiles(stats, depth)
    top, bottom = st.columns(4), st.columns(4)
    for col, (label, value, tip) in zip([*top, *bottom], tiles, strict=True):
        col.metric(label, value, help=tip)
    left, right = st.columns(2)
    timeline = plots.live_timeline([x[0] for x in live], [x[1] for x in live])
    left.plotly_chart(timeline, key="serve.timeline")
    if metrics is not None and model in metrics.batch_size:
        right.plotly_chart(plots.batch_size_histogram(metrics, model), key="serve.batches")
    else:
        right.info("No batch has run yet.")
    if result is not None:
        left, right = st.columns(2)
        left.plotly_chart(plots.latency_timeline(result), key="serve.latencies")
        right.plotly_chart(plots.latency_histogram(result), key="serve.latency_hist")


@st.fragment(run_every=0.5)
def watch_load() -> None:
    """Every half second while the load runs: snapshot, scrape /metrics, redraw."""
    slot = my_slot()
    load = slot.load
    if load is None or slot.server is None:
        return
    metrics = scrape_or_none(slot.server.url)
    ss[LIVE] = load.sample(metrics)
    if load.running:
        if st.button("Stop load", icon=":material/stop:", key="serve.stop_load"):
            load.stop()
        dashboard(ss[LIVE], load.model, metrics)
        return
    slot.load = None
    if load.error:
        ss[NOTE] = ("error", load.error)
    else:
        ss[FINAL] = (load.model, metrics, load.result)
    st.rerun()


def load_test(slot: Slot) -> None:
    """Model, concurrency and duration; Start load runs closed-loop clients in this process;
    the live dashboard while it runs, the whole run's once it is done."""
    models = loadable(slot.server.models)
    others = [m for m in slot.server.models if m not in models]
    if others:
        note = (
            "The load test drives the Open Inference Protocol tensor models (`digits-*`, "
            f"`sentiment-*`), not {', '.join(others)}."
        )
        if any(m in LANGUAGE_MODELS for m in others):
            note += (
                " The Engine tab runs a language model's workloads through the engine and "
                "measures their TTFT and tokens/s."
            )
        if models:
            st.caption(note)
        else:
            st.info(note + " Serve digits-cnn or sentiment-minilm to load-test one.")
    if models:
        c1, c2, c3 = st.columns(3)
        model = c1.selectbox("Model under load", models, key="serve.load_model")
        concurrency = c2.slider("Concurrency (clients)", 1, 64, 16, key="serve.concurrency")
        duration = c3.slider("Duration (s)", 2, 60, 10, key="serve.duration")
        busy = slot.load is not None
        if st.button(
            "Start load",
            type="primary",
            icon=":material/speed:",
            disabled=busy,
            key="serve.start_load",
        ):
            ss.pop(LIVE, None)
            ss.pop(FINAL, None)
            url = slot.server.url
            slot.load = LoadGenerator(url, model, int(concurrency), float(duration)).start()
            st.rerun()
    watch_load()
    if FINAL in ss and slot.load is None and LIVE in ss:
        model, metrics, result = ss[FINAL]
        st.caption(result.summary())
        dashboard(ss[LIVE], model, metrics, result)
