"""Gradient Descent Lab: race optimizers on a 2-D loss surface; the URL holds every setting."""

import pandas as pd
import streamlit as st
from components import link_warning

from maaslab.errors import MaaslabError
from maaslab.optimization import lab_state as lab
from maaslab.optimization.optim import HAND_OPTIMIZERS, NAMES, race
from maaslab.optimization.surfaces import SURFACES
from maaslab.plots import add_click_targets, race_contour, race_loss
from maaslab.urlstate import slider_options

P = "gdlab."  # session_state prefix of this page
ss = st.session_state
url = {key: st.query_params.get_all(key) for key in st.query_params}
# A link opened, a first visit, or back from another page (Streamlit then forgot the widgets).
if url != ss.get(P + "url") or P + "steps" not in ss:
    if url or P + "cfg" not in ss:  # the URL decides
        ss[P + "cfg"], ss[P + "warnings"] = lab.race_config_from_params(url)
    # else: the page switch cleared the URL too; reopen the last race
    ss.update({P + k: v for k, v in lab.widget_values(ss[P + "cfg"]).items()})


def on_surface() -> None:
    """A new surface brings its own window, start and suggested learning rates."""
    ss.update({P + k: v for k, v in lab.surface_defaults(ss[P + "surface"]).items()})


def on_click() -> None:
    """A click on the map moves the start there."""
    points = ss[P + "chart"].selection.points
    start = lab.start_from_points(SURFACES[ss[P + "surface"]], points)
    if start is not None:
        ss[P + "x"], ss[P + "y"] = start


def pick(label: str, key: str, **kwargs) -> None:
    """A select slider over the setting's stops that also offers the current value (it may come
    from a link); `key` is the setting (lr.<optimizer> for a learning rate)."""
    options = slider_options(lab.GRIDS[key.partition(".")[0]], ss[P + key], "{:g}".format)
    st.select_slider(label, options, key=P + key, format_func="{:g}".format, **kwargs)


st.title("Gradient Descent Lab")
left, right = st.columns([1, 3], gap="large")
with left:
    name = st.selectbox(
        "Surface",
        list(SURFACES),
        format_func=lambda n: SURFACES[n].title,
        key=P + "surface",
        on_change=on_surface,
    )
    surface = SURFACES[name]
    chosen = st.pills(
        "Optimizers",
        HAND_OPTIMIZERS,
        selection_mode="multi",
        format_func=NAMES.get,
        key=P + "opt",
        wrap=True,
    )
    for opt in chosen:
        ss.setdefault(P + f"lr.{opt}", surface.lr_for(opt))  # forgotten while it was unselected
        pick(f"Learning rate · {NAMES[opt]}", f"lr.{opt}")
    pick("Momentum", "momentum", disabled=not {"momentum", "nesterov"} & {*chosen})
    pick("β1 (Adam)", "beta1", disabled="adam" not in chosen)
    pick("β2 (Adam)", "beta2", disabled="adam" not in chosen)
    st.slider("Start x", *surface.x_range, step=0.01, key=P + "x")
    st.slider("Start y", *surface.y_range, step=0.01, key=P + "y")
    pick("Steps", "steps")
    st.button("Suggested lrs and start", on_click=on_surface, icon=":material/restart_alt:")

with right:
    st.markdown(f"**{surface.title}** · ${surface.formula}$ · {surface.note}")
    if not chosen:
        st.info("Pick at least one optimizer on the left.")
        st.stop()
    values = {k.removeprefix(P): v for k, v in ss.items() if k.startswith(P)}
    try:
        cfg = lab.config_from_widgets({**values, "opt": chosen})
        result = race(cfg)
    except MaaslabError as err:
        st.error(str(err))
        st.stop()
    if cfg != ss[P + "cfg"]:  # the warnings describe the link, so they go once the race changes
        ss[P + "cfg"], ss[P + "warnings"] = cfg, []
    link_warning(ss[P + "warnings"])
    params = lab.race_config_to_params(cfg)
    ss[P + "url"] = {k: [v] for k, v in params.items()}
    if ss[P + "url"] != url:
        st.query_params.from_dict(params)

    # invisible click targets over the map: a contour cannot be selected, markers can
    fig = add_click_targets(race_contour(result), surface, lab.click_grid(surface))
    st.plotly_chart(fig, key=P + "chart", on_select=on_click, selection_mode="points")
    st.caption(
        "Press ▶ Play to replay the race. Click anywhere on the map to start from there. "
        "The address bar holds every setting: copy it to share this race."
    )
    table = pd.DataFrame(lab.race_table(result))  # a static table: 4 significant digits, any size
    numbers = ["final loss", "distance to minimum"]
    st.table(table.style.format("{:.4g}", subset=numbers, na_rep="—").hide(axis="index"))
    st.plotly_chart(race_loss(result), key=P + "loss")
