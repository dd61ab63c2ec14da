"""Figures of the Engine view, checked as data: what each trace holds against the Trace."""

from __future__ import annotations

import numpy as np
import pytest

from maaslab import plots
from maaslab.llm.demo import DemoModel, Switches, run_demo, tiny_llama
from maaslab.llm.trace import PHASES, BlockMap
from maaslab.plots.llm import CODES, PHASE_COLORS


@pytest.fixture(scope="module")
def model():
    return tiny_llama(0)


@pytest.fixture(scope="module")
def chat(model):
    """A chat run under a small pool (preemptions), its trace and its token budget."""
    result = run_demo(model, "chat", requests=8, num_blocks=16)
    assert result.stats.preemptions > 0
    return result.trace.snapshot()


def test_the_timeline_has_a_cell_per_request_and_step_coloured_by_phase(chat):
    fig = plots.scheduler_timeline(chat, budget=128)
    heat = next(t for t in fig.data if t.type == "heatmap")
    z = np.asarray(heat.z, dtype=float)
    ids = sorted(chat.requests)
    assert list(heat.y) == [f"#{i}" for i in ids] and list(heat.x) == [r.step for r in chat.steps]
    for j, rec in enumerate(chat.steps):
        for i, req_id in enumerate(ids):
            cell = chat.cell(rec, req_id)
            if cell is None:
                assert np.isnan(z[i, j])
            else:
                assert CODES[int(z[i, j])] == cell.phase
                assert heat.text[i][j].startswith(f"request {req_id} · step {rec.step}<br>")
    bars = {t.name: np.asarray(t.y) for t in fig.data if t.type == "bar"}
    computed = [sum(c.tokens for c in rec.cells.values()) for rec in chat.steps]
    assert np.array_equal(bars["prefill tokens"] + bars["decode tokens"], computed)
    assert max(computed) <= 128 and fig.layout.shapes[0].y0 == 128  # the budget line
    legend = [t.name for t in fig.data if t.type == "scatter"]
    assert legend == ["waiting", "prefill", "decode (1 token)", "preempted", "finished"]


def test_a_preempted_cell_says_so_and_a_cache_hit_says_how_many_tokens(chat, model):
    fig = plots.scheduler_timeline(chat)
    texts = [t for row in next(t for t in fig.data if t.type == "heatmap").text for t in row]
    assert any("preempted: its blocks were taken back" in t for t in texts)
    shared = run_demo(model, "shared system prompt", requests=3).trace.snapshot()
    heat = next(t for t in plots.scheduler_timeline(shared).data if t.type == "heatmap")
    texts = [t for row in heat.text for t in row]
    assert sum("(256 found in the prefix cache)" in t for t in texts) == 2


def test_accepted_guesses_get_their_own_colour(model):
    demo = DemoModel(model, "tiny", "", draft=model)
    data = run_demo(demo, "chat", Switches(speculative=True), requests=3).trace.snapshot()
    fig = plots.scheduler_timeline(data)
    z = np.asarray(next(t for t in fig.data if t.type == "heatmap").z, dtype=float)
    assert CODES.index("several") in z
    assert "decode, several tokens (draft accepted)" in [t.name for t in fig.data]
    assert len(CODES) == len(PHASES) + 1 and set(PHASE_COLORS) == set(CODES)


def test_the_block_map_colours_owners_outlines_shared_blocks_and_greys_cached_ones():
    blocks = BlockMap(
        step=7,
        num_blocks=12,
        owners={0: (1, 2, 3), 1: (1, 2, 3), 2: (1,), 5: (2,)},
        cached_free=frozenset({3, 4}),
    )
    fig = plots.kv_block_map(blocks)
    heat = fig.data[0]
    z = np.asarray(heat.z, dtype=float).ravel()[:12]
    assert list(z[:6]) == [3, 3, 3, 1, 1, 4] and list(z[6:]) == [0] * 6  # owner 1 -> 2 + 1
    labels = np.asarray(heat.text).ravel()
    assert list(labels[:6]) == ["×3", "×3", "1", "", "", "2"]
    assert [(s.x0, s.y0) for s in fig.layout.shapes] == [(-0.5, -0.5), (0.5, -0.5)]
    hover = np.asarray(heat.customdata).ravel()
    assert "held by requests 1, 2, 3 (a shared prefix" in hover[0]
    assert "still holds a prefix" in hover[3] and hover[6] == "block 6<br>free"
    assert "4 of 12 in use · 2 shared · 2 free with a cached prefix" in fig.layout.title.text


def test_the_block_maps_of_a_run_match_the_engine_counts(chat):
    for blocks, rec in zip(chat.maps, chat.steps[-len(chat.maps) :], strict=True):
        assert blocks.step == rec.step
        assert len(blocks.owners) == rec.stats.blocks.used
        assert len(blocks.cached_free) == rec.stats.blocks.cached_free


def test_ttft_bars_and_itl_histogram_hold_the_timings(chat):
    timings = chat.timings()
    ids = sorted(chat.requests)
    fig = plots.ttft_itl(timings, ids)
    bars, hist = fig.data
    assert list(bars.x) == [f"#{i}" for i in ids]
    assert np.allclose(bars.y, [t.ttft * 1e3 for t in timings])
    assert np.allclose(hist.x, [g * 1e3 for t in timings for g in t.itls])
    notes = [a.text for a in fig.layout.annotations]
    p50 = np.percentile([t.ttft * 1e3 for t in timings], 50)
    assert f"p50 {p50:.1f} ms" in notes


def test_the_tiles_read_the_last_counters(chat, model):
    tiles = {label: value for label, value, _ in plots.engine_tiles(chat)}
    s = chat.stats
    assert tiles["Steps"] == str(s.steps) and tiles["Preemptions"] == str(s.preemptions)
    assert tiles["Prefix-cache hits"] == str(s.blocks.prefix_hits)
    assert tiles["KV blocks in use"] == f"0 / {s.blocks.num_blocks}"
    assert "Guesses accepted" not in tiles
    demo = DemoModel(model, "tiny", "", draft=model)
    spec = run_demo(demo, "chat", Switches(speculative=True), requests=2).trace.snapshot()
    assert dict((k, v) for k, v, _ in plots.engine_tiles(spec))["Guesses accepted"] == "100%"
