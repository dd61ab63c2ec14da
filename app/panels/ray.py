"""The Serve page's Ray panel: the engine choice on the start form, and (while a Ray server
runs) its nodes and replicas, live from Ray's state API, with a replica to kill."""

import os
from collections import Counter

import streamlit as st
from components import show_note

from maaslab.errors import MaaslabError
from maaslab.scale import ray_status
from maaslab.serve.config import ScaleConfig
from maaslab.serve.process import ServerProcess

ss = st.session_state
ENGINES = {"Single process": "process", "Ray Serve": "ray"}
MOST_REPLICAS = 4  # what a 2-core classroom machine can hold of one model
KILLED = "serve.ray_killed"  # the last replica killed, shown until the next kill
REFRESH_S = 1.5  # seconds between two looks at the state API
WORDS = {"ALIVE": "running", "DEAD": "dead"}  # any other actor state is on its way up


def engine_form() -> ScaleConfig:
    """Single process or Ray Serve (fixed replicas, or autoscaled MIN..MAX); MaaslabError for
    a choice ScaleConfig refuses (e.g. MIN above MAX)."""
    engine = st.radio(
        "Engine",
        list(ENGINES),
        horizontal=True,
        key="serve.engine",
        help="Ray Serve runs each model as replicas (processes) behind the same routes: "
        "starting takes longer (a local Ray instance comes up first).",
    )
    if ENGINES[engine] == "process":
        return ScaleConfig()
    c1, c2, c3, _ = st.columns(4)  # aligned with the batching row above
    mode = c1.radio("Replicas", ["Fixed", "Autoscale"], horizontal=True, key="serve.ray_mode")
    if mode == "Fixed":
        n = c2.number_input("Replicas per model", 1, MOST_REPLICAS, 2, key="serve.replicas")
        return ScaleConfig("ray", replicas=int(n))
    low = c2.number_input("Min replicas", 1, MOST_REPLICAS, 1, key="serve.auto_min")
    high = c3.number_input("Max replicas", 1, MOST_REPLICAS, 2, key="serve.auto_max")
    if low > high:  # the same check as the CLI's, said for the form
        raise MaaslabError(
            f"Min replicas ({low}) is above Max replicas ({high}): lower Min or raise Max."
        )
    return ScaleConfig("ray", autoscale=(int(low), int(high)))


def ray_panel(server: ServerProcess) -> None:
    """Nodes and replicas of the running Ray server, refreshed every REFRESH_S seconds."""
    env = {**os.environ, **server.env}  # where the server's Ray keeps its session, its token
    session = ray_status.session_dir(server.pid, env)
    url = ray_status.dashboard_url(session) if session is not None else None
    if url is None:
        st.warning("Ray's dashboard has not logged its address yet.", icon=":material/schedule:")
        return
    st.subheader("Ray: nodes and replicas")
    st.caption(f"Live from Ray's state API at `{url}` (every {REFRESH_S:g} s).")
    token = ray_status.auth_token(env)

    @st.fragment(run_every=REFRESH_S)
    def live() -> None:
        try:
            status = ray_status.cluster_status(url, token)
        except MaaslabError as err:
            st.warning(str(err), icon=":material/cloud_off:")
            return
        nodes = [
            {"node": n.node_id[:12], "address": n.node_ip, "role": "head" if n.head else "worker"}
            | {"state": n.state, "CPUs": f"{n.cpus:g}"}
            for n in status.nodes
        ]
        st.table(nodes, hide_index=True)
        rows = [
            {"deployment": r.deployment, "replica": r.replica, "state": r.state}
            | {"node": r.node_id[:12] or "—", "address": r.node_ip or "—"}
            | {"pid": str(r.pid) if r.pid else "—"}
            for r in status.replicas
        ]
        states = Counter(WORDS.get(r.state, "starting") for r in status.replicas)
        counts = ", ".join(f"{states[w]} {w}" for w in ("running", "starting", "dead") if states[w])
        st.caption(f"Replicas: {counts or 'none yet'} (the ingress answers the routes).")
        st.table(rows, hide_index=True)
        models = status.models()
        if not models:
            return
        c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
        model = c1.selectbox("Model replica", models, key="serve.ray_victim")
        if c2.button("Kill one replica", icon=":material/dangerous:", key="serve.ray_kill"):
            try:
                victim = ray_status.kill_one_replica(status, model)
                ss[KILLED] = (
                    "info",
                    f"Killed replica {victim.replica} of {model} (pid {victim.pid}): Ray "
                    "Serve's controller sees it die and starts another.",
                )
            except MaaslabError as err:
                ss[KILLED] = ("error", str(err))
        show_note(ss.get(KILLED))

    live()
