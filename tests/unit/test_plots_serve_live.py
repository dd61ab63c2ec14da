"""Figures of a load test: the live timeline and every request's latency over time."""

import numpy as np

from maaslab import plots
from maaslab.serve.loadtest import LiveStats, LoadResult


def stats(t: float, p50: float) -> LiveStats:
    """A snapshot at t seconds with the given median latency."""
    return LiveStats(
        elapsed_s=t,
        completed=int(10 * t),
        rejected=0,
        errors=0,
        throughput=10.0,
        recent_throughput=12.0,
        p50_ms=p50,
        p90_ms=1.5 * p50,
        p99_ms=2 * p50,
        running=True,
    )


def test_live_timeline_draws_every_series_and_leaves_gaps_for_nan():
    snaps = [stats(0.5, float("nan")), stats(1.0, 4.0), stats(1.5, 5.0)]
    fig = plots.live_timeline(snaps, [0.0, 3.0, 1.0])
    names = [trace.name for trace in fig.data]
    assert names == ["last 3 s", "overall", "p50", "p90", "p99", "queue depth"]
    assert list(fig.data[2].y) == [None, 4.0, 5.0] and list(fig.data[3].y) == [None, 6.0, 7.5]
    assert list(fig.data[4].y) == [None, 8.0, 10.0]
    assert list(fig.data[5].y) == [0.0, 3.0, 1.0] and list(fig.data[0].x) == [0.5, 1.0, 1.5]
    assert len(plots.live_timeline(snaps).data) == 5  # no queue depth: no third panel


def test_latency_timeline_separates_ok_rejected_and_failed():
    status = np.array([200, 200, 503, 0, 200])
    started = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    latencies = np.array([5.0, 7.0, 1.0, 60.0, 9.0])
    result = LoadResult(
        model="digits-cnn",
        concurrency=2,
        requests=5,
        ok=3,
        rejected=1,
        errors={"ConnectError": 1},
        seconds=1.0,
        throughput=3.0,
        p50_ms=7.0,
        p90_ms=8.6,
        p99_ms=8.96,
        latencies_ms=latencies,
        status=status,
        started_s=started,
        finished_s=started + latencies / 1000,
    )
    fig = plots.latency_timeline(result)
    by_name = {trace.name: trace for trace in fig.data}
    assert list(by_name) == ["ok (200)", "rejected (503)", "failed"]
    assert list(by_name["ok (200)"].y) == [5.0, 7.0, 9.0]
    assert list(by_name["rejected (503)"].x) == [0.2] and list(by_name["failed"].y) == [60.0]
    assert [s.y0 for s in fig.layout.shapes] == [7.0, 8.96]
    assert "(5 at concurrency 2)" in fig.layout.title.text


def test_dashboard_tiles_read_the_snapshot():
    tiles = plots.dashboard_tiles(stats(2.0, 4.0), 3.0)
    values = {label: value for label, value, _ in tiles}
    assert len(tiles) == 8 and [label for label, _, _ in tiles][:2] == [
        "Throughput, last 3 s",
        "Throughput overall",
    ]
    assert values["Throughput, last 3 s"] == "12.0/s" and values["Completed"] == "20"
    assert (values["p50 latency"], values["p90 latency"], values["p99 latency"]) == (
        "4.0 ms",
        "6.0 ms",
        "8.0 ms",
    )
    assert values["Queue depth"] == "3"
    assert dict((label, tip) for label, _, tip in tiles)["Rejected (503)"] == "0 other errors"
    before = {label: value for label, value, _ in plots.dashboard_tiles(stats(0.1, np.nan), np.nan)}
    assert before["p50 latency"] == "—" and before["Queue depth"] == "—"
