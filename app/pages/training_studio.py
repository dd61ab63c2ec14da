"""Training Studio: train an MLP on a 2-D toy set and watch it learn; Stop any time, then Save."""

import re

import streamlit as st

from maaslab.callbacks import Throttle
from maaslab.data import TOY_SETS, load_dataset
from maaslab.errors import MaaslabError
from maaslab.jobs import TrainingJob
from maaslab.models import build_model
from maaslab.models.mlp import ACTIVATIONS
from maaslab.paths import runs_dir
from maaslab.plots import accuracy_curve, dataset_scatter, grad_norm_curve, loss_curve
from maaslab.registry import save_model
from maaslab.runtime import seed_everything
from maaslab.train import OPTIMIZERS, TrainConfig, run_metadata

JOB = "studio.job"
PACES = {"watch (≥0.05 s per epoch)": 0.05, "slow (≥0.2 s per epoch)": 0.2, "full speed": 0.0}

st.title("Training Studio")
job: TrainingJob | None = st.session_state.get(JOB)
busy = job is not None and job.running

left, right = st.columns([1, 3], gap="large")
with left:
    dataset = st.selectbox("Dataset", TOY_SETS, key="studio.dataset", disabled=busy)
    noise = st.slider("Noise", 0.0, 1.0, 0.2, 0.05, key="studio.noise", disabled=busy)
    n_samples = st.slider("Points", 100, 2000, 400, 50, key="studio.n", disabled=busy)
    depth = st.slider("Hidden layers", 0, 4, 2, key="studio.depth", disabled=busy)
    width = st.slider("Neurons per layer", 2, 64, 16, key="studio.width", disabled=busy)
    activation = st.selectbox("Activation", list(ACTIVATIONS), key="studio.act", disabled=busy)
    optimizer = st.selectbox("Optimizer", OPTIMIZERS, index=3, key="studio.opt", disabled=busy)
    lr = st.select_slider(
        "Learning rate", [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0],
        value=0.01, key="studio.lr", disabled=busy,
    )  # fmt: skip
    batch_size = st.select_slider("Batch size", [1, 4, 8, 16, 32, 64, 128], 32, key="studio.bs",
                                  disabled=busy)  # fmt: skip
    epochs = st.number_input("Epochs", 1, 5000, 200, key="studio.epochs", disabled=busy)
    seed = st.number_input("Seed", 0, 2**31 - 1, 0, key="studio.seed", disabled=busy)
    pace = st.selectbox("Pace", list(PACES), key="studio.pace", disabled=busy)

    start_col, stop_col = st.columns(2)
    if start_col.button("Train", type="primary", disabled=busy, icon=":material/play_arrow:"):
        try:
            data = load_dataset(dataset, n_samples=n_samples, noise=noise, seed=seed)
            cfg = TrainConfig(epochs=int(epochs), batch_size=batch_size, optimizer=optimizer,
                              lr=lr, seed=int(seed))  # fmt: skip
            seed_everything(int(seed))
            model = build_model("mlp", in_features=2, hidden=(width,) * depth,
                                out_features=data.out_features, activation=activation)  # fmt: skip
        except MaaslabError as err:
            st.error(str(err))
        else:
            job = TrainingJob(model, data, cfg, [Throttle(PACES[pace])]).start()
            st.session_state[JOB] = job
            busy = True
    if stop_col.button("Stop", disabled=not busy, icon=":material/stop:"):
        job.stop()


@st.fragment(run_every=0.5 if busy else None)
def live_view() -> None:
    """Redraw status and curves from the job's snapshot; poll only while training runs."""
    job: TrainingJob | None = st.session_state.get(JOB)
    if job is None:
        st.info("Choose a dataset and a network on the left, then press **Train**.")
        return
    history = job.snapshot()
    last = history.last
    if job.running:
        state = "stopping…" if job.stop_requested else "training…"
    elif job.error:
        state = "failed"
    else:
        state = "stopped" if history.stopped_early else "finished"
    line = f"**Status: {state}** · epoch {len(history.epochs)}/{job.cfg.epochs}"
    line += f" · step {len(history.step_loss)}"
    if last:
        line += f" · train loss {last.train_loss:.4f} · test loss {last.test_loss:.4f}"
        line += f" · test accuracy {last.test_accuracy:.3f}"
    st.markdown(line)
    if job.error:
        st.error(job.error)
    for reason in job.notes.values():
        st.warning(f"Training stopped on its own: {reason}")
    cols = st.columns(3)
    cols[0].plotly_chart(loss_curve(history), key="studio.loss_chart")
    cols[1].plotly_chart(accuracy_curve(history), key="studio.acc_chart")
    cols[2].plotly_chart(grad_norm_curve(history), key="studio.grad_chart")
    if not job.running and busy:
        st.rerun()  # full rerun: re-enable the controls and stop polling


with right:
    live_view()
    job = st.session_state.get(JOB)
    if job is not None and not job.running and job.history and job.history.epochs:
        with st.form("studio.save"):
            name = st.text_input("Save as", f"{job.data.name}-mlp", max_chars=64)
            if st.form_submit_button("Save model", icon=":material/save:"):
                if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                    st.error("Use letters, digits, '-', '_' or '.' for the name (no slashes).")
                else:
                    meta = run_metadata(job.data, job.cfg, job.history)
                    try:
                        folder = save_model(job.model, runs_dir() / "models" / name, metadata=meta)
                        st.success(f"Saved to {folder}")
                    except MaaslabError as err:
                        st.error(str(err))
    if job is not None:
        st.plotly_chart(dataset_scatter(job.data), key="studio.data_chart")
