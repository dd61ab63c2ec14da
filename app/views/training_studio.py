"""Training Studio: train an MLP or a CNN and watch it learn; Stop any time, then Save."""

from dataclasses import asdict

import streamlit as st
from components import link_warning

from maaslab import plots, studio
from maaslab.callbacks import Throttle
from maaslab.errors import MaaslabError
from maaslab.jobs import TrainingJob
from maaslab.models.mlp import ACTIVATIONS
from maaslab.studio import StudioConfig
from maaslab.train import OPTIMIZERS
from maaslab.urlstate import config_from_params, config_to_params, slider_options

JOB, CONFIG, WARNINGS = "studio.job", "studio.config", "studio.url_warnings"
state = st.session_state
st.title("Training Studio")
job: TrainingJob | None = state.get(JOB)
busy = job is not None and job.running

if CONFIG not in state:  # first visit in this session: the settings come from the link
    state[CONFIG], state[WARNINGS] = config_from_params(StudioConfig, st.query_params)
for name, value in asdict(state[CONFIG]).items():
    state.setdefault(f"studio.{name}", value)  # widgets not drawn last run lose their state
link_warning(state.get(WARNINGS, []))


def pace_label(seconds: float) -> str:
    """How the Pace slider shows its value."""
    return f"≥{seconds:g} s/epoch" if seconds else "full speed"


LIMITS = studio.LIMITS
left, right = st.columns([1, 3], gap="large")
with left:
    dataset = st.selectbox("Dataset", studio.DATASETS, key="studio.dataset", disabled=busy)
    toy = dataset != "digits"
    st.slider("Noise", *LIMITS["noise"], step=0.05, key="studio.noise", disabled=busy or not toy)
    st.slider(
        "Points", *LIMITS["n_samples"], step=50, key="studio.n_samples", disabled=busy or not toy
    )
    if toy:
        state["studio.model"] = "mlp"
    model = st.radio(
        "Model",
        studio.MODELS,
        key="studio.model",
        horizontal=True,
        format_func=str.upper,
        disabled=busy or toy,
        help="A CNN needs images: pick digits.",
    )
    cnn = model == "cnn"
    low, high = studio.depth_range(model)
    state["studio.depth"] = min(max(state["studio.depth"], low), high)
    st.slider(
        "Conv blocks" if cnn else "Hidden layers", low, high, key="studio.depth", disabled=busy
    )
    width_label = "Filters in block 1" if cnn else "Neurons per layer"
    st.slider(width_label, *LIMITS["width"], key="studio.width", disabled=busy)
    st.selectbox("Activation", list(ACTIVATIONS), key="studio.activation", disabled=busy)
    st.slider("Dropout", *LIMITS["dropout"], step=0.05, key="studio.dropout", disabled=busy)
    st.selectbox("Optimizer", OPTIMIZERS, key="studio.optimizer", disabled=busy)
    for label, name in (
        ("Learning rate", "lr"),
        ("Batch size", "batch_size"),
        ("Weight decay", "weight_decay"),
        ("Pace", "pace"),
    ):
        shown = pace_label if name == "pace" else str
        st.select_slider(
            label,
            slider_options(studio.STOPS[name], state[f"studio.{name}"], shown),
            key=f"studio.{name}",
            disabled=busy,
            format_func=shown,
        )
    st.number_input("Epochs", *LIMITS["epochs"], key="studio.epochs", disabled=busy)
    st.number_input("Seed", *LIMITS["seed"], key="studio.seed", disabled=busy)
    try:
        cfg = StudioConfig(**{name: state[f"studio.{name}"] for name in asdict(state[CONFIG])})
    except MaaslabError as err:
        st.error(str(err))
        cfg = None
    else:
        state[CONFIG] = cfg
        st.query_params.from_dict(config_to_params(cfg))  # the link reopens these settings

    start_col, stop_col = st.columns(2)
    if start_col.button(
        "Train", type="primary", disabled=busy or cfg is None, icon=":material/play_arrow:"
    ):
        try:
            run = studio.build_run(cfg)
        except MaaslabError as err:
            st.error(str(err))
        else:
            job = TrainingJob(run.model, run.data, run.train_config, [Throttle(cfg.pace)]).start()
            state[JOB], state[WARNINGS], busy = job, [], True
    if stop_col.button("Stop", disabled=not busy, icon=":material/stop:"):
        job.stop()


@st.fragment(run_every=0.5 if busy else None)
def live_view() -> None:
    """Redraw status and figures from the job's snapshots; poll only while training runs."""
    job: TrainingJob | None = state.get(JOB)
    if job is None:
        st.info("Choose a dataset and a network on the left, then press **Train**.")
        return
    history, last = job.snapshot(), job.snapshot().last
    line = f"**Status: {job.state}** · epoch {len(history.epochs)}/{job.cfg.epochs}"
    line += f" · step {len(history.step_loss)}"
    if last:
        line += f" · train loss {last.train_loss:.4f} · validation loss {last.val_loss:.4f}"
        line += f" · validation accuracy {last.val_accuracy:.3f}"
    st.markdown(line)
    st.caption(
        "Validation is data the weights never train on: when its loss turns up while the "
        "training loss keeps falling, the network is memorising. The test split is not shown "
        "here; it is measured once, when a run is saved."
    )
    if job.error:
        st.error(job.error)
    for reason in job.notes.values():
        st.warning(f"Training stopped on its own: {reason}. Try a smaller learning rate.")
    cols = st.columns(2)
    cols[0].plotly_chart(plots.loss_curve(history), key="studio.loss_chart")
    cols[1].plotly_chart(plots.accuracy_curve(history), key="studio.acc_chart")
    snapshot = job.snapshot_model()
    if snapshot is not None and job.data.n_features == 2:
        grid = studio.boundary_grid(snapshot, job.data, resolution=60)
        cols[0].plotly_chart(plots.decision_boundary(grid, job.data), key="studio.boundary")
    elif snapshot is not None:
        cm = studio.confusion_on_val(snapshot, job.data)
        figure = plots.confusion_matrix_heatmap(cm, job.data.class_names)
        figure.update_layout(height=360, title="Confusion matrix (validation split)")
        cols[0].plotly_chart(figure, key="studio.confusion")
    cols[1].plotly_chart(plots.grad_norm_curve(history), key="studio.grad_chart")
    if snapshot is not None:
        weights = plots.weight_histograms(job.weights(), job.initial_weights)
        st.plotly_chart(weights, key="studio.weights_chart")
    if not job.running and busy:
        st.rerun()  # full rerun: re-enable the controls and stop polling


with right:
    live_view()
    job = state.get(JOB)
    if job is not None and not job.running and job.history and job.history.step_loss:
        with st.form("studio.save"):
            name = st.text_input("Save as", f"{job.data.name}-{job.model.model_type}", max_chars=64)
            if st.form_submit_button("Save model", icon=":material/save:"):
                try:
                    st.success(studio.saved_note(studio.save_run(job, name)))
                except MaaslabError as err:
                    st.error(str(err))
