"""The Federated page's parts: the privacy controls, and the privacy-utility sweep."""

import streamlit as st
from components import keep_outcome, watch_task

from maaslab import plots
from maaslab.federated import lab
from maaslab.federated.aggregation import AGGREGATIONS
from maaslab.jobs import Task

state = st.session_state
TRADEOFF, TRADEOFF_TASK, TRADEOFF_ERROR = (
    "federated.tradeoff",
    "federated.tradeoff_task",
    "federated.tradeoff_error",
)


def privacy_controls(busy: bool) -> None:
    """DP-SGD on or off with its sigma and C, and what the server sees of each update."""
    with st.expander("Privacy", expanded=True):
        st.toggle(
            "DP-SGD on the clients",
            key="federated.dp",
            disabled=busy or state["federated.algorithm"] != "fedavg",
            help="Opacus: each example's gradient clipped to C, Gaussian noise sigma x C added.",
        )
        dp_off = busy or not state["federated.dp"]
        st.select_slider(
            "Noise multiplier sigma",
            lab.NOISE_CHOICES,
            key="federated.noise_multiplier",
            disabled=dp_off,
        )
        st.select_slider(
            "Clipping norm C", lab.CLIP_CHOICES, key="federated.max_grad_norm", disabled=dp_off
        )
        st.radio(
            "What the server sees",
            AGGREGATIONS,
            key="federated.aggregation",
            horizontal=True,
            disabled=busy,
            format_func={
                "plain": "updates",
                "masked": "masked (SecAgg)",
                "ckks": "encrypted (CKKS)",
            }.get,
        )


def tradeoff_section() -> None:
    """A button that measures accuracy and attack advantage against epsilon, and the chart."""
    st.subheader("Privacy against utility")
    st.markdown(
        "The same small federation (100 training digits over 2 clients, a 256-unit MLP that "
        "overfits them) trained without DP and at several noise levels; for each, the test "
        "accuracy, the epsilon its clients spent, and a loss-threshold membership attack on the "
        "final model, next to the most any attack can reach at that epsilon."
    )
    running = state.get(TRADEOFF_TASK) is not None
    if st.button("Measure the trade-off", icon=":material/shield:", disabled=running):
        state.pop(TRADEOFF, None)
        state.pop(TRADEOFF_ERROR, None)
        state[TRADEOFF_TASK] = Task(lab.measure_tradeoff).start()
    watch_task(
        lambda: state.get(TRADEOFF_TASK),
        keep_outcome(TRADEOFF_TASK, TRADEOFF, TRADEOFF_ERROR),
        cancel_key="federated.tradeoff_cancel",
    )
    if state.get(TRADEOFF_ERROR):
        st.error(state[TRADEOFF_ERROR])
    if state.get(TRADEOFF) is not None:
        st.plotly_chart(
            plots.privacy_utility_chart(state[TRADEOFF]), key="federated.tradeoff_chart"
        )
