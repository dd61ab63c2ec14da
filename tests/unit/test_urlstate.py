"""Settings in the URL: values are read with their field's type, long ones refused and quoted
short, and a select slider keeps a link's value between its stops without doubling a label."""

from maaslab.optimization import lab_state as lab
from maaslab.studio import StudioConfig
from maaslab.urlstate import (
    MAX_VALUE_CHARS,
    QUOTE_CHARS,
    clipped,
    config_from_params,
    quoted,
    slider_options,
)


def test_a_long_value_is_refused_unread_and_quoted_short():
    flood = "a" * 5000
    cfg, (warning,) = config_from_params(StudioConfig, {"dataset": flood})
    assert cfg == StudioConfig()
    assert f"longer than {MAX_VALUE_CHARS} characters" in warning
    assert len(warning) < 200 and quoted(flood) in warning
    assert quoted(flood) == repr("a" * (QUOTE_CHARS - 1) + "…")
    assert quoted("mnist") == "'mnist'" and clipped("abc", 2) == "a…" and clipped("ab", 2) == "ab"


def test_the_lab_quotes_long_values_short():
    flood = "x" * 5000
    params = {"surface": flood, "opt": flood, "lr": flood, "start": flood, flood: "1"}
    _, warnings = lab.race_config_from_params(params)
    assert len(warnings) == 6  # unknown parameter, surface, opt (and none left), lr, start
    assert all(len(w) < 200 for w in warnings), warnings


def test_a_value_between_stops_is_kept_as_one_more_stop():
    stops = (0.001, 0.01, 0.1)
    assert slider_options(stops, 0.01) == [0.001, 0.01, 0.1]
    assert slider_options(stops, 0.005) == [0.001, 0.005, 0.01, 0.1]
    assert slider_options((1, 4, 8), 6) == [1, 4, 6, 8]


def test_a_value_labelled_like_a_stop_takes_its_place():
    # "{:g}" shows 0.0100000001 as "0.01": two stops named "0.01" could not be told apart
    label = "{:g}".format
    options = slider_options((0.001, 0.01, 0.1), 0.0100000001, label)
    assert options == [0.001, 0.0100000001, 0.1]
    assert len({label(o) for o in options}) == len(options)
    assert slider_options((0.001, 0.01, 0.1), 0.0100000001) == [0.001, 0.01, 0.0100000001, 0.1]
