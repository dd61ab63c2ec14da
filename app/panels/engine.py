"""The Serve page's Engine view (lesson 15): the language-model engine run in this process on a
preset workload, with continuous batching, prefix caching and speculative decoding switched on or
off, and what it did drawn step by step while it runs (maaslab.llm.trace, maaslab.plots.llm)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from components import session_slot

from maaslab import plots
from maaslab.errors import MaaslabError
from maaslab.jobs import Task
from maaslab.llm import demo
from maaslab.llm.demo import MAX_REQUESTS, PRESETS, DemoModel, DemoResult, DemoRun, Switches
from maaslab.runtime import scaled

ss = st.session_state
KEY = "serve.engine"  # the prefix of this view's session_state keys
DONE, ERROR = f"{KEY}.done", f"{KEY}.error"
POOL_STOPS = (8, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256)  # KV pool sizes offered (blocks)
PAUSE_S = 0.1  # slow motion: the pause after each step
LOOK_FOR = {
    "continuous": "On: a request joins the batch at the step after another leaves. Off: a batch "
    "runs until its longest request ends while the queue waits: long amber rows, tall TTFT bars.",
    "prefix": "On: a prompt whose first blocks were already computed takes them over (outlined, "
    "×count in the block map) and prefills only the rest. Off: every prompt is computed whole.",
    "speculative": "On: a small draft guesses 4 tokens and the model checks them in one pass: a "
    "dark green cell brought several tokens, and the run needs fewer steps.",
}


class EngineSlot:
    """This session's demo run and the task stepping it (stopped when the session goes)."""

    run: DemoRun | None = None
    task: Task | None = None

    def stop(self) -> None:
        """Ask a running demo to stop after its current step."""
        if self.task is not None:
            self.task.cancel()


def my_slot() -> EngineSlot:
    """This session's EngineSlot."""
    return session_slot(KEY, EngineSlot)


@st.cache_resource(show_spinner="Loading the model…")
def _model(folder: str, draft: str, built: tuple[float, float]) -> DemoModel:
    # `built` (the folders' times) is part of the cache key: a model built later is picked up.
    return demo.demo_model(folder, draft)


def _mtime(folder: Path) -> float:
    config = folder / "config.json"
    return config.stat().st_mtime if config.is_file() else 0.0


def load_model() -> DemoModel:
    """mini-llama if it is built, else the tiny random Llama; loaded once per process."""
    folder, draft = Path(demo.MODEL_FOLDER), Path(demo.DRAFT_FOLDER)
    return _model(str(folder), str(draft), (_mtime(folder), _mtime(draft)))


def settings(model: DemoModel, busy: bool) -> DemoRun | None:
    """Workload, pool, switches and Run; the prepared run when Run was pressed."""
    name = st.segmented_control(
        "Workload", list(PRESETS), default="chat", required=True, key=f"{KEY}.preset"
    )
    preset = PRESETS[name]
    st.caption(f"**{preset.name}**: {preset.about}. Look for {preset.look_for}.")
    c1, c2 = st.columns(2)
    requests = c1.slider("Requests", 1, MAX_REQUESTS, scaled(12, 6), key=f"{KEY}.requests")
    blocks = c2.select_slider(
        f"KV pool (blocks of {preset.config.block_size} tokens)",
        POOL_STOPS,
        preset.config.num_blocks,
        key=f"{KEY}.blocks.{preset.name}",  # each workload keeps its own pool
        help="Shrink it to make sequences wait and be preempted.",
    )
    columns = st.columns(3)
    continuous = columns[0].toggle("Continuous batching", True, key=f"{KEY}.continuous")
    columns[0].caption(LOOK_FOR["continuous"])
    prefix = columns[1].toggle("Prefix caching", True, key=f"{KEY}.prefix")
    columns[1].caption(LOOK_FOR["prefix"])
    no_draft = model.draft is None
    speculative = columns[2].toggle(
        "Speculative decoding", False, key=f"{KEY}.speculative", disabled=no_draft
    )
    columns[2].caption(model.no_draft if no_draft else LOOK_FOR["speculative"])
    slow = st.toggle(
        f"Slow motion ({PAUSE_S:g} s after each step)",
        False,
        key=f"{KEY}.slow",
        help="To watch a run unfold; the latencies then include the pauses.",
    )
    if not st.button(
        "Run", type="primary", icon=":material/play_arrow:", disabled=busy, key=f"{KEY}.run"
    ):
        return None
    switches = Switches(continuous, prefix, speculative and not no_draft)
    try:
        return DemoRun(
            model,
            preset,
            switches,
            requests=int(requests),
            num_blocks=int(blocks),
            pause_s=PAUSE_S if slow else 0.0,
        )
    except MaaslabError as err:
        st.error(f"Cannot run this: {err}")
        return None


def start(run: DemoRun) -> None:
    """Step the run on a background thread; the live view polls it."""
    slot = my_slot()
    ss.pop(DONE, None)
    ss.pop(ERROR, None)
    slot.run = run
    slot.task = Task(lambda progress, cancel: run.run(progress, cancel)).start()


def described(run: DemoRun) -> str:
    """The settings of a run, one line."""
    s, c = run.switches, run.engine.config
    on = {True: "on", False: "off"}
    return (
        f"{run.preset.name} · {len(run.plan)} requests · {c.num_blocks} KV blocks of "
        f"{c.block_size} · continuous batching {on[s.continuous_batching]} · prefix caching "
        f"{on[s.prefix_caching]} · speculative decoding {on[s.speculative]}"
    )


def show(run: DemoRun, where: str, result: DemoResult | None = None) -> None:
    """The numbers, the timeline, the block map and the latencies of a run (live or done)."""
    data = run.trace.snapshot()
    tiles = plots.engine_tiles(data)
    for col, (label, value, tip) in zip(st.columns(len(tiles)), tiles, strict=True):
        col.metric(label, value, help=tip)
    if not data.steps:
        return
    budget = run.engine.config.max_batched_tokens
    st.plotly_chart(plots.scheduler_timeline(data, budget), key=f"{KEY}.{where}.timeline")
    left, right = st.columns([2, 3])
    block_map = data.maps[-1]
    if result is not None and len(data.maps) > 1:
        busiest = max(data.maps, key=lambda m: len(m.owners))  # the fullest moment first
        steps = [m.step for m in data.maps]
        step = left.select_slider(
            "Block map after step", steps, busiest.step, key=f"{KEY}.map_step"
        )
        block_map = data.maps[steps.index(step)]
    left.plotly_chart(plots.kv_block_map(block_map), key=f"{KEY}.{where}.blocks")
    timings = data.timings()
    if timings:
        ids = sorted(i for i, r in data.requests.items() if r.timing.token_times)
        right.plotly_chart(plots.ttft_itl(timings, ids), key=f"{KEY}.{where}.latency")
    else:
        right.info("No request has its first token yet.")


@st.fragment(run_every=0.5)
def live() -> None:
    """Every half second while a run steps: its progress, Stop, and the figures so far."""
    slot = my_slot()
    task, run = slot.task, slot.run
    if task is None or run is None:
        return
    if task.running:
        st.progress(task.fraction, text=task.stage)
        if st.button("Stop", icon=":material/stop:", key=f"{KEY}.stop"):
            task.cancel()
        show(run, "live")
        return
    slot.task = None
    if task.error:
        ss[ERROR] = task.error
    else:
        ss[DONE] = task.result
    st.rerun()


def engine_view() -> None:
    """The whole Engine view: model, settings, Run / Stop, the live run, the last run's result."""
    st.caption(
        "Lesson 15's engine, run here in this process: requests arrive at fixed steps, and "
        "every step is recorded, so the same settings give the same picture on any machine."
    )
    try:
        model = load_model()
    except MaaslabError as err:
        st.error(f"The model did not load: {err}")
        return
    (st.info if model.random else st.caption)(model.note)
    slot = my_slot()
    busy = slot.task is not None and slot.task.running
    run = settings(model, busy)
    if run is not None:
        start(run)
        st.rerun()
    if ERROR in ss:
        st.error(ss[ERROR])
    live()
    if DONE in ss and slot.task is None and slot.run is not None:
        result = ss[DONE]
        st.success(result.line(), icon=":material/check_circle:")
        st.caption(described(slot.run))
        show(slot.run, "done", result)
