"""Serve: start a model server, call it from a form, and watch it under load."""

import numpy as np
import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from maaslab import plots
from maaslab.data import load_dataset
from maaslab.errors import MaaslabError
from maaslab.jobs import Task
from maaslab.serve import client
from maaslab.serve.loadtest import LoadGenerator, scrape_metrics
from maaslab.serve.process import ServerProcess
from maaslab.zoo import LOADERS

ss = st.session_state
CALL, LIVE, FINAL, NOTE = "serve.call", "serve.live", "serve.final", "serve.note"
START_TIMEOUT_S = 180.0  # MiniLM loads in seconds, slower when the machine is busy
EXAMPLE_REVIEW = "I expected to hate it, but honestly it was not bad at all."
EXAMPLE_PROMPT = "The for statement "
EXAMPLE_SENTENCE = "A server answers requests in batches."


class Slot:
    """This browser session's server, the task starting it, and its load generator."""

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.starting: Task | None = None
        self.load: LoadGenerator | None = None

    def stop(self) -> int | None:
        """Stop the load, then the server (SIGTERM: it drains); the server's exit code."""
        if self.load is not None:
            self.load.stop()
        server, self.server, self.starting, self.load = self.server, None, None, None
        return server.stop() if server is not None else None


@st.cache_resource
def slots() -> dict[str, Slot]:
    """Every session's Slot, so a server outlives reruns and a closed tab's server is stopped."""
    return {}


def my_slot() -> Slot:
    """This session's Slot; stops the servers of sessions that have gone."""
    from streamlit.runtime import Runtime

    registry = slots()
    # A tab closed (or disconnected) means its server would run on unseen: stop it.
    if Runtime.exists():  # under `streamlit run` (AppTest has no runtime)
        runtime = Runtime.instance()
        for sid in [s for s in registry if not runtime.is_active_session(s)]:
            registry.pop(sid).stop()
    return registry.setdefault(get_script_run_ctx().session_id, Slot())


@st.cache_data(show_spinner=False)
def digits_test() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split as sklearn's 0..16 pixels (what the server takes), with labels."""
    data = load_dataset("digits", seed=0)
    return data.X_test * 16, data.y_test


def start_form(slot: Slot) -> None:
    """Models and batching settings; Start spawns `python -m maaslab serve` on 127.0.0.1."""
    models = st.multiselect(
        "Models to serve", list(LOADERS), ["digits-cnn", "sentiment-minilm"], key="serve.models"
    )
    c1, c2, c3, c4 = st.columns(4)
    batching = c1.toggle("Dynamic batching", True, key="serve.batching")
    size = c2.number_input(
        "Max batch size", 1, 256, 32, key="serve.batch_size", disabled=not batching
    )
    delay = c3.number_input(
        "Max delay (ms)", 0.0, 1000.0, 5.0, 1.0, key="serve.delay", disabled=not batching
    )
    queue = c4.number_input("Max queue (then 503)", 1, 10_000, 256, key="serve.queue")
    if st.button("Start server", type="primary", icon=":material/play_arrow:", key="serve.start"):
        if not models:
            st.error("Choose at least one model to serve.")
            return
        for key in (NOTE, CALL, LIVE, FINAL):  # nothing of the last server carries over
            ss.pop(key, None)
        server = ServerProcess(
            models,
            host="127.0.0.1",
            port=0,
            batching=batching,
            max_batch_size=int(size),
            max_delay_ms=float(delay),
            max_queue=int(queue),
        )
        slot.server = server
        slot.starting = Task(lambda progress, cancel: server.start(START_TIMEOUT_S)).start()
        st.rerun()


@st.fragment(run_every=0.5)
def watch_start() -> None:
    """While the models load: elapsed time and Cancel; the page reruns once it is up (or not)."""
    slot = my_slot()
    task = slot.starting
    if task is None:
        return
    if task.running:
        pid = f" (pid {slot.server.pid})" if slot.server.pid else ""
        st.info(
            f"Starting the server: loading {', '.join(slot.server.models)}…{pid}",
            icon=":material/hourglass_top:",
        )
        if st.button("Cancel", icon=":material/stop:", key="serve.cancel"):
            slot.stop()
            ss[NOTE] = ("info", "Start cancelled.")
            st.rerun()
        return
    slot.starting = None
    if task.error:
        slot.server = None
        ss[NOTE] = ("error", task.error)
    st.rerun()


def server_panel(slot: Slot) -> None:
    """What is running where, Stop, and the server's own log."""
    server = slot.server
    mode = (
        f"batching on (up to {server.max_batch_size} rows, {server.max_delay_ms:g} ms wait)"
        if server.batching
        else "batching off"
    )
    st.success(
        f"Serving **{', '.join(server.models)}** at `{server.url}` · pid {server.pid} · "
        f"{mode} · queue {server.max_queue}",
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
    """Build one request from the form and send it; the answer is kept for show_call."""
    model = st.selectbox("Model", server.models, key="serve.model")
    kind = client.kind_of(model)
    extra: dict = {}
    if kind == "digits":
        X, y = digits_test()
        index = st.slider("Test digit", 0, len(y) - 1, 0, key="serve.digit")
        extra = {"pixels": X[index], "label": int(y[index])}
        title = f"Test digit {index} · label {y[index]}"
        st.plotly_chart(plots.digit_canvas(X[index], title=title), key="serve.digit_chart")
        path, body = f"/v2/models/{model}/infer", client.digits_body(X[index])
    elif kind == "sentiment":
        text = st.text_area("A review", EXAMPLE_REVIEW, max_chars=20_000, key="serve.review")
        path, body = f"/v2/models/{model}/infer", client.text_body(text)
    elif kind == "generator":
        prompt = st.text_area("Prompt", EXAMPLE_PROMPT, max_chars=10_000, key="serve.prompt")
        c1, c2, c3 = st.columns(3)
        tokens = c1.number_input("Max tokens", 1, 512, 80, key="serve.max_tokens")
        temperature = c2.slider("Temperature", 0.0, 2.0, 0.8, 0.1, key="serve.temperature")
        seed = c3.number_input("Seed", 0, 2**31 - 1, 0, key="serve.seed")
        path = "/v1/completions"
        body = client.completion_body(model, prompt, int(tokens), temperature, int(seed))
    else:
        text = st.text_input("A sentence", EXAMPLE_SENTENCE, max_chars=20_000, key="serve.sentence")
        path, body = "/v1/embeddings", client.embedding_body(model, text)
    method = None
    if kind in client.EXPLAINABLE:
        c1, c2 = st.columns([1, 3])
        if c1.checkbox("Explain the answer", key="serve.explain"):
            method = c2.radio("Method", ["shap", "lime"], horizontal=True, key="serve.method")
    if st.button("Send request", type="primary", icon=":material/send:", key="serve.send"):
        with st.spinner(f"POST {path}…"):
            calls = [client.call(server.url, path, body)]
            if method and calls[0].ok:
                explain = client.explain_body(body, method)
                calls.append(client.call(server.url, f"/v2/models/{model}/explain", explain))
        ss[CALL] = {"model": model, "kind": kind, "calls": calls, **extra}


def show_call(sent: dict) -> None:
    """Status, latency, the answer in pictures, and the raw JSON both ways."""
    kind, calls = sent["kind"], sent["calls"]
    first = calls[0]
    c1, c2, c3 = st.columns(3)
    c1.metric("HTTP status", first.status if first.status is not None else "no answer")
    c2.metric("Latency", f"{first.seconds * 1000:.1f} ms")
    c3.metric("Model", sent["model"])
    if not first.ok:
        show = st.warning if first.status in (None, 503, 504) else st.error
        show(first.error)
    elif kind == "digits":
        proba = client.output(first.response, "probabilities")[0]
        st.markdown(f"**Prediction: {int(proba.argmax())}** (label {sent['label']})")
        st.plotly_chart(plots.probability_bars(proba, true_label=sent["label"]), key="serve.p")
    elif kind == "sentiment":
        proba = client.output(first.response, "probabilities")[0]
        label = str(client.output(first.response, "label")[0])
        st.markdown(f"**Sentiment: {label}** ({proba.max():.0%} sure)")
        st.plotly_chart(plots.probability_bars(proba, ["negative", "positive"]), key="serve.p")
    elif kind == "generator":
        st.code(
            first.request["prompt"] + client.completion_text(first.response),
            language=None,
            wrap_lines=True,
        )
        usage = first.response.get("usage", {})
        st.caption(
            f"{usage.get('prompt_tokens')} prompt tokens · "
            f"{usage.get('completion_tokens')} completion tokens"
        )
    else:
        vector = client.embedding_of(first.response)
        st.markdown(f"**{len(vector)} dimensions** · length {np.linalg.norm(vector):.3f}")
        st.caption("First values: " + ", ".join(f"{v:+.4f}" for v in vector[:8]) + ", …")
    if len(calls) > 1:
        attr_call = calls[1]
        if attr_call.ok:
            attr = client.attribution_of(attr_call.response, kind, seconds=attr_call.seconds)
            x = sent["pixels"] / 16 if kind == "digits" else None
            st.plotly_chart(plots.attribution_figure(attr, x), key="serve.attr")
        else:
            st.error(f"Explain: {attr_call.error}")
    with st.expander("What went over the wire (raw JSON)"):
        for c in calls:
            status = c.status if c.status is not None else "no answer"
            st.markdown(f"`{c.method} {c.url}` → **{status}** in {c.seconds * 1000:.1f} ms")
            left, right = st.columns(2)
            left.code(client.shown(c.request), language="json")
            right.code(
                client.shown(c.response) if c.response is not None else c.error, language="json"
            )


def metrics_of(url: str):
    """One /metrics scrape, or None when the server does not answer it."""
    try:
        return scrape_metrics(url, timeout=2.0)
    except MaaslabError:
        return None


def ms(value: float) -> str:
    """A latency for a metric tile ("—" before there is one)."""
    return f"{value:.1f} ms" if np.isfinite(value) else "—"


def dashboard(live: list, model: str, metrics, result=None) -> None:
    """The numbers, the timeline and the batch sizes of a load test (running or done)."""
    s = live[-1][0]
    depth = metrics.queue_depth.get(model) if metrics is not None else None
    top, bottom = st.columns(4), st.columns(4)
    top[0].metric("Throughput, last 3 s", f"{s.recent_throughput:.1f}/s")
    top[1].metric("Throughput overall", f"{s.throughput:.1f}/s")
    top[2].metric("Completed", f"{s.completed:,}")
    top[3].metric("Rejected (503)", f"{s.rejected:,}", help=f"{s.errors} other errors")
    bottom[0].metric("p50 latency", ms(s.p50_ms))
    bottom[1].metric("p90 latency", ms(s.p90_ms))
    bottom[2].metric("p99 latency", ms(s.p99_ms))
    bottom[3].metric(
        "Queue depth",
        "—" if depth is None else f"{depth:.0f}",
        help="requests waiting in the model's queue, from /metrics",
    )
    left, right = st.columns(2)
    left.plotly_chart(
        plots.live_timeline([x[0] for x in live], [x[1] for x in live]), key="serve.timeline"
    )
    if metrics is not None and model in metrics.batch_size:
        right.plotly_chart(plots.batch_size_histogram(metrics, model), key="serve.batches")
    else:
        right.info("No batch has run yet.")
    if result is not None:
        left, right = st.columns(2)
        left.plotly_chart(plots.latency_timeline(result), key="serve.latencies")
        right.plotly_chart(plots.latency_histogram(result), key="serve.latency_hist")


def record(stats, depth: float | None) -> None:
    """Keep a snapshot for the timeline; the final one replaces a live one taken later."""
    live = ss.setdefault(LIVE, [])
    if live and stats.elapsed_s <= live[-1][0].elapsed_s:
        live.pop()  # the run's own end time can fall before the last half-second poll
    live.append((stats, np.nan if depth is None else depth))


@st.fragment(run_every=0.5)
def watch_load() -> None:
    """Every half second while the load runs: snapshot, scrape /metrics, redraw."""
    slot = my_slot()
    load = slot.load
    if load is None or slot.server is None:
        return
    if load.running:
        metrics = metrics_of(slot.server.url)
        depth = metrics.queue_depth.get(load.model) if metrics is not None else None
        record(load.snapshot(), depth)
        if st.button("Stop load", icon=":material/stop:", key="serve.stop_load"):
            load.stop()
        dashboard(ss[LIVE], load.model, metrics)
        return
    slot.load = None
    if load.error:
        ss[NOTE] = ("error", load.error)
    else:
        metrics = metrics_of(slot.server.url)
        depth = metrics.queue_depth.get(load.model) if metrics is not None else None
        record(load.snapshot(), depth)
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
watch_start()
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
