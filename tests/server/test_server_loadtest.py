"""The load generator and the /metrics scrape against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

from maaslab.errors import MaaslabError
from maaslab.serve.loadtest import (
    LoadGenerator,
    request_bodies,
    run_load,
    scrape_metrics,
    sweep,
    throughput_over_time,
)
from maaslab.serve.metrics import ServerMetrics as Registry
from maaslab.serve.scrape import Histogram, parse_metrics


@pytest.fixture(scope="module")
def digits_server(start_server):
    """A fresh server (its own metrics) with the digits CNN only."""
    return start_server(models=("digits-cnn",), max_batch_size=8, max_delay_ms=5)


def _consistent(r, requests=None):
    assert r.ok + r.rejected + r.error_count == r.requests
    if requests is not None:
        assert r.requests == requests
    assert len(r.latencies_ms) == len(r.status) == len(r.started_s) == r.requests
    assert np.all(r.finished_s >= r.started_s) and np.all(r.latencies_ms >= 0)
    if r.ok:
        assert r.p50_ms <= r.p90_ms <= r.p99_ms <= r.ok_latencies_ms.max() + 1e-9
        assert r.p50_ms == pytest.approx(np.percentile(r.ok_latencies_ms, 50))
        assert r.throughput == pytest.approx(r.ok / r.seconds)


def test_request_bodies_hold_held_out_data():
    digits = [json.loads(b)["inputs"][0] for b in request_bodies("digits-cnn")]
    pixels = np.array([d["data"] for d in digits])
    assert pixels.shape == (450, 64) and pixels.min() == 0 and pixels.max() == 16
    assert digits[0]["shape"] == [1, 64] and digits[0]["datatype"] == "FP32"
    texts = [json.loads(b)["inputs"][0] for b in request_bodies("sentiment-minilm", n=5)]
    assert len(texts) == 5 and texts[0]["datatype"] == "BYTES" and texts[0]["shape"] == [1]
    assert len(request_bodies("sentiment-minilm")) == 264
    with pytest.raises(MaaslabError, match="digits-\\* or sentiment-\\*"):
        request_bodies("mini-gpt")


def test_bad_arguments_are_refused_before_sending():
    with pytest.raises(MaaslabError, match="duration_s or requests"):
        run_load("http://127.0.0.1:9", "digits-cnn", concurrency=1)
    with pytest.raises(MaaslabError, match="concurrency must be"):
        run_load("http://127.0.0.1:9", "digits-cnn", concurrency=0, requests=1)
    with pytest.raises(MaaslabError, match="duration_s"):
        LoadGenerator("http://127.0.0.1:9", "digits-cnn", 2, duration_s=-1)


def test_a_dead_server_counts_as_transport_errors():
    r = run_load("http://127.0.0.1:9", "digits-cnn", concurrency=2, requests=4)
    _consistent(r, 4)
    assert r.ok == 0 and r.errors == {"ConnectError": 4} and np.isnan(r.p99_ms)
    assert np.all(r.status == 0)


def test_run_load_counts_and_metrics_agree(digits_server):
    r = run_load(digits_server.url, "digits-cnn", concurrency=6, requests=120)
    _consistent(r, 120)
    assert r.ok == 120 and r.errors == {} and r.rejected == 0
    m = scrape_metrics(digits_server.url)
    # One row per request: the batch-size histogram adds up to every answered request.
    sizes = m.batch_size["digits-cnn"]
    assert sizes.total == 120 and sum(sizes.counts) == sizes.count
    assert sizes.count < 120  # six clients at once: some batches held more than one request
    assert 1 < m.mean_batch_size("digits-cnn") <= 6
    assert m.requests_by_code("digits-cnn") == {"200": 120}
    assert m.queue_depth["digits-cnn"] == 0
    assert m.latency[("digits-cnn", "/v2/models/{name}/infer")].count == 120
    t, rate = throughput_over_time(r, bin_s=0.25)
    assert len(t) == len(rate) and rate.sum() * 0.25 == pytest.approx(r.ok)


def test_run_load_works_inside_a_running_event_loop(digits_server):
    async def notebook_cell():  # Jupyter runs cells inside an event loop
        return run_load(digits_server.url, "digits-cnn", concurrency=2, requests=10)

    _consistent(asyncio.run(notebook_cell()), 10)


def test_overload_rejects_with_503_and_answers_the_rest(start_server):
    server = start_server(
        models=("sentiment-minilm",), max_batch_size=2, max_delay_ms=0, max_queue=1
    )
    r = run_load(server.url, "sentiment-minilm", concurrency=12, duration_s=1.5)
    _consistent(r)
    assert r.ok > 0 and r.rejected > 0 and r.errors == {}
    assert len(r.rejected_latencies_ms) == r.rejected
    m = scrape_metrics(server.url)
    assert m.requests_by_code("sentiment-minilm").get("503") == r.rejected
    assert m.rejected["sentiment-minilm"] == r.rejected


def test_live_generator_snapshots_then_stops(digits_server):
    gen = LoadGenerator(digits_server.url, "digits-cnn", concurrency=3).start()
    deadline = time.monotonic() + 30
    while gen.snapshot().completed < 20 and time.monotonic() < deadline:
        time.sleep(0.1)
    live = gen.snapshot()
    assert live.running and live.completed >= 20 and live.p50_ms <= live.p90_ms <= live.p99_ms
    assert live.throughput > 0 and live.recent_throughput > 0 and live.elapsed_s > 0
    result = gen.stop()
    assert not gen.running and gen.error is None and result is not None
    _consistent(result)
    final = gen.snapshot()
    assert not final.running and final.completed == result.ok >= live.completed


def test_sweep_runs_each_concurrency_and_honours_cancel(digits_server):
    stages = []
    results = sweep(
        digits_server.url,
        "digits-cnn",
        [1, 3],
        duration_s=0.4,
        progress=lambda stage, f: stages.append((stage, f)),
    )
    assert [r.concurrency for r in results] == [1, 3] and all(r.ok > 0 for r in results)
    assert stages[0] == ("concurrency 1", 0.0) and stages[-1] == ("done", 1.0)
    stop = threading.Event()
    stop.set()
    assert sweep(digits_server.url, "digits-cnn", [1, 2], 0.4, cancel=stop) == []


def test_parse_metrics_matches_what_was_observed():
    reg = Registry()
    hook = reg.batch_hook("m")
    for rows in (1, 3, 3, 40):
        hook(rows, rows, 0.01)
    reg.observe("m", "/v2/models/{name}/infer", 200, 0.002)
    reg.observe("m", "/v2/models/{name}/infer", 503, 0.0001)
    reg.watch_queue("m", lambda: 7)
    m = parse_metrics(reg.render().body.decode())
    h = m.batch_size["m"]
    assert h.count == 4 and h.total == 47 and h.mean == pytest.approx(47 / 4)
    assert dict(zip(h.bounds, h.counts, strict=True)) == {
        1: 1,
        2: 0,
        4: 2,
        8: 0,
        16: 0,
        32: 0,
        64: 1,
        128: 0,
        256: 0,
        512: 0,
        float("inf"): 0,
    }
    assert m.requests_by_code() == {"200": 1, "503": 1} and m.errors == {"503": 1}
    assert m.queue_depth == {"m": 7}
    assert m.latency[("m", "/v2/models/{name}/infer")].count == 2
    lat = m.latency[("m", "/v2/models/{name}/infer")]
    # 0.0001 s falls in the first bucket (0, 0.001], 0.002 s in (0.001, 0.0025].
    assert lat.quantile(0.5) == pytest.approx(0.001) and 0.001 < lat.quantile(0.99) <= 0.0025
    assert np.isnan(Histogram((1.0, float("inf")), (0, 0), 0, 0.0).quantile(0.5))


def test_open_loop_rate_spaces_the_requests(digits_server):
    r = run_load(digits_server.url, "digits-cnn", concurrency=8, requests=20, rate=100.0)
    _consistent(r, 20)
    # Request k may not leave before k / rate, whatever the answers do.
    assert np.all(np.sort(r.started_s) >= np.arange(20) / 100.0 - 1e-3)
    with pytest.raises(MaaslabError, match="rate must be"):
        run_load(digits_server.url, "digits-cnn", concurrency=1, requests=1, rate=0)


def test_the_client_leaves_the_heap_out_of_gc_only_while_it_runs(digits_server):
    # A full collection over torch's objects would stall the client and count as latency.
    import gc

    during: list[int] = []
    r = run_load(
        digits_server.url,
        "digits-cnn",
        concurrency=2,
        requests=6,
        progress=lambda stage, fraction: during.append(gc.get_freeze_count()),
    )
    _consistent(r, 6)
    assert min(during) > 0 and gc.get_freeze_count() == 0
