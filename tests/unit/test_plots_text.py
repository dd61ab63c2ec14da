"""Text-generation figures: bars follow the first distribution's ranking; whitespace is visible."""

import numpy as np
import pytest
import torch

from maaslab import plots
from maaslab.plots.text import token_label

TOKENS = ["a", " ", "\n", "b", "c"]


def test_sampling_bars_one_series_per_setting_ordered_by_the_first():
    base = np.array([0.1, 0.5, 0.3, 0.05, 0.05])
    sharp = torch.tensor([0.0, 0.9, 0.1, 0.0, 0.0])
    fig = plots.sampling_bars({"T=1": base, "T=0.5": sharp}, TOKENS, top=3)
    assert [bar.name for bar in fig.data] == ["T=1", "T=0.5"]
    assert list(fig.data[0].x) == ["␣", "⏎", "a"]  # most likely first, whitespace made visible
    np.testing.assert_allclose(fig.data[0].y, [0.5, 0.3, 0.1])
    np.testing.assert_allclose(fig.data[1].y, [0.9, 0.1, 0.0])  # same tokens, other setting
    assert fig.layout.barmode == "group"


def test_sampling_bars_rejects_wrong_shapes_and_nothing():
    with pytest.raises(ValueError, match=r"'x' has shape \(3,\), expected \(5,\)"):
        plots.sampling_bars({"x": np.ones(3) / 3}, TOKENS)
    with pytest.raises(ValueError, match="at least one"):
        plots.sampling_bars({}, TOKENS)


def test_token_label():
    assert token_label(" if\n") == "␣if⏎" and token_label("") == "∅" and token_label("x") == "x"
