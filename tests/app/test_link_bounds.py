"""A shared link sets a value only if its widget can show it.

The bounds are read from the pages' widgets (slider ends, select-slider stops, number-input
limits, the options of a select box); the link parsers must accept the values at each end and
refuse the value just beyond it. Changing either side alone (a widget's range, or a config's
check) fails here. A refused value gives a warning, and the page still draws every control.
"""

import dataclasses
import math
import re

import pytest

from maaslab import studio
from maaslab.models.mlp import ACTIVATIONS
from maaslab.optimization import lab_state as lab
from maaslab.optimization.optim import HAND_OPTIMIZERS
from maaslab.optimization.surfaces import SURFACES
from maaslab.studio import StudioConfig
from maaslab.train import OPTIMIZERS
from maaslab.urlstate import config_from_params

NUMBER = re.compile(r"[-+]?\d[\d.]*(?:e[-+]?\d+)?")


def _stop(label: str) -> float:
    """A select slider's stop, read back from its label ("0.003", "1e-05", "≥0.2 s/epoch")."""
    if label == "full speed":  # the Studio's pace 0
        return 0.0
    return float(NUMBER.search(label)[0])


def _ends(at, key: str) -> tuple[float, float]:
    """The lowest and highest value the widget with this key can take."""
    for kind in ("slider", "number_input"):
        try:
            widget = getattr(at, kind)(key=key)
        except KeyError:
            continue
        return widget.min, widget.max
    stops = [_stop(label) for label in at.select_slider(key=key).options]
    return min(stops), max(stops)


def _beyond(low: float, high: float, whole: bool) -> tuple[float, float]:
    """The nearest values outside [low, high]."""
    if whole:
        return low - 1, high + 1
    return math.nextafter(low, -math.inf), math.nextafter(high, math.inf)


def _text(value: float, whole: bool) -> str:
    return str(int(value)) if whole else repr(float(value))


def _offered(widget, value) -> bool:
    """Whether a select box, radio or pills widget offers `value` (compared as it labels it)."""
    try:
        label = widget.format_func(value)
    except (KeyError, TypeError):
        return False
    return label in widget.options


# --- Training Studio -------------------------------------------------------------------------

DIGITS_CNN = {"dataset": "digits", "model": "cnn"}  # where depth counts conv blocks
STUDIO_CHOICES = {  # field -> (widget kind, values to try: the config's own and a wrong one)
    "dataset": ("selectbox", (*studio.DATASETS, "mnist")),
    "model": ("radio", (*studio.MODELS, "resnet")),
    "activation": ("selectbox", (*ACTIVATIONS, "swish")),
    "optimizer": ("selectbox", (*OPTIMIZERS, "lion")),
}
STUDIO_NUMBERS = [
    # (field, the rest of the link: it decides which widget the page draws for the field)
    ("noise", {}),
    ("n_samples", {}),
    ("depth", {}),
    ("depth", DIGITS_CNN),
    ("width", {}),
    ("width", DIGITS_CNN),
    ("dropout", {}),
    ("lr", {}),
    ("batch_size", {}),
    ("epochs", {}),
    ("weight_decay", {}),
    ("seed", {}),
    ("pace", {}),
]
DEFAULTS = StudioConfig()


def test_every_studio_field_is_checked_here():
    checked = {name for name, _ in STUDIO_NUMBERS} | set(STUDIO_CHOICES)
    assert checked == {f.name for f in dataclasses.fields(StudioConfig)}


def _studio_edges(open_page, context: dict) -> dict[str, tuple[float, float, float, float]]:
    """field -> (low, high, just below, just above) for the numeric fields, read from the page
    opened with `context` in its link."""
    at = open_page("training_studio", **context)
    assert not at.warning, [w.value for w in at.warning]
    edges = {}
    for name, where in STUDIO_NUMBERS:
        if where == context:
            low, high = _ends(at, f"studio.{name}")
            whole = isinstance(getattr(DEFAULTS, name), int)
            edges[name] = (low, high, *_beyond(low, high, whole))
    return edges


@pytest.mark.parametrize("context", [{}, DIGITS_CNN], ids=["mlp", "cnn"])
def test_studio_links_accept_the_widget_ends_and_refuse_beyond(open_page, context):
    for name, (low, high, below, above) in _studio_edges(open_page, context).items():
        whole = isinstance(getattr(DEFAULTS, name), int)
        for value in (low, high):
            cfg, warnings = config_from_params(StudioConfig, {**context, name: _text(value, whole)})
            assert warnings == [] and getattr(cfg, name) == value, (name, value, warnings)
        for value in (below, above):
            cfg, warnings = config_from_params(StudioConfig, {**context, name: _text(value, whole)})
            assert len(warnings) == 1 and f"ignored {name}=" in warnings[0], (name, value)
            assert getattr(cfg, name) == getattr(StudioConfig(**context), name)


def test_studio_links_accept_exactly_the_options_offered(open_page):
    at = open_page("training_studio", **DIGITS_CNN)  # the model radio is live on digits
    for name, (kind, values) in STUDIO_CHOICES.items():
        widget = getattr(at, kind)(key=f"studio.{name}")
        context = DIGITS_CNN if name == "model" else {}
        for value in values:
            cfg, warnings = config_from_params(StudioConfig, {**context, name: value})
            accepted = not warnings and getattr(cfg, name) == value
            assert accepted == _offered(widget, value), (name, value, warnings)
        assert len(widget.options) == sum(_offered(widget, v) for v in values), name


@pytest.mark.parametrize("side", [2, 3], ids=["below", "above"])
def test_a_studio_link_beyond_every_widget_warns_and_draws_the_page(open_page, side):
    edges = _studio_edges(open_page, {})
    link = {
        name: _text(edge[side], isinstance(getattr(DEFAULTS, name), int))
        for name, edge in edges.items()
    }
    at = open_page("training_studio", **link)
    assert not at.exception
    warning = "\n".join(w.value for w in at.warning)
    for name in edges:
        assert f"ignored {name}={link[name]!r}" in warning, name
    _assert_studio_drawn(at)
    for name in edges:
        assert at.session_state[f"studio.{name}"] == getattr(DEFAULTS, name), name


@pytest.mark.parametrize("width", ["65", "100", "128", "0"])
def test_a_width_the_slider_cannot_show_is_refused(open_page, width):
    at = open_page("training_studio", width=width)
    assert not at.exception
    assert f"ignored width='{width}'" in at.warning[0].value
    assert at.slider(key="studio.width").value == DEFAULTS.width
    _assert_studio_drawn(at)


def _assert_studio_drawn(at) -> None:
    train = next(b for b in at.button if b.label == "Train")
    assert not train.disabled
    for key in ("studio.epochs", "studio.seed"):  # the last controls of the column
        assert at.number_input(key=key).value == getattr(DEFAULTS, key.split(".")[1])


# --- Gradient Descent Lab --------------------------------------------------------------------

ALL_OPTIMIZERS = ",".join(HAND_OPTIMIZERS)  # every learning-rate slider drawn


def _race(params: dict):
    return lab.race_config_from_params(params)


def test_every_lab_setting_is_checked_here():
    checked = {"surface", "opt", "lr", "momentum", "beta1", "beta2", "start", "steps"}
    assert checked == set(lab.PARAMS)


def test_lab_sliders_ends_are_what_a_link_may_set(open_page):
    at = open_page("gradient_descent_lab", opt=ALL_OPTIMIZERS)
    assert not at.warning
    for opt in HAND_OPTIMIZERS:
        low, high = _ends(at, f"gdlab.lr.{opt}")
        for value in (low, high):
            cfg, warnings = _race({"opt": opt, "lr": f"{opt}:{value!r}"})
            assert warnings == [] and cfg.optimizers[0].lr == value, (opt, value, warnings)
            assert _race({"opt": opt, "lr": repr(value)})[0].optimizers[0].lr == value
        for value in _beyond(low, high, whole=False):
            cfg, warnings = _race({"opt": opt, "lr": f"{opt}:{value!r}"})
            assert len(warnings) == 1 and "ignored lr" in warnings[0], (opt, value)
            assert cfg.optimizers[0].lr == SURFACES[cfg.surface].lr_for(opt)
    for name in ("momentum", "beta1", "beta2", "steps"):
        low, high = _ends(at, f"gdlab.{name}")
        whole = name == "steps"
        get = (lambda c: c.steps) if whole else (lambda c, n=name: getattr(c.optimizers[0], n))
        default = get(_race({"opt": "gd"})[0])
        for value in (low, high):
            cfg, warnings = _race({"opt": "gd", name: _text(value, whole)})
            assert warnings == [] and get(cfg) == value, (name, value, warnings)
        for value in _beyond(low, high, whole):
            cfg, warnings = _race({"opt": "gd", name: _text(value, whole)})
            assert len(warnings) == 1 and f"ignored {name}=" in warnings[0], (name, value)
            assert get(cfg) == default


@pytest.mark.parametrize("surface", list(SURFACES))
def test_a_start_is_taken_only_inside_the_sliders(open_page, surface):
    at = open_page("gradient_descent_lab", surface=surface)
    start = SURFACES[surface].start
    for axis in (0, 1):
        low, high = _ends(at, f"gdlab.{'xy'[axis]}")
        for value, inside in [(low, True), (high, True)] + [
            (v, False) for v in _beyond(low, high, whole=False)
        ]:
            point = list(start)
            point[axis] = value
            cfg, warnings = _race({"surface": surface, "start": f"{point[0]!r},{point[1]!r}"})
            assert (warnings == []) == inside and cfg.start == (tuple(point) if inside else start)


def test_lab_links_accept_exactly_the_surfaces_and_optimizers_offered(open_page):
    at = open_page("gradient_descent_lab")
    surfaces = at.selectbox(key="gdlab.surface")
    for name in (*SURFACES, "moon"):
        cfg, warnings = _race({"surface": name})
        assert (not warnings and cfg.surface == name) == _offered(surfaces, name), name
    assert len(surfaces.options) == len(SURFACES)
    pills = at.pills(key="gdlab.opt")
    for name in (*HAND_OPTIMIZERS, "sgd"):
        cfg, warnings = _race({"opt": name})
        accepted = not warnings and [o.name for o in cfg.optimizers] == [name]
        assert accepted == _offered(pills, name), name
    assert len(pills.options) == len(HAND_OPTIMIZERS)


@pytest.mark.parametrize("side", [0, 1], ids=["below", "above"])
def test_a_lab_link_beyond_every_slider_warns_and_still_races(open_page, side):
    at = open_page("gradient_descent_lab", opt="adam")

    def beyond(key: str, whole: bool = False) -> str:
        return _text(_beyond(*_ends(at, key), whole)[side], whole)

    link = {name: beyond(f"gdlab.{name}") for name in ("momentum", "beta1", "beta2")}
    link.update(
        opt="adam",
        steps=beyond("gdlab.steps", whole=True),
        lr=f"adam:{beyond('gdlab.lr.adam')}",
        start=f"{beyond('gdlab.x')},0.0",
    )
    at = open_page("gradient_descent_lab", **link)
    assert not at.exception
    warning = at.warning[0].value
    for name in ("momentum", "beta1", "beta2", "steps", "lr", "start"):
        assert f"ignored {name}" in warning, name
    assert at.table and len(at.get("plotly_chart")) == 2  # the race ran, with the defaults
    assert at.select_slider(key="gdlab.steps").value == lab.DEFAULT_STEPS
    assert at.slider(key="gdlab.x").value == SURFACES[lab.DEFAULT_SURFACE].start[0]
