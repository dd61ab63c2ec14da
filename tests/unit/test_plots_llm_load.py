"""The request-stream figure of a language-model load test, checked as data against Timings."""

from __future__ import annotations

import pytest

from maaslab import plots
from maaslab.llm.measure import Timing
from maaslab.plots.llm_load import MISSED_COLOR


@pytest.fixture
def timings() -> list[Timing]:
    """Three streams, listed as they ended (not as sent), and one that never got a token."""
    slow = Timing(10.2, 8, [10.9, 11.3, 11.7])  # TTFT 0.7 s, TPOT 0.4 s
    fast = Timing(10.0, 8, [10.1, 10.15, 10.2, 10.25])  # TTFT 0.1 s, TPOT 50 ms
    single = Timing(10.1, 8, [10.3])  # one token: TPOT 0
    return [fast, single, slow, Timing(10.3, 8)]


def by_name(fig, name: str):
    return next(t for t in fig.data if t.name == name)


def test_a_row_per_request_in_the_order_sent_from_sending_to_the_last_token(timings):
    fig = plots.request_streams(timings)
    wait = by_name(fig, "waiting for the first token")
    assert list(wait.y) == ["#0", "#0", None, "#1", "#1", None, "#2", "#2", None]
    assert wait.x[:2] == pytest.approx((0.0, 0.1))  # seconds since the first request was sent
    assert wait.x[3:5] == pytest.approx((0.1, 0.3)) and wait.x[6:8] == pytest.approx((0.2, 0.9))
    stream = by_name(fig, "streaming")
    assert stream.x[:2] == pytest.approx((0.1, 0.25)) and stream.x[6:8] == pytest.approx((0.9, 1.7))
    first = by_name(fig, "first token")
    assert list(first.y) == ["#0", "#1", "#2"]
    assert list(first.x) == pytest.approx([0.1, 0.3, 0.9])
    assert "first token after 700 ms · 3 tokens · TPOT 400 ms" in first.customdata[2]
    ticks = next(t for t in fig.data if t.mode == "markers" and t.name == "a token")
    assert len(ticks.x) == 3 + 0 + 2  # every token after the first
    assert list(fig.layout.yaxis.categoryarray) == ["#0", "#1", "#2"]
    assert "3 requests" in fig.layout.title.text


def test_streams_that_miss_the_slo_are_drawn_apart(timings):
    fig = plots.request_streams(timings, slo=(0.5, 0.1))
    met = by_name(fig, "streaming, met the SLO")
    missed = by_name(fig, "streaming, missed the SLO")
    assert [y for y in met.y if y] == ["#0", "#0", "#1", "#1"]
    assert [y for y in missed.y if y] == ["#2", "#2"] and missed.line.color == MISSED_COLOR
    assert "TTFT ≤ 500 ms, TPOT ≤ 100 ms" in fig.layout.title.text
    everyone = plots.request_streams(timings, slo=(1.0, 1.0))
    assert [t.name for t in everyone.data if "missed" in (t.name or "")] == []


def test_no_stream_gives_an_empty_figure():
    fig = plots.request_streams([Timing(0.0, 4)])
    assert "0 requests" in fig.layout.title.text
    assert all(len(t.x or ()) == 0 for t in fig.data)
