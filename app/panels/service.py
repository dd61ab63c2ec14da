"""The Serve page's Service view (lesson 16): a classroom shares one model server. The teacher
starts it with a key per student (maaslab.serve.service_client.prepare_demo), sends students'
traffic (steady, or one student's flood past the rate limit), watches every tenant's usage and
refusals live, and rolls out version 2 of digits: canary share, shadow copies, promote, roll
back."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st
from components import session_slot, show_note, watch_task

from maaslab.errors import MaaslabError
from maaslab.jobs import Task
from maaslab.paths import runs_dir
from maaslab.plots.service import rollout_figure, tenant_rows, tenant_usage
from maaslab.serve.config import ServeConfig
from maaslab.serve.loadtest import LoadGenerator
from maaslab.serve.process import ServerProcess
from maaslab.serve.repository import DEMO_MODEL
from maaslab.serve.service_client import (
    CHALLENGER_SOURCE,
    ServiceClient,
    ServiceDemo,
    prepare_demo,
)
from maaslab.serve.tenants import STUDENT_LIMITS

ss = st.session_state
KEY = "serve.service"  # the prefix of this view's session_state keys
NOTE, ERROR = f"{KEY}.note", f"{KEY}.error"  # the last start/stop note; the last refusal
CANARY, SHADOW = f"{KEY}.canary", f"{KEY}.shadow"
SENT = f"{KEY}.sent"  # the canary share and shadow flag the page last gave the server
START_TIMEOUT_S = 120.0  # digits loads in a second or two, slower when the machine is busy
MAX_STUDENTS = 30
STEADY_IN_FLIGHT = 4  # a steady student's requests in flight at most
FLOOD_IN_FLIGHT = 32  # a flooding student's
REFRESH_S = 1.0  # seconds between two live reads of the server's usage and rollout
CALL_TIMEOUT_S = 10.0  # a teacher's call that takes longer is shown as an error, not a hang
COLUMNS = (  # the tenants table: the server's counts, the sender's own view, then limits
    "tenant",
    "sending",
    "answered",
    "429 rate",
    "429 daily",
    "429 tokens",
    "ok/s",
    "p50 ms",
    "p99 ms",
    "compute (s)",
    "limits",
)
_number, _text = st.column_config.NumberColumn, st.column_config.TextColumn
COLUMN_HELP = {  # widths in pixels: the whole table fits the page's width
    "tenant": _text(width=80),
    "sending": _text(width=88, help="The load this page sends with the student's key"),
    "answered": _number(width=66, help="Requests the server answered (its count)"),
    "429 rate": _number(width=64, help="Refused: past the rate limit and its burst"),
    "429 daily": _number(width=66, help="Refused: the day's quota was used up"),
    "429 tokens": _number(width=76, help="Refused: past the model tokens per minute"),
    "ok/s": _number(
        width=48, help="200 answers/s in the last 3 s, counted by the student's client"
    ),
    "p50 ms": _number(
        width=56,
        help="Median latency of the student's 200 answers since its "
        "load started, measured by its client",
    ),
    "p99 ms": _number(width=56, help="99th percentile of the same"),
    "compute (s)": _number(
        width=82, help="Model time spent on this tenant's requests (its share of each batch)"
    ),
    "limits": _text(
        width=252,
        help="Rate (burst) · daily quota · model tokens per minute; the "
        "teacher, an admin, has none",
    ),
}


class ServiceSlot:
    """This browser session's classroom service: its files, server, teacher client and the
    students' traffic."""

    server: ServerProcess | None = None
    starting: Task | None = None
    demo: ServiceDemo | None = None
    workdir: Path | None = None  # the demo's files, removed when the service stops
    teacher: ServiceClient | None = None  # the admin key's client, once the server is up

    def __init__(self) -> None:
        self.loads: dict[str, tuple[tuple[str, float], LoadGenerator]] = {}

    def begin(self, students: int, rate_limit: float) -> None:
        """Write a fresh demo (keys, handout, repository) under runs/ and start its server."""
        base = runs_dir() / "service"
        base.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="classroom-", dir=base))
        limits = replace(
            STUDENT_LIMITS, requests_per_s=rate_limit, burst=max(1, math.ceil(2 * rate_limit))
        )
        try:
            self.demo = prepare_demo(self.workdir, students, limits)
        except Exception:
            self.stop()
            raise
        config = ServeConfig(
            models=(),
            port=0,
            device="cpu",
            repository=str(self.demo.root),
            keys_file=str(self.demo.keys_file),
        )
        server = self.server = ServerProcess(config)
        self.starting = Task(lambda progress, cancel: server.start(START_TIMEOUT_S)).start()

    def traffic(self, wanted: dict[str, tuple[str, float]]) -> None:
        """Run exactly the wanted load: student -> (mode "steady" or "flood", requests/s)."""
        ending = [
            self.loads.pop(n)[1] for n in list(self.loads) if self.loads[n][0] != wanted.get(n)
        ]
        for load in ending:  # all told to stop at once, then each awaited
            load.stop(timeout=0)
        for load in ending:
            load.stop()
        for name, (mode, rate) in wanted.items():
            if name not in self.loads:
                in_flight = FLOOD_IN_FLIGHT if mode == "flood" else STEADY_IN_FLIGHT
                key = self.demo.keys[name]
                load = LoadGenerator(self.server.url, DEMO_MODEL, in_flight, api_key=key, rate=rate)
                self.loads[name] = ((mode, rate), load.start())

    def stop(self) -> int | None:
        """Stop the traffic, then the server; remove the demo's files; the server's exit code."""
        self.traffic({})
        if self.teacher is not None:
            self.teacher.close()
        server = self.server
        self.server = self.starting = self.teacher = self.demo = None
        code = server.stop() if server is not None else None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        return code


def my_slot() -> ServiceSlot:
    """This session's ServiceSlot (a closed tab's service is stopped)."""
    return session_slot("serve.service", ServiceSlot)


def start_form(slot: ServiceSlot) -> None:
    """Students and their rate limit; Start writes the keys and starts the server."""
    c1, c2 = st.columns(2)
    students = c1.number_input(
        "Students", 1, MAX_STUDENTS, 3, key=f"{KEY}.students", help="One key each."
    )
    rate = c2.number_input(
        "Student rate limit (requests/s)",
        1.0,
        1000.0,
        float(STUDENT_LIMITS.requests_per_s),
        1.0,
        "%g",
        key=f"{KEY}.rate_limit",
        help="Each student's token bucket refills at this rate and holds twice as many "
        "(the burst); a request past it is answered 429 with Retry-After. The teacher, an "
        f"admin, has no limit. Daily quota: {STUDENT_LIMITS.daily_requests:,} requests.",
    )
    if st.button(
        "Start the classroom service",
        type="primary",
        icon=":material/play_arrow:",
        key=f"{KEY}.start",
    ):
        for key in (NOTE, ERROR, CANARY, SHADOW):
            ss.pop(key, None)
        try:
            slot.begin(int(students), float(rate))
        except (MaaslabError, OSError) as err:
            st.error(f"The service did not start: {err}")
            return
        st.rerun()


def starting(task: Task) -> None:
    """While the server loads digits version 1."""
    server = my_slot().server
    pid = f" (pid {server.pid})" if server is not None and server.pid else ""
    st.info(
        f"Starting the classroom server: loading {DEMO_MODEL} v1…{pid}",
        icon=":material/hourglass_top:",
    )


def started(task: Task) -> None:
    """The start ended: the teacher's client, or the reason the server did not come up."""
    slot = my_slot()
    slot.starting = None
    if task.error:
        ss[NOTE] = ("error", task.error)
        slot.stop()
    else:
        key = slot.demo.keys["teacher"]
        slot.teacher = ServiceClient(slot.server.url, key, timeout=CALL_TIMEOUT_S)


def cancel_start(task: Task) -> None:
    """Cancel: stop the half-started server."""
    my_slot().stop()
    ss[NOTE] = ("info", "Start cancelled.")
    st.rerun()


def handout(demo: ServiceDemo) -> None:
    """The keys to hand out, and the CSV to download."""
    with st.expander(f"Handout: {len(demo.keys)} keys ({len(demo.students)} students, teacher)"):
        st.dataframe(pd.read_csv(demo.handout), hide_index=True)  # name, role, key
        st.download_button(
            "Download the handout (CSV)",
            demo.handout.read_bytes(),
            file_name="students.csv",
            mime="text/csv",
            icon=":material/download:",
            key=f"{KEY}.handout",
        )
        st.caption(
            "The server holds only the keys' SHA-256 hashes; this CSV is the one place the "
            "keys themselves exist. A request sends one as `Authorization: Bearer KEY`."
        )


def traffic_form(slot: ServiceSlot) -> None:
    """Who sends steady load, who floods; the load starts and stops as the choice changes."""
    students = slot.demo.students
    c1, c2 = st.columns([3, 1])
    steady = c1.multiselect(
        "Steady load from",
        students,
        key=f"{KEY}.steady",
        help=f"Each sends digits requests with its own key at a steady rate (at most "
        f"{STEADY_IN_FLIGHT} in flight), whether or not answers came back.",
    )
    steady_rate = c2.number_input(
        "Each at (requests/s)", 1.0, 100.0, 5.0, 1.0, "%g", key=f"{KEY}.steady_rate"
    )
    c1, c2 = st.columns([3, 1])
    flood = c1.selectbox(
        "Flood from",
        [None, *students],
        format_func=lambda name: name or "nobody",
        key=f"{KEY}.flood",
        help=f"One student sends far past the rate limit (up to {FLOOD_IN_FLIGHT} requests in "
        "flight): its excess is refused with 429 while the others keep their latency.",
    )
    flood_rate = c2.number_input(
        "Flood at (requests/s)", 10.0, 2000.0, 200.0, 10.0, "%g", key=f"{KEY}.flood_rate"
    )
    wanted = {name: ("steady", float(steady_rate)) for name in steady}
    if flood is not None:
        wanted[flood] = ("flood", float(flood_rate))
    slot.traffic(wanted)


def client_side(slot: ServiceSlot) -> dict[str, dict]:
    """What each sending student's own client measured: mode, answers/s, latency."""
    seen = {}
    for name, ((mode, rate), load) in slot.loads.items():
        s = load.snapshot()
        seen[name] = {
            "sending": f"{mode} {rate:g}/s",
            "ok/s": round(s.recent_throughput, 1),
            "p50 ms": None if np.isnan(s.p50_ms) else round(s.p50_ms, 1),
            "p99 ms": None if np.isnan(s.p99_ms) else round(s.p99_ms, 1),
        }
    return seen


@st.fragment(run_every=REFRESH_S)
def tenants_live() -> None:
    """Every second: each tenant's usage and refusals (the server's), with what each
    sending student's client measured."""
    slot = my_slot()
    if slot.teacher is None:
        return
    if not slot.server.running:
        st.rerun()  # the whole page says why
    try:
        tenants = slot.teacher.tenants()
    except MaaslabError as err:
        st.error(str(err))
        return
    client = client_side(slot)
    quiet = {"sending": "", "ok/s": None, "p50 ms": None, "p99 ms": None}
    rows = [{**row, **client.get(row["tenant"], quiet)} for row in tenant_rows(tenants)]
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_order=COLUMNS,
        column_config=COLUMN_HELP,
        key=f"{KEY}.tenants",
    )
    failed = [f"{name}: {load.error}" for name, (_, load) in slot.loads.items() if load.error]
    if failed:
        st.warning("\n".join(failed))
    st.plotly_chart(tenant_usage(tenants), key=f"{KEY}.usage_chart")


def act(action: Callable[[ServiceClient], object], resync: bool = False) -> None:
    """Run a teacher's action (a widget callback); a refusal is kept to show as an error.
    `resync`: the action changes the traffic on the server (publish, promote, roll back), so
    the canary slider and shadow toggle take the server's values again on the next run."""
    slot = my_slot()
    ss.pop(ERROR, None)
    if slot.teacher is None:
        return
    try:
        action(slot.teacher)
    except (MaaslabError, OSError) as err:
        ss[ERROR] = str(err)
    if resync or ERROR in ss:  # a refused change leaves the server's values: show them again
        ss.pop(CANARY, None)
        ss.pop(SHADOW, None)


def widget_traffic() -> dict[str, object]:
    """The canary share and shadow flag the slider and the toggle show."""
    return {"canary_percent": float(ss[CANARY]), "shadow": bool(ss[SHADOW])}


def send_traffic(teacher: ServiceClient) -> dict[str, object] | None:
    """Give the server the slider's share and the toggle's flag; its new rollout state.
    Nothing to send when an action of the same rerun (Promote, Roll back: their callbacks can
    run before the slider's) has cleared the widgets to take the server's values again."""
    if CANARY not in ss or SHADOW not in ss:
        return None
    wanted = widget_traffic()
    state = teacher.set_traffic(DEMO_MODEL, **wanted)
    ss[SENT] = wanted
    return state


def publish(teacher: ServiceClient) -> None:
    """Copy digits-cnn in as version 2 and load it: it arrives as the challenger, 0 %."""
    my_slot().demo.publish_challenger()
    teacher.load(DEMO_MODEL)


def rollout_controls(slot: ServiceSlot) -> None:
    """Publish, the canary share, shadow, promote and roll back, each disabled with its
    reason when it cannot apply."""
    try:
        state = slot.teacher.rollout(DEMO_MODEL)
    except MaaslabError as err:
        st.error(str(err))
        return
    challenger, published = state["challenger"], len(state["versions"]) > 1
    st.button(
        f"Publish version 2 ({CHALLENGER_SOURCE})",
        icon=":material/publish:",
        disabled=published,
        on_click=act,
        args=(publish, True),
        key=f"{KEY}.publish",
        help="Copies the model folder into the repository as the next version and loads it.",
    )
    if published:
        st.caption(f"Published: versions {', '.join(state['versions'])} are loaded.")
    no_challenger = challenger is None
    why = (
        "No challenger: publish version 2 first."
        if not published
        else (
            "No challenger: every loaded version is the champion or retired; roll back to try "
            "the demoted one again."
        )
    )
    # The server's values, taken when the widgets start and after an action that changes them
    # (act's resync). Not on every run: a run that set them while the user pressed the slider's
    # arrow keys undid a press (the browser test lost one in a CI run).
    if CANARY not in ss or SHADOW not in ss:
        ss[CANARY], ss[SHADOW] = float(state["canary_percent"]), bool(state["shadow"])
        ss[SENT] = widget_traffic()
    c1, c2 = st.columns([3, 2])
    c1.slider(
        "Canary: share of digits requests sent to the challenger (%)",
        0.0,
        100.0,
        step=5.0,
        format="%.0f",
        key=CANARY,
        disabled=no_challenger,
        on_change=act,
        args=(send_traffic,),
        help="Requests that name no version are split at random in this proportion.",
    )
    c2.toggle(
        "Shadow copies to the challenger",
        key=SHADOW,
        disabled=no_challenger,
        on_change=act,
        args=(send_traffic,),
        help="The challenger's answer to a copy is thrown away, only compared: users never see it.",
    )
    c1, c2 = st.columns(2)
    c1.button(
        "Promote the challenger",
        icon=":material/military_tech:",
        disabled=no_challenger,
        on_click=act,
        args=(lambda t: t.promote(DEMO_MODEL), True),
        key=f"{KEY}.promote",
    )
    c1.caption(
        why
        if no_challenger
        else f"v{challenger} becomes the champion; Roll back brings v{state['champion']} back."
    )
    c2.button(
        "Roll back",
        icon=":material/undo:",
        disabled=not state["history"],
        on_click=act,
        args=(lambda t: t.rollback(DEMO_MODEL), True),
        key=f"{KEY}.rollback",
    )
    c2.caption(
        f"v{state['history'][-1]} returns as champion; v{state['champion']} stays as challenger."
        if state["history"]
        else "Nothing to roll back: no promote to undo."
    )
    if ERROR in ss:
        st.error(ss[ERROR], icon=":material/error:")


@st.fragment(run_every=REFRESH_S)
def rollout_live() -> None:
    """Every second: requests per version and the shadow comparisons."""
    slot = my_slot()
    if slot.teacher is None or not slot.server.running:
        return
    try:
        state = slot.teacher.rollout(DEMO_MODEL)
        # A change of the slider or the toggle whose callback never ran (arrow keys pressed
        # while a run was under way: a CI run lost the last of six presses) is sent now.
        unsent = CANARY in ss and SHADOW in ss and ss.get(SENT) != widget_traffic()
        if unsent and state["challenger"] is not None:
            state = send_traffic(slot.teacher) or state
    except MaaslabError as err:
        st.error(str(err))
        return
    st.plotly_chart(rollout_figure(state), key=f"{KEY}.rollout_chart")


def service_panel(slot: ServiceSlot) -> None:
    """The running service: what it serves, the handout, traffic, tenants, rollout."""
    st.success(slot.server.headline(), icon=":material/dns:")
    if st.button("Stop the service", icon=":material/stop:", key=f"{KEY}.stop"):
        ss[NOTE] = ("info", ServerProcess.stop_note(slot.stop()))
        st.rerun()
    handout(slot.demo)
    st.subheader("Traffic")
    st.caption(
        "Send steady load from some students, then flood from another: the flood's 429 count "
        "climbs and its answers stop at the rate limit, while the others' p50 stays put."
    )
    traffic_form(slot)
    st.subheader("Tenants")
    tenants_live()
    st.caption(
        "answered and 429s are the server's counts (GET /usage/tenants); sending, ok/s and "
        "the latencies are what each student's own client measured. The teacher's requests "
        "are this page's own calls (usage and rollout, every second)."
    )
    st.subheader(f"Rollout of {DEMO_MODEL}")
    rollout_controls(slot)
    rollout_live()


def service_view() -> None:
    """The Service view: start the classroom service, then run it."""
    slot = my_slot()
    if slot.server is not None and slot.starting is None and not slot.server.running:
        ss[NOTE] = ("error", slot.server.exit_note(20))
        slot.stop()
    st.caption(
        "A classroom shares one model server: a key per student with a rate limit, fair "
        f"queues, usage metered per tenant; and a new version of {DEMO_MODEL} rolled out "
        "with a canary, shadow copies, promote and roll back."
    )
    show_note(ss.get(NOTE))
    if slot.server is None:
        start_form(slot)
    watch_task(
        lambda: my_slot().starting,
        started,
        cancel_key=f"{KEY}.cancel",
        status=starting,
        cancel=cancel_start,
    )
    if slot.teacher is not None:
        service_panel(slot)
