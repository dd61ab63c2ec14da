"""Serve: start a model server, call it from a form, and watch it under load."""

import numpy as np
import streamlit as st
from components import digits_test, session_slot, watch_task

from maaslab import plots
from maaslab.auto import LOADERS
from maaslab.data import DIGIT_PIXEL_MAX
from maaslab.jobs import Task
from maaslab.serve import client
from maaslab.serve.config import ServeConfig
from maaslab.serve.loadtest import LoadGenerator, scrape_or_none
from maaslab.serve.process import ServerProcess

ss = st.session_state
CALL, LIVE, FINAL, NOTE = "serve.call", "serve.live", "serve.final", "serve.note"
START_TIMEOUT_S = 180.0  # MiniLM loads in seconds, slower when the machine is busy
EXAMPLES = {
    "sentiment": "I expected to hate it, but honestly it was not bad at all.",
    "generator": "The for statement ",
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


def start_form(slot: Slot) -> None:
    """Models and batching settings; Start spawns `python -m maaslab serve` on 127.0.0.1."""
    models = st.multiselect(
        "Models to serve", list(LOADERS), ["digits-cnn", "sentiment-minilm"], key="serve.models"
    )
    d, bound = ServeConfig(), ServeConfig.bounds
    c1, c2, c3, c4 = st.columns(4)
    batching = c1.toggle("Dynamic batching", d.batching, key="serve.batching")
    low, high = bound("max_batch_size")
    size = c2.number_input(
        "Max batch size", low, high, d.max_batch_size, key="serve.batch_size", disabled=not batching
    )
    low, high = bound("max_delay_ms")
    delay = c3.number_input(
        "Max delay (ms)",
        float(low),
        float(high),
        d.max_delay_ms,
        1.0,
        key="serve.delay",
        disabled=not batching,
    )
    low, high = bound("max_queue")
    queue = c4.number_input("Max queue (then 503)", low, high, d.max_queue, key="serve.queue")
    if st.button("Start server", type="primary", icon=":material/play_arrow:", key="serve.start"):
        if not models:
            st.error("Choose at least one model to serve.")
            return
        for key in (NOTE, CALL, LIVE, FINAL):  # nothing of the last server carries over
            ss.pop(key, None)
        config = ServeConfig(
            models=tuple(models),
            port=0,
            device="cpu",
            batching=batching,
            max_batch_size=int(size),
            max_delay_ms=float(delay),
            max_queue=int(queue),
        )
        server = slot.server = ServerProcess(config)
        slot.starting = Task(lambda progress, cancel: server.start(START_TIMEOUT_S)).start()
        st.rerun()


def starting(task: Task) -> None:
    """While the models load: which ones, and the server's pid."""
    server = my_slot().server
    pid = f" (pid {server.pid})" if server.pid else ""
    loading = ", ".join(server.models)
    st.info(f"Starting the server: loading {loading}…{pid}", icon=":material/hourglass_top:")


def started(task: Task) -> None:
    """The start ended: serving, or the reason it did not come up."""
    slot = my_slot()
    slot.starting = None
    if task.error:
        slot.server = None
        ss[NOTE] = ("error", task.error)


def cancel_start(task: Task) -> None:
    """Cancel: stop the half-started server."""
    my_slot().stop()
    ss[NOTE] = ("info", "Start cancelled.")
    st.rerun()


def server_panel(slot: Slot) -> None:
    """What is running where, Stop, and the server's own log."""
    server, c = slot.server, slot.server.config
    mode = (
        f"batching on (up to {c.max_batch_size} rows, {c.max_delay_ms:g} ms wait)"
        if c.batching
        else "batching off"
    )
    st.success(
        f"Serving **{', '.join(c.models)}** at `{server.url}` · pid {server.pid} · "
        f"{mode} · queue {c.max_queue}",
        icon=":material/dns:",
    )
    if st.button("Stop server", icon=":material/stop:", key="serve.stop"):
        code = slot.stop()
        how = "it drained and exited" if code == 0 else "it exited"
        ss[NOTE] = ("info", f"Server stopped (SIGTERM; {how} with code {code}).")
        st.rerun()
    with st.expander("Server log"):
        st.code(server.log_tail(40) or "(nothing printed yet)", language=None)


def request_form(server: ServerProcess) -> None:
    """One input for the chosen model; Send asks the server (and for an explanation)."""
    model = st.selectbox("Model", server.models, key="serve.model")
    kind, options, extra = client.kind_of(model), {}, {}
    if kind == "digits":
        X, y = digits_test()
        index = st.slider("Test digit", 0, len(y) - 1, 0, key="serve.digit")
        data, extra = X[index], {"pixels": X[index], "label": int(y[index])}
        title = f"Test digit {index} · label {y[index]}"
        st.plotly_chart(plots.digit_canvas(X[index], title=title), key="serve.digit_chart")
    elif kind == "sentiment":
        data = st.text_area("A review", EXAMPLES[kind], max_chars=20_000, key="serve.review")
    elif kind == "generator":
        data = st.text_area("Prompt", EXAMPLES[kind], max_chars=10_000, key="serve.prompt")
        c1, c2, c3 = st.columns(3)
        options = {
            "max_tokens": int(c1.number_input("Max tokens", 1, 512, 80, key="serve.max_tokens")),
            "temperature": c2.slider("Temperature", 0.0, 2.0, 0.8, 0.1, key="serve.temperature"),
            "seed": int(c3.number_input("Seed", 0, 2**31 - 1, 0, key="serve.seed")),
        }
    else:
        data = st.text_input("A sentence", EXAMPLES[kind], max_chars=20_000, key="serve.sentence")
    request = client.request_for(model, data, **options)
    method = None
    if kind in client.EXPLAINABLE:
        c1, c2 = st.columns([1, 3])
        if c1.checkbox("Explain the answer", key="serve.explain"):
            method = c2.radio("Method", ["shap", "lime"], horizontal=True, key="serve.method")
    if st.button("Send request", type="primary", icon=":material/send:", key="serve.send"):
        with st.spinner(f"POST {request.path}…"):
            calls = client.ask(server.url, request, explain=method)
        ss[CALL] = {"model": model, "kind": kind, "calls": calls, **extra}


def show_answer(answer: client.Answer, call: client.Call, sent: dict) -> None:
    """A good answer in pictures, by kind."""
    if answer.kind == "digits":
        proba = answer.probabilities
        st.markdown(f"**Prediction: {int(proba.argmax())}** (label {sent['label']})")
        st.plotly_chart(plots.probability_bars(proba, true_label=sent["label"]), key="serve.p")
    elif answer.kind == "sentiment":
        proba = answer.probabilities
        st.markdown(f"**Sentiment: {answer.label}** ({proba.max():.0%} sure)")
        st.plotly_chart(plots.probability_bars(proba, ["negative", "positive"]), key="serve.p")
    elif answer.kind == "generator":
        st.code(call.request["prompt"] + answer.text, language=None, wrap_lines=True)
        tokens = answer.usage
        st.caption(
            f"{tokens.get('prompt_tokens')} prompt tokens · "
            f"{tokens.get('completion_tokens')} completion tokens"
        )
    else:
        vector = answer.embedding
        st.markdown(f"**{len(vector)} dimensions** · length {np.linalg.norm(vector):.3f}")
        st.caption("First values: " + ", ".join(f"{v:+.4f}" for v in vector[:8]) + ", …")


def show_call(sent: dict) -> None:
    """Status, latency, the answer in pictures, and the raw JSON both ways."""
    kind, calls = sent["kind"], sent["calls"]
    first = calls[0]
    c1, c2, c3 = st.columns(3)
    c1.metric("HTTP status", first.status if first.status is not None else "no answer")
    c2.metric("Latency", f"{first.seconds * 1000:.1f} ms")
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
            status = c.status if c.status is not None else "no answer"
            st.markdown(f"`{c.method} {c.url}` → **{status}** in {c.seconds * 1000:.1f} ms")
            left, right = st.columns(2)
            left.code(client.shown(c.request), language="json")
            answer = client.shown(c.response) if c.response is not None else c.error
            right.code(answer, language="json")


def ms(value: float) -> str:
    """A latency for a metric tile ("—" before there is one)."""
    return f"{value:.1f} ms" if np.isfinite(value) else "—"


def dashboard(live: list, model: str, metrics, result=None) -> None:
    """The numbers, the timeline and the batch sizes of a load test (running or done)."""
    s, depth = live[-1]
    top, bottom = st.columns(4), st.columns(4)
    top[0].metric("Throughput, last 3 s", f"{s.recent_throughput:.1f}/s")
    top[1].metric("Throughput overall", f"{s.throughput:.1f}/s")
    top[2].metric("Completed", f"{s.completed:,}")
    top[3].metric("Rejected (503)", f"{s.rejected:,}", help=f"{s.errors} other errors")
    bottom[0].metric("p50 latency", ms(s.p50_ms))
    bottom[1].metric("p90 latency", ms(s.p90_ms))
    bottom[2].metric("p99 latency", ms(s.p99_ms))
    shown = "—" if metrics is None or np.isnan(depth) else f"{depth:.0f}"
    bottom[3].metric(
        "Queue depth", shown, help="requests waiting in the model's queue, from /metrics"
    )
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


def load_form(slot: Slot) -> None:
    """Model, concurrency and duration; Start load runs closed-loop clients in this process."""
    models = [m for m in slot.server.models if client.kind_of(m) in client.EXPLAINABLE]
    if not models:
        st.info("Serve digits-cnn or sentiment-minilm to load-test it.")
        return
    c1, c2, c3 = st.columns(3)
    model = c1.selectbox("Model under load", models, key="serve.load_model")
    concurrency = c2.slider("Concurrency (clients)", 1, 64, 16, key="serve.concurrency")
    duration = c3.slider("Duration (s)", 2, 60, 10, key="serve.duration")
    busy = slot.load is not None
    if st.button(
        "Start load", type="primary", icon=":material/speed:", disabled=busy, key="serve.start_load"
    ):
        ss.pop(LIVE, None)
        ss.pop(FINAL, None)
        slot.load = LoadGenerator(slot.server.url, model, int(concurrency), float(duration)).start()
        st.rerun()


def my_slot() -> Slot:
    """This session's Slot (a closed tab's server is stopped)."""
    return session_slot("serve", Slot)


st.title("Serve")
st.caption(
    "A real model server in its own process on 127.0.0.1: Open Inference Protocol v2 "
    "for tensors, the OpenAI API for text, Prometheus metrics."
)
slot = my_slot()
if slot.server is not None and slot.starting is None and not slot.server.running:
    server, slot.server = slot.server, None
    ss[NOTE] = (
        "error",
        f"The server exited on its own (code {server.process.returncode}); "
        f"its last output:\n{server.log_tail(20)}",
    )
    slot.stop()
if NOTE in ss:
    level, text = ss[NOTE]
    first, _, rest = text.partition("\n")  # a server's own output follows the first line
    (st.error if level == "error" else st.info)(first)
    if rest.strip():
        st.code(rest.strip(), language=None)
st.header("Server")
if slot.server is None:
    start_form(slot)
watch_task(
    lambda: my_slot().starting,
    started,
    cancel_key="serve.cancel",
    status=starting,
    cancel=cancel_start,
)
if slot.server is not None and slot.starting is None:
    server_panel(slot)
    st.header("Send a request")
    request_form(slot.server)
    if CALL in ss:
        show_call(ss[CALL])
    st.header("Load test")
    load_form(slot)
    watch_load()
    if FINAL in ss and slot.load is None and LIVE in ss:
        model, metrics, result = ss[FINAL]
        st.caption(result.summary())
        dashboard(ss[LIVE], model, metrics, result)
