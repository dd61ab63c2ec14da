"""The Gradient Descent Lab's settings: links round-trip, nonsense is replaced and named."""

import math

import pytest

from maaslab.errors import MaaslabError
from maaslab.optimization import lab_state as lab
from maaslab.optimization.optim import HAND_OPTIMIZERS, OptimizerConfig, RaceConfig, race
from maaslab.optimization.surfaces import SURFACES
from maaslab.urlstate import slider_options


def _race(**kwargs) -> RaceConfig:
    opts = (
        OptimizerConfig("gd", lr=0.0007, momentum=0.8, beta1=0.85, beta2=0.99),
        OptimizerConfig("nesterov", lr=3e-5, momentum=0.8, beta1=0.85, beta2=0.99),
        OptimizerConfig("adam", lr=0.123456789, momentum=0.8, beta1=0.85, beta2=0.99),
    )
    return RaceConfig(
        **{"surface": "beale", "optimizers": opts, "start": (-1.23, 0.1), "steps": 321, **kwargs}
    )


def test_a_race_round_trips_through_the_url():
    cfg = _race()
    params = lab.race_config_to_params(cfg)
    assert all(isinstance(v, str) for v in params.values())
    assert params["opt"] == "gd,nesterov,adam" and params["start"] == "-1.23,0.1"
    back, warnings = lab.race_config_from_params(params)
    assert warnings == []
    assert back == cfg
    # the same link given as lists (st.query_params.get_all) reads the same
    assert lab.race_config_from_params({k: [v] for k, v in params.items()}) == (cfg, [])


@pytest.mark.parametrize("surface", list(SURFACES))
def test_every_surface_default_round_trips(surface):
    cfg = lab.default_race(surface)
    assert lab.race_config_from_params(lab.race_config_to_params(cfg)) == (cfg, [])
    assert cfg.start == SURFACES[surface].start
    assert [o.lr for o in cfg.optimizers] == [
        SURFACES[surface].lr_for(n) for n in lab.DEFAULT_OPTIMIZERS
    ]


def test_an_empty_url_is_the_default_race():
    assert lab.race_config_from_params({}) == (lab.default_race(), [])


def test_one_lr_for_all_and_repeated_opt_params():
    cfg, warnings = lab.race_config_from_params({"opt": ["gd", "adam"], "lr": "0.02"})
    assert warnings == []
    assert [(o.name, o.lr) for o in cfg.optimizers] == [("gd", 0.02), ("adam", 0.02)]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"surface": "moon"}, "surface='moon'"),
        ({"lr": "abc"}, "lr='abc'"),
        ({"lr": "-1"}, "lr='-1'"),
        ({"lr": "0"}, "lr='0'"),
        ({"lr": "inf"}, "lr='inf'"),
        ({"steps": "1e9"}, "steps='1e9'"),
        ({"steps": "2.5"}, "steps='2.5'"),
        ({"steps": "zero"}, "steps='zero'"),
        ({"start": "nan"}, "start='nan'"),
        ({"start": "nan,1"}, "start='nan,1'"),
        ({"start": "50,50"}, "outside the window"),
        ({"momentum": "1.5"}, "momentum='1.5'"),
        ({"beta2": "1"}, "beta2='1'"),
        ({"opt": "sgd,lbfgs"}, "sgd,lbfgs"),
        ({"colour": "red"}, "unknown URL parameters: colour"),
    ],
)
def test_nonsense_is_replaced_by_the_default_with_a_warning(params, named):
    cfg, warnings = lab.race_config_from_params(params)
    assert len(warnings) >= 1 and named in " ".join(warnings), warnings
    default = lab.default_race()
    assert cfg.surface == default.surface and cfg.steps == default.steps
    assert cfg.start == default.start
    assert [o.name for o in cfg.optimizers] == list(lab.DEFAULT_OPTIMIZERS)
    assert [o.lr for o in cfg.optimizers] == [o.lr for o in default.optimizers]
    race(cfg)  # and the race still runs


def test_warnings_say_why_a_value_was_ignored():
    _, warnings = lab.race_config_from_params({"lr": "abc", "steps": "0", "start": "1"})
    text = "\n".join(warnings)
    assert "not a number" in text and "from 10 to 5000" in text and "two numbers x,y" in text


def test_a_bad_value_spoils_only_itself():
    cfg, warnings = lab.race_config_from_params(
        {
            "surface": "quadratic",
            "opt": "gd,rmsprop,wat",
            "lr": "gd:abc,rmsprop:0.3,foo:1",
            "steps": "50",
            "start": "1,1,1",
        }
    )
    assert len(warnings) == 4, warnings  # opt wat, lr gd, lr foo, start
    quadratic = SURFACES["quadratic"]
    assert cfg.surface == "quadratic" and cfg.steps == 50 and cfg.start == quadratic.start
    assert [(o.name, o.lr) for o in cfg.optimizers] == [
        ("gd", quadratic.lr_for("gd")),
        ("rmsprop", 0.3),
    ]


def test_nesterov_without_momentum_falls_back_instead_of_raising():
    cfg, warnings = lab.race_config_from_params({"opt": "nesterov", "momentum": "0"})
    assert cfg.optimizers[0].momentum == 0.9 and "nesterov" in warnings[0]


def test_widgets_round_trip_and_remember_every_lr():
    cfg = _race()
    values = lab.widget_values(cfg)
    assert values["opt"] == ["gd", "nesterov", "adam"]
    assert values["lr.rmsprop"] == SURFACES["beale"].lr_for("rmsprop")  # not racing, still set
    assert lab.config_from_widgets(values) == cfg
    with pytest.raises(MaaslabError, match="learning rate"):
        lab.config_from_widgets({**values, "lr.gd": 0.0})


def test_surface_defaults_move_the_start_and_the_lrs():
    values = lab.surface_defaults("quadratic")
    quadratic = SURFACES["quadratic"]
    assert (values["x"], values["y"]) == quadratic.start
    assert {k for k in values if k.startswith("lr.")} == {f"lr.{n}" for n in HAND_OPTIMIZERS}
    assert values["lr.gd"] == quadratic.lr_for("gd")
    assert "steps" not in values and "momentum" not in values  # those stay as the user set them


def test_choices_offer_the_current_value():
    assert slider_options(lab.LR_GRID, 0.0123) == sorted([*lab.LR_GRID, 0.0123])
    assert slider_options(lab.LR_GRID, 0.01) == list(lab.LR_GRID)
    assert 0.001 in lab.LR_GRID and 5e-5 in lab.LR_GRID  # exact floats, not 5.000000000000001e-05


def test_a_click_picks_a_start_inside_the_window():
    rosen = SURFACES["rosenbrock"]
    assert lab.start_from_points(rosen, [{"x": 0.5, "y": 1.25, "curve_number": 4}]) == (0.5, 1.25)
    assert lab.start_from_points(rosen, [{"x": 9.0, "y": -9.0}]) == (2.0, -1.0)
    assert lab.start_from_points(rosen, [{"x": "a"}, {"x": math.nan, "y": 0}]) is None
    assert lab.start_from_points(rosen, []) is None
    grid = lab.click_grid(rosen, n=5)
    assert grid.shape == (25, 2)
    assert grid[:, 0].min() == -2.0 and grid[:, 1].max() == 3.0


def test_the_table_says_where_each_optimizer_ended_and_which_diverged():
    opts = (OptimizerConfig("adam", lr=0.1), OptimizerConfig("gd", lr=0.05))
    result = race(RaceConfig("rosenbrock", opts, start=(-1.5, 2.0), steps=1000))
    adam, gd = lab.race_table(result)
    assert adam["status"] == "ran 1000 steps"
    assert adam["distance to minimum"] < 0.05 and adam["final loss"] < 1e-3
    assert adam["final loss"] == result.paths[0].final_loss
    assert gd["status"].startswith("diverged at step ")
    step = int(gd["status"].rsplit(" ", 1)[1])
    assert step == result.paths[1].diverged_at and step < 50
    saddle = race(RaceConfig("saddle", (OptimizerConfig("gd", lr=0.1),), steps=10))
    assert lab.race_table(saddle)[0]["distance to minimum"] is None  # unbounded below
