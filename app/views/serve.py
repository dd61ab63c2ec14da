"""Serve: start a model server, call it, load it; (Engine) the LLM engine step by step; and
(Service) a classroom's shared server: tenants, limits, a model version rolled out."""

import streamlit as st
from components import show_note, watch_task
from panels.engine import engine_view
from panels.ray import KILLED, engine_form, ray_panel
from panels.serve import CALL, NOTE, RESULTS, Slot, load_test, my_slot, request_input, show_call
from panels.service import service_view

from maaslab.auto import LANGUAGE_MODELS, LOADERS
from maaslab.errors import MaaslabError
from maaslab.jobs import Task
from maaslab.serve import client
from maaslab.serve.config import ServeConfig
from maaslab.serve.process import ServerProcess

ss = st.session_state
START_TIMEOUT_S = 180.0  # MiniLM loads in seconds, slower when the machine is busy
RAY_START_TIMEOUT_S = 300.0  # a local Ray instance, Serve, then every replica comes up


def start_form(slot: Slot) -> None:
    """Models, batching and the engine (one process or Ray Serve replicas); Start spawns
    `python -m maaslab serve` on 127.0.0.1."""
    models = st.multiselect(
        "Models to serve",
        [*LOADERS, *LANGUAGE_MODELS],
        ["digits-cnn", "sentiment-minilm"],
        key="serve.models",
        help="A language model (mini-llama) answers on /v1/completions and "
        "/v1/chat/completions through the engine of lesson 15 (the Engine tab): for it, Max "
        "batch size caps the sequences running at once (1 with batching off) and Max queue "
        "the ones waiting for their first token; Max delay is for the other models.",
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
    try:
        scale, refused = engine_form(), None
    except MaaslabError as err:
        scale, refused = None, str(err)
    if st.button("Start server", type="primary", icon=":material/play_arrow:", key="serve.start"):
        if not models:
            st.error("Choose at least one model to serve.")
            return
        if scale is None:
            st.error(refused)
            return
        for key in (NOTE, KILLED, *RESULTS):  # nothing of the last server carries over
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
        server = slot.server = ServerProcess(config, scale=scale)
        timeout = RAY_START_TIMEOUT_S if scale.engine == "ray" else START_TIMEOUT_S
        slot.starting = Task(lambda progress, cancel: server.start(timeout)).start()
        st.rerun()


def starting(task: Task) -> None:
    """While the models load: which ones, and the server's pid."""
    server = my_slot().server
    pid = f" (pid {server.pid})" if server.pid else ""
    loading = ", ".join(server.models)
    on = f" on {server.runs_on()}" if server.scale.engine == "ray" else ""
    st.info(f"Starting the server{on}: loading {loading}…{pid}", icon=":material/hourglass_top:")


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
    st.success(slot.server.headline(), icon=":material/dns:")
    engine = [m for m in slot.server.models if m in LANGUAGE_MODELS]
    if engine:
        st.caption(
            f"{', '.join(engine)}: answered by the LLM engine (paged KV cache, continuous "
            "batching, see the Engine tab); its batch size is the most sequences it runs at "
            "once."
        )
    if st.button("Stop server", icon=":material/stop:", key="serve.stop"):
        ss[NOTE] = ("info", ServerProcess.stop_note(slot.stop()))
        st.rerun()
    with st.expander("Server log"):
        st.code(slot.server.log_tail(40) or "(nothing printed yet)", language=None)
    if slot.server.scale.engine == "ray":
        ray_panel(slot.server)


def request_form(server: ServerProcess) -> None:
    """One input for the chosen model; Send asks the server (and for an explanation)."""
    model = st.selectbox("Model", server.models, key="serve.model")
    kind = client.kind_of(model)
    data, options, extra = request_input(kind, chat_model=model in LANGUAGE_MODELS)
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


def server_view() -> None:
    """The server: start it, call it, load it."""
    slot = my_slot()
    if slot.server is not None and slot.starting is None and not slot.server.running:
        server, slot.server = slot.server, None
        ss[NOTE] = ("error", server.exit_note(20))
        slot.stop()
    show_note(ss.get(NOTE))
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
        load_test(slot)


st.title("Serve")
st.caption(
    "A real model server in its own process on 127.0.0.1: Open Inference Protocol v2 "
    "for tensors, the OpenAI API for text, Prometheus metrics."
)
server, engine, service = st.tabs(
    ["Server", "Engine", "Service"], key="serve.view", on_change="rerun"
)
if engine.open:  # only the open tab runs
    with engine:
        engine_view()
elif service.open:
    with service:
        service_view()
else:
    with server:
        server_view()
