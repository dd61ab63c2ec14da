"""Gradient Descent Lab through AppTest: races run, widgets change them, links reopen them."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from maaslab.optimization import lab_state as lab
from maaslab.optimization.surfaces import SURFACES

APP = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
PAGE = "views/gradient_descent_lab.py"


def _open(**query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def _table(at: AppTest) -> dict[str, dict]:
    """The result table, keyed by optimizer label."""
    rows = at.table[0].value.to_dict("records")
    return {row["optimizer"]: row for row in rows}


def _url(at: AppTest) -> dict[str, str]:
    """The page's URL query parameters (one value each)."""
    return {
        key: value if isinstance(value, str) else value[-1]
        for key, value in at.query_params.items()
    }


def test_the_default_race_runs_and_fills_the_url():
    at = _open()
    assert at.title[0].value == "Gradient Descent Lab"
    assert not at.warning
    assert len(at.get("plotly_chart")) == 2  # the contour race and the loss curves
    table = _table(at)
    cfg = lab.default_race()
    assert list(table) == [o.label for o in cfg.optimizers]
    assert all(row["status"] == f"ran {cfg.steps} steps" for row in table.values())
    assert _url(at) == lab.race_config_to_params(cfg)


def test_widgets_change_the_race_and_the_url():
    at = _open()
    adam = lab.default_race().optimizers[-1]
    assert adam.name == "adam"
    before = _table(at)[adam.label]["final loss"]
    at.select_slider(key="gdlab.lr.adam").set_value(adam.lr / 10).run()
    table = _table(at)
    assert adam.label not in table
    assert table[f"Adam (lr {adam.lr / 10:g})"]["final loss"] != before
    assert f"adam:{adam.lr / 10!r}" in _url(at)["lr"]

    # a new surface brings its own start and suggested learning rates
    at.selectbox(key="gdlab.surface").set_value("quadratic").run()
    quadratic = SURFACES["quadratic"]
    assert at.slider(key="gdlab.x").value == quadratic.start[0]
    assert at.select_slider(key="gdlab.lr.adam").value == quadratic.lr_for("adam")
    assert _url(at)["surface"] == "quadratic"
    assert _table(at)[f"Adam (lr {quadratic.lr_for('adam'):g})"]["distance to minimum"] < 0.01


def test_a_diverging_optimizer_is_reported_not_raised():
    at = _open(surface="rosenbrock", opt="gd,adam", lr="gd:0.05,adam:0.1", steps="100")
    table = _table(at)
    assert table["GD (lr 0.05)"]["status"].startswith("diverged at step ")
    assert table["Adam (lr 0.1)"]["status"] == "ran 100 steps"


def test_a_link_reopens_the_same_race():
    at = _open()
    at.selectbox(key="gdlab.surface").set_value("beale").run()
    at.pills(key="gdlab.opt").set_value(["nesterov", "rmsprop"]).run()
    at.select_slider(key="gdlab.momentum").set_value(0.95).run()
    at.slider(key="gdlab.y").set_value(-1.0).run()
    at.select_slider(key="gdlab.steps").set_value(200).run()
    assert not at.exception, at.exception
    link = _url(at)
    assert link["opt"] == "nesterov,rmsprop" and link["momentum"] == "0.95"

    shared = _open(**link)
    assert _table(shared) == _table(at)
    assert shared.slider(key="gdlab.y").value == -1.0
    assert shared.select_slider(key="gdlab.momentum").value == 0.95
    assert not shared.warning


def test_nonsense_in_the_url_gives_warnings_and_a_working_page():
    at = _open(surface="moon", lr="abc", steps="1e9", start="nan", opt="adam,sgd")
    text = "\n".join(w.value for w in at.warning)
    for name in ("surface='moon'", "lr='abc'", "steps='1e9'", "start='nan'", "sgd"):
        assert name in text, text
    (row,) = _table(at).values()
    assert row["optimizer"] == f"Adam (lr {SURFACES['rosenbrock'].lr_for('adam'):g})"
    assert row["status"] == f"ran {lab.DEFAULT_STEPS} steps"
    assert _url(at)["surface"] == "rosenbrock"  # the URL now holds what really runs

    # the warnings describe the link, so they go once the learner changes the race
    at.select_slider(key="gdlab.steps").set_value(100).run()
    assert not at.warning and not at.exception


def test_a_negative_lr_from_the_url_is_refused():
    at = _open(lr="-1")
    assert "lr='-1'" in at.warning[0].value
    assert list(_table(at)) == [o.label for o in lab.default_race().optimizers]


def test_no_optimizer_chosen_asks_for_one():
    at = _open()
    at.pills(key="gdlab.opt").set_value([]).run()
    assert not at.exception
    assert "Pick at least one optimizer" in at.info[0].value
    at.pills(key="gdlab.opt").set_value(["rmsprop"]).run()
    assert list(_table(at)) == [f"RMSprop (lr {SURFACES['rosenbrock'].lr_for('rmsprop'):g})"]


def test_the_race_survives_a_visit_to_another_page():
    at = _open()
    at.select_slider(key="gdlab.steps").set_value(50).run()
    table = _table(at)
    at.switch_page("views/home.py").run()
    at.switch_page(PAGE).run()  # Streamlit forgot the widgets; the page restores them
    assert not at.exception, at.exception
    assert _table(at) == table
    at.switch_page("views/home.py").run()
    at.query_params.clear()  # a browser's page switch clears the URL as well
    at.switch_page(PAGE).run()
    assert _table(at) == table and _url(at)["steps"] == "50"


def test_suggested_settings_button_restores_the_surface_defaults():
    at = _open(surface="beale", opt="gd,adam", lr="gd:0.3,adam:0.0001", start="2,-3")
    at.select_slider(key="gdlab.steps").set_value(100).run()
    next(b for b in at.button if b.label == "Suggested lrs and start").click().run()
    beale = SURFACES["beale"]
    assert (at.slider(key="gdlab.x").value, at.slider(key="gdlab.y").value) == beale.start
    assert list(_table(at)) == [
        f"GD (lr {beale.lr_for('gd'):g})",
        f"Adam (lr {beale.lr_for('adam'):g})",
    ]
    assert at.select_slider(key="gdlab.steps").value == 100  # not a learning rate: kept
