"""Federated: clients keep their data, the server averages their weights; watch rounds run live."""

from dataclasses import asdict

import streamlit as st
from panels.federated import privacy_controls, tradeoff_section

from maaslab import plots
from maaslab.errors import MaaslabError
from maaslab.federated import lab
from maaslab.federated.lab import ALPHAS, LIMITS, FederatedJob, LabConfig, build_federation


@st.cache_resource(show_spinner="Drawing the clients' data (the reviews' MiniLM features: once)…")
def split_for(cfg: LabConfig):
    """The data and its partition among the clients (cached: the same settings, the same split)."""
    return lab.split_for(cfg)


JOB, FEDERATION = "federated.job", "federated.federation"
state = st.session_state
st.title("Federated learning")
st.markdown(
    "Each client trains the global model on rows that never leave it; the server sees only "
    "weights and averages them, weighted by how many examples each client holds (FedAvg). "
    "Skew the clients' labels with **alpha** and watch the global model and the clients pull "
    "apart."
)
job: FederatedJob | None = state.get(JOB)
busy = job is not None and job.running
for name, value in asdict(LabConfig()).items():
    state.setdefault(f"federated.{name}", value)
# The alpha slider's stops as labels ("IID" for None: a widget's options are better not None).
STOPS = {("IID" if a is None else f"{a:g}"): a for a in ALPHAS}
state.setdefault(
    "federated.alpha_stop", "IID" if LabConfig().alpha is None else f"{LabConfig().alpha:g}"
)


left, right = st.columns([1, 3], gap="large")
with left:
    st.selectbox(
        "Dataset",
        lab.DATASETS,
        key="federated.dataset",
        disabled=busy,
        help="reviews-minilm: the review corpus as frozen MiniLM sentence embeddings.",
    )
    st.slider("Clients", *LIMITS["n_clients"], key="federated.n_clients", disabled=busy)
    sample = ["all", *map(str, range(1, state["federated.n_clients"] + 1))]
    if state.get("federated.per_round") not in sample:
        state["federated.per_round"] = "all"  # fewer clients than the last choice
    st.select_slider(
        "Clients per round",
        sample,
        key="federated.per_round",
        disabled=busy,
        help="Sampled anew every round from a seeded stream; 'all': full participation.",
    )
    st.select_slider(
        "Label skew: Dirichlet alpha",
        list(STOPS),
        key="federated.alpha_stop",
        disabled=busy,
        help="Small alpha: each client holds a few classes. IID: every client the same mix.",
    )
    st.slider("Rounds", *LIMITS["rounds"], key="federated.rounds", disabled=busy)
    st.slider("Local epochs", *LIMITS["local_epochs"], key="federated.local_epochs", disabled=busy)
    st.select_slider("Learning rate", lab.LR_CHOICES, key="federated.lr", disabled=busy)
    st.radio("Algorithm", lab.ALGORITHMS, key="federated.algorithm", horizontal=True, disabled=busy)
    st.select_slider(
        "FedProx mu",
        lab.MU_CHOICES,
        key="federated.mu",
        disabled=busy or state["federated.algorithm"] != "fedprox",
        help="Pulls each client towards the global weights: mu / 2 * ||w - w_global||^2.",
    )
    st.number_input("Seed", *LIMITS["seed"], key="federated.seed", disabled=busy)
    privacy_controls(busy)
    state["federated.alpha"] = STOPS[state["federated.alpha_stop"]]
    per_round = state["federated.per_round"]
    state["federated.clients_per_round"] = None if per_round == "all" else int(per_round)
    settings = {name: state[f"federated.{name}"] for name in asdict(LabConfig())}
    if settings["algorithm"] == "fedavg":
        settings["mu"] = 0.0
    else:
        settings["dp"] = False  # DP-SGD clips per example; FedProx's term belongs to none
    try:
        cfg = LabConfig(**settings)
        data, partition = split_for(cfg)
    except MaaslabError as err:
        st.error(str(err))
        cfg = partition = data = None
    start_col, stop_col = st.columns(2)
    if start_col.button(
        "Run", type="primary", disabled=busy or cfg is None, icon=":material/play_arrow:"
    ):
        try:
            federation = build_federation(cfg)
        except MaaslabError as err:
            st.error(str(err))
        else:
            state[FEDERATION] = federation
            state[JOB], busy = FederatedJob(federation).start(), True
    if stop_col.button("Stop", disabled=not busy, icon=":material/stop:"):
        job.cancel()


@st.fragment(run_every=0.5 if busy else None)
def live_view() -> None:
    """Redraw the rounds from the job's live result; poll only while the federation runs."""
    job: FederatedJob | None = state.get(JOB)
    if job is None or job.live is None:
        if partition is not None:
            st.plotly_chart(
                plots.label_mix(partition, data.class_names), key="federated.mix_preview"
            )
        st.info("Choose the clients and their skew on the left, then press **Run**.")
        return
    result = job.result or job.live
    last = result.rounds[-1]
    line = f"**Status: {'running' if job.running else 'done'}** · round {last.round}/"
    line += f"{result.config.rounds} · global validation accuracy {last.val_accuracy:.3f}"
    if last.epsilon is not None:
        line += f" · epsilon {last.epsilon:.2f} at delta {result.config.delta:g}"
    if not job.running and job.result is not None:
        line += f" · test accuracy {job.result.test_accuracy:.3f} (read once, at the end)"
    st.markdown(line)
    if job.error:
        st.error(job.error)
    shown = job.federation
    cols = st.columns(2)
    cols[0].plotly_chart(plots.rounds_curve(result), key="federated.rounds_chart")
    cols[1].plotly_chart(plots.drift_curve(result), key="federated.drift_chart")
    cols = st.columns(2)
    cols[0].plotly_chart(
        plots.label_mix(shown.partition, shown.data.class_names), key="federated.mix_chart"
    )
    if job.aggregation is not None:
        cols[1].plotly_chart(plots.server_view(job.aggregation), key="federated.server_view")
    if not job.running and busy:
        st.rerun()  # full rerun: re-enable the controls and stop polling


with right:
    live_view()

with right:
    tradeoff_section()
