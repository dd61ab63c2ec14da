"""Embedding figures: similarities in the right cells, PCA as sklearn's, bars per model."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from maaslab import plots

TEXTS = ["great food", "awful service", "great food"]  # a repeat keeps its own row


def test_similarity_matrix_cells_labels_and_scale():
    e = np.random.default_rng(0).normal(size=(3, 5))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sims = e @ e.T
    fig = plots.similarity_matrix(torch.from_numpy(sims), TEXTS, title="three")
    (trace,) = fig.data
    assert trace.type == "heatmap"
    np.testing.assert_allclose(np.array(trace.z, dtype=float), sims)
    assert (trace.zmin, trace.zmax) == (-1.0, 1.0)  # cosine range, 0 in the middle
    assert list(fig.layout.yaxis.ticktext) == TEXTS == list(fig.layout.xaxis.ticktext)
    assert tuple(trace.customdata[0][1]) == ("great food", "awful service")
    assert fig.layout.title.text == "three"
    long = ["a very long review text that goes on and on"] * 3
    assert plots.similarity_matrix(sims, long).layout.xaxis.ticktext[0].endswith("…")
    with pytest.raises(ValueError, match="2 texts for a similarity matrix"):
        plots.similarity_matrix(sims, TEXTS[:2])


def test_embedding_scatter_is_pca_coloured_by_class():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(40, 6)) * np.array([5, 3, 1, 1, 1, 1])
    y = np.arange(40) % 2
    texts = [f"review {i}" for i in range(40)]
    fig = plots.embedding_scatter(e, y, ("negative", "positive"), texts)
    assert [t.name for t in fig.data] == ["negative", "positive"]
    ref = PCA(n_components=2).fit(e)
    xy = ref.transform(e)
    for c, trace in enumerate(fig.data):
        keep = y == c
        # A principal direction is defined up to its sign.
        for axis, coords in ((0, trace.x), (1, trace.y)):
            ours = np.array(coords, dtype=float)
            assert np.allclose(np.abs(ours), np.abs(xy[keep, axis]), atol=1e-8)
        assert list(trace.text) == [t for t, k in zip(texts, keep, strict=True) if k]
    share = ref.explained_variance_ratio_
    assert f"({share[0]:.0%} of variance)" in fig.layout.xaxis.title.text
    with pytest.raises(ValueError, match="must agree"):
        plots.embedding_scatter(e, y[:5], ("n", "p"))
    with pytest.raises(ValueError, match="2 dimensions"):
        plots.embedding_scatter(e[0], y, ("n", "p"))


def test_phenomenon_accuracy_bars_group_per_phenomenon():
    results = {
        "TF-IDF": {"overall": 0.69, "negation": 0.68, "sarcasm": 0.82},
        "LoRA": {"overall": 0.93, "negation": 0.94, "sarcasm": 0.92, "contrast": 0.95},
    }
    fig = plots.phenomenon_accuracy_bars(results)
    assert [t.name for t in fig.data] == ["TF-IDF", "LoRA"] and fig.layout.barmode == "group"
    assert list(fig.data[1].x) == ["overall", "negation", "sarcasm", "contrast"]
    assert list(fig.data[0].y) == [0.69, 0.68, 0.82, None]  # a missing phenomenon stays empty
    assert list(fig.data[1].text) == ["0.93", "0.94", "0.92", "0.95"]
    with pytest.raises(ValueError, match="at least one model"):
        plots.phenomenon_accuracy_bars({})
