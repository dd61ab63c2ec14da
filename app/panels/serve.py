"""The Serve page's parts: this session's server slot, the answer and raw-JSON panel, the
per-kind request inputs, the load test with its live dashboard, and the load test of a served
language model (streams: TTFT, TPOT, goodput)."""

import threading

import pandas as pd
import streamlit as st
from components import digits_test, session_slot, watch_task

from maaslab import plots
from maaslab.auto import LANGUAGE_MODELS
from maaslab.data import DIGIT_PIXEL_MAX
from maaslab.errors import MaaslabError
from maaslab.jobs import Task
from maaslab.llm.measure import Workload
from maaslab.paths import MODELS_DIR
from maaslab.registry import read_config
from maaslab.serve import client
from maaslab.serve.llm_load import MAX_USERS, LLMLoadResult, run_llm_load
from maaslab.serve.loadtest import LoadGenerator, loadable, scrape_or_none
from maaslab.serve.process import ServerProcess

ss = st.session_state
CALL, LIVE, FINAL, NOTE = "serve.call", "serve.live", "serve.final", "serve.note"
LLM_FINAL, LLM_NOTE = "serve.llm_final", "serve.llm_note"  # a language model's load test
RESULTS = (CALL, LIVE, FINAL, LLM_FINAL, LLM_NOTE)  # what a server's calls leave on the page
EXAMPLES = {
    "sentiment": "I expected to hate it, but honestly it was not bad at all.",
    "generator": "The for statement ",
    "chat": "What does the zip function do?",
    "embedder": "A server answers requests in batches.",
}


class Slot:
    """This browser session's server, the task starting it, and its load generators."""

    server: ServerProcess | None = None
    starting: Task | None = None
    load: LoadGenerator | None = None
    llm_load: Task | None = None  # a language model's load test (run_llm_load)

    def stop(self) -> int | None:
        """Stop the load, then the server (SIGTERM: it drains); the server's exit code."""
        if self.load is not None:
            self.load.stop()
        if self.llm_load is not None:
            self.llm_load.cancel()
        server, self.server, self.starting = self.server, None, None
        self.load = self.llm_load = None
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


ARRIVALS = {
    "burst": "All at once",
    "poisson": "Poisson rate",
    "closed": "Closed loop",
}
MAX_LLM_REQUESTS = 256  # requests one run sends at most (a row each in the streams figure)


@st.cache_data(show_spinner=False)
def llm_limits(model: str) -> tuple[int, int]:
    """A shipped language model's vocabulary size and context, from its folder's config.json."""
    config = read_config(MODELS_DIR / model)
    return int(config["vocab_size"]), int(config["max_position_embeddings"])


def llm_workload(
    model: str, requests: int, prompt: tuple[int, int], output: tuple[int, int], rate
) -> Workload:
    """The workload the form asks for, or a MaaslabError that says what to change."""
    vocab, context = llm_limits(model)
    # Token ids from 10 up: the first ids are the special tokens (padding, begin, end...).
    workload = Workload(requests, prompt, output, rate=rate, vocab=(10, vocab - 1), seed=0)
    workload.check_fits(context, vocab)
    return workload


def llm_load_form(slot: Slot, model: str) -> None:
    """A workload, its arrivals and an SLO; Run streams it to the served language model in a
    background Task (maaslab.serve.llm_load)."""
    _, context = llm_limits(model)
    c = st.columns(5)
    requests = c[0].number_input("Requests", 1, MAX_LLM_REQUESTS, 16, key="serve.llm_requests")
    p_low = c[1].number_input("Prompt tokens (min)", 1, context, 16, key="serve.llm_prompt_min")
    p_high = c[2].number_input("Prompt tokens (max)", 1, context, 64, key="serve.llm_prompt_max")
    o_low = c[3].number_input("Output tokens (min)", 1, context, 16, key="serve.llm_output_min")
    o_high = c[4].number_input("Output tokens (max)", 1, context, 64, key="serve.llm_output_max")
    c = st.columns([2, 1, 1, 1])
    arrivals = c[0].radio(
        "Arrivals",
        list(ARRIVALS),
        format_func=ARRIVALS.get,
        horizontal=True,
        key="serve.llm_arrivals",
        help="All at once and Poisson are open loop: a request leaves at its time, answered or "
        "not. Closed loop: N users, each sending its next request when its stream has ended.",
    )
    rate = users = None
    if arrivals == "poisson":
        rate = c[1].number_input("Rate (requests/s)", 0.1, 1000.0, 4.0, 0.5, key="serve.llm_rate")
    elif arrivals == "closed":
        users = c[1].number_input("Users", 1, MAX_USERS, 4, key="serve.llm_users")
    ttft = c[2].number_input("SLO: TTFT (ms)", 1, 600_000, 1000, 100, key="serve.llm_ttft")
    tpot = c[3].number_input("SLO: TPOT (ms)", 1, 60_000, 100, 10, key="serve.llm_tpot")
    busy = slot.load is not None or slot.llm_load is not None
    run = st.button(
        "Run load test",
        type="primary",
        icon=":material/speed:",
        disabled=busy,
        key="serve.run_llm_load",
    )
    if not run:
        return
    try:
        workload = llm_workload(model, int(requests), (p_low, p_high), (o_low, o_high), rate)
    except MaaslabError as err:
        st.error(str(err), icon=":material/error:")
        return
    for key in (LLM_FINAL, LLM_NOTE, LIVE, FINAL):  # the last load test's results go
        ss.pop(key, None)
    url, concurrency = slot.server.url, int(users) if users else None
    slo = (ttft / 1e3, tpot / 1e3)

    def run_it(progress, cancel: threading.Event) -> LLMLoadResult:
        result = run_llm_load(
            url, model, workload, concurrency=concurrency, slo=slo, progress=progress, cancel=cancel
        )
        if cancel.is_set():  # the streams in flight ended at once; the server aborted them
            raise MaaslabError(
                f"Load test cancelled after {len(result.timings)} whole streams; the requests "
                "in flight were dropped."
            )
        return result

    slot.llm_load = Task(run_it).start()
    st.rerun()


def llm_running(task: Task) -> None:
    """The requests done so far (answered, refused or failed)."""
    done = "starting" if task.stage == "starting" else f"{task.stage} done"
    text = "cancelling: the streams in flight end at their next token…" if task.cancelled else done
    st.progress(task.fraction, text=f"Streaming the workload: {text}")


def llm_ended(task: Task) -> None:
    """Keep the run's result, or why it has none."""
    my_slot().llm_load = None
    if task.error:
        ss[LLM_NOTE] = ("info" if task.cancelled else "error", task.error)
    else:
        ss[LLM_FINAL] = task.result


def llm_results(result: LLMLoadResult) -> None:
    """The run in one line, what failed, the latency table and every request's stream."""
    st.caption(result.line())
    failed = []
    if result.refused:
        failed.append(
            f"{result.refused} of {result.sent} refused ({result.refusal}): the model's queue "
            "was full (Max queue, set when the server starts). Send fewer at once, or lower "
            "the rate."
        )
    for message, count in result.errors.most_common():
        failed.append(f"{count} of {result.sent} failed: {message}")
    if failed:
        st.warning("\n".join(f"- {line}" for line in failed), icon=":material/warning:")
    r = result.report
    if r is None:
        st.error("No request streamed to its end: there is nothing to measure.")
        return
    slo = f"TTFT ≤ {r.slo[0] * 1e3:g} ms and TPOT ≤ {r.slo[1] * 1e3:g} ms"
    tiles = [
        ("Streams done", f"{r.requests}/{result.sent}", "requests that streamed to their end"),
        ("Output tokens", f"{r.output_tokens:,}", "counted by the server's usage"),
        ("Tokens/s", f"{r.tokens_per_s:,.1f}", f"output tokens over the run's {r.seconds:.2f} s"),
        ("Goodput", f"{r.goodput:.2f} req/s", f"requests per second that met {slo}"),
    ]
    for col, (label, value, tip) in zip(st.columns(4), tiles, strict=True):
        col.metric(label, value, help=tip)
    names = {"TTFT": r.ttft, "ITL": r.itl, "TPOT": r.tpot, "e2e": r.e2e}
    table = pd.DataFrame({k: {q: v * 1e3 for q, v in p.items()} for k, p in names.items()}).T
    left, right = st.columns([1, 2])
    left.markdown("**Latency (ms)**")
    left.table(table.style.format("{:.1f}"))
    right.caption(
        "**TTFT**: sent to first token (queueing and prefill) · **ITL**: between two tokens · "
        "**TPOT**: per token after the first, one value a request · **e2e**: sent to last token"
    )
    figure = plots.request_streams(result.timings, slo=r.slo)
    st.plotly_chart(figure, key="serve.llm_streams")


def llm_load_results() -> None:
    """While a language model's load test runs: its progress; once done: what it measured."""
    watch_task(
        lambda: my_slot().llm_load,
        llm_ended,
        cancel_key="serve.cancel_llm_load",
        status=llm_running,
    )
    if LLM_NOTE in ss:
        level, text = ss[LLM_NOTE]
        (st.info if level == "info" else st.error)(text)
    if LLM_FINAL in ss:
        llm_results(ss[LLM_FINAL])


def load_test(slot: Slot) -> None:
    """Model, concurrency and duration; Start load runs closed-loop clients in this process;
    the live dashboard while it runs, the whole run's once it is done. A served language model
    gets its own form: a workload of streams (llm_load_form)."""
    tensors = loadable(slot.server.models)
    models = [*tensors, *(m for m in slot.server.models if m in LANGUAGE_MODELS)]
    others = [m for m in slot.server.models if m not in models]
    if others:
        note = (
            "The load test drives the Open Inference Protocol tensor models (`digits-*`, "
            f"`sentiment-*`) and the served language models, not {', '.join(others)}."
        )
        if models:
            st.caption(note)
        else:
            st.info(note + " Serve digits-cnn, sentiment-minilm or mini-llama to load-test one.")
    if models:
        c1, c2, c3 = st.columns(3)
        model = c1.selectbox("Model under load", models, key="serve.load_model")
    if models and model in LANGUAGE_MODELS:
        c2.caption(
            "A language model answers in streams: each request's prompt and output lengths are "
            "drawn from the ranges below (token ids, `ignore_eos`, so each produces exactly its "
            "max_tokens), sent to /v1/completions with `stream: true`."
        )
        llm_load_form(slot, model)
    elif models:
        concurrency = c2.slider("Concurrency (clients)", 1, 64, 16, key="serve.concurrency")
        duration = c3.slider("Duration (s)", 2, 60, 10, key="serve.duration")
        busy = slot.load is not None or slot.llm_load is not None
        if st.button(
            "Start load",
            type="primary",
            icon=":material/speed:",
            disabled=busy,
            key="serve.start_load",
        ):
            ss.pop(LIVE, None)
            ss.pop(FINAL, None)
            ss.pop(LLM_FINAL, None)
            ss.pop(LLM_NOTE, None)
            url = slot.server.url
            slot.load = LoadGenerator(url, model, int(concurrency), float(duration)).start()
            st.rerun()
    watch_load()
    if FINAL in ss and slot.load is None and LIVE in ss:
        model, metrics, result = ss[FINAL]
        st.caption(result.summary())
        dashboard(ss[LIVE], model, metrics, result)
    llm_load_results()
