"""Attention figures: weights land in the right cells, repeated tokens keep their own rows."""

import numpy as np
import pytest
import torch

from maaslab import plots

TOKENS = ["the", "cat", "saw", "the", "dog"]  # "the" twice: a categorical axis would merge them


def _weights(H=3, T=5, seed=0):
    return np.random.default_rng(seed).dirichlet(np.ones(T), size=(H, T))  # rows sum to 1


def test_attention_heatmap_puts_query_rows_and_key_columns():
    w = _weights()[0]
    fig = plots.attention_heatmap(torch.from_numpy(w), TOKENS, title="one head")
    assert len(fig.data) == 1 and fig.data[0].type == "heatmap"
    np.testing.assert_allclose(np.array(fig.data[0].z, dtype=float), w)
    assert list(fig.data[0].x) == list(range(5)) == list(fig.data[0].y)
    assert list(fig.layout.xaxis.ticktext) == TOKENS == list(fig.layout.yaxis.ticktext)
    assert fig.layout.yaxis.autorange == "reversed"  # the first query on top
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0.0, 1.0)
    # Hover names the query (row) and key (column) tokens of each cell.
    assert tuple(fig.data[0].customdata[3][1]) == ("the", "cat")
    assert fig.layout.title.text == "one head"


def test_attention_heatmap_defaults_to_positions_and_rejects_bad_shapes():
    fig = plots.attention_heatmap(np.eye(3))
    assert list(fig.layout.xaxis.ticktext) == ["0", "1", "2"]
    with pytest.raises(ValueError, match=r"shape \(T, T\)"):
        plots.attention_heatmap(np.ones((3, 4)))
    with pytest.raises(ValueError, match="2 tokens for attention weights over 3 positions"):
        plots.attention_heatmap(np.eye(3), ["a", "b"])


def test_heads_grid_one_panel_per_head():
    w = _weights(H=6)
    fig = plots.heads_grid(w, TOKENS, cols=4)
    assert [t.type for t in fig.data] == ["heatmap"] * 6
    for h, trace in enumerate(fig.data):
        np.testing.assert_allclose(np.array(trace.z, dtype=float), w[h])
    assert [a.text for a in fig.layout.annotations] == [f"head {h}" for h in range(6)]
    assert [t.showscale for t in fig.data] == [True] + [False] * 5  # one shared colour bar
    # Six heads in rows of four: the fifth head opens the second row.
    assert fig.data[4].xaxis == "x5" and fig.layout.yaxis5.domain[1] < fig.layout.yaxis.domain[0]
    assert list(fig.layout.xaxis6.ticktext) == TOKENS
    with pytest.raises(ValueError, match=r"shape \(H, T, T\)"):
        plots.heads_grid(w[0])
