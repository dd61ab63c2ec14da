"""Load generation against a model server: closed-loop clients, live stats, a /metrics scrape.

`concurrency` clients each send one OIP v2 request, wait for the answer, and send the next, so
at most `concurrency` requests are in flight (a closed loop, like users who wait for a reply).
Payloads are held-out data (test reviews, test digits), one row per request, encoded once up
front so the client spends its CPU on HTTP, not on JSON. Little's law ties the numbers together:
in flight = throughput x latency.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import numpy as np

from maaslab.errors import MaaslabError
from maaslab.serve.client import EXPLAINABLE, infer_path, kind_of, request_for
from maaslab.serve.scrape import Histogram, ServerMetrics, scrape_metrics

__all__ = [
    "Histogram",
    "LiveStats",
    "LoadGenerator",
    "LoadResult",
    "ServerMetrics",
    "loadable",
    "request_bodies",
    "run_load",
    "scrape_metrics",
    "scrape_or_none",
    "sweep",
    "throughput_over_time",
]

Progress = Callable[[str, float], None]  # (stage, fraction), the maaslab.jobs.Task convention
MAX_CONCURRENCY = 1024  # more open connections than this from one process only measures the client
REQUEST_TIMEOUT_S = 60.0  # longer than the server's own per-request timeout (30 s)
RECENT_WINDOW_S = 3.0  # LiveStats.recent_throughput counts answers in this many last seconds


def request_bodies(model: str, n: int | None = None) -> list[bytes]:
    """OIP v2 JSON request bodies of one held-out row each for `model` (digits-* or sentiment-*).

    Parameters
    ----------
    model : served model name; digits-* get test-split pixels (0..16), sentiment-* test reviews.
    n : how many distinct bodies (default: the whole test split).
    """
    import json

    try:
        kind = kind_of(model)
    except MaaslabError:
        kind = None
    if kind == "digits":
        from maaslab.data import DIGIT_PIXEL_MAX, load_dataset

        # load_dataset scales pixels to 0..1; the server takes sklearn's 0..16 scale.
        scaled = load_dataset("digits").X_test * DIGIT_PIXEL_MAX
        rows = list(np.clip(np.round(scaled), 0, DIGIT_PIXEL_MAX))
    elif kind == "sentiment":
        from maaslab.reviews import load_reviews

        rows = list(load_reviews("test").texts)
    else:
        raise MaaslabError(
            f"no load test payloads for model {model!r}: use a digits-* or "
            "sentiment-* model (the OIP v2 tensor models)"
        )
    rows = rows[:n] if n is not None else rows
    return [json.dumps(request_for(model, row).body).encode() for row in rows]


def loadable(models: Sequence[str]) -> list[str]:
    """The served models a load test can drive: the OIP tensor models (digits, sentiment)."""
    return [m for m in models if kind_of(m) in EXPLAINABLE]


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured; per-request arrays are in the order requests were sent."""

    model: str
    concurrency: int
    requests: int  # requests sent and finished (answered or failed)
    ok: int  # 200 answers
    rejected: int  # 503 answers (full queue)
    errors: dict[str, int]  # any other outcome: HTTP status ("500") or transport error name
    seconds: float  # wall time of the run
    throughput: float  # ok answers per second
    p50_ms: float  # latency percentiles of the ok answers (nan when there are none)
    p90_ms: float
    p99_ms: float
    latencies_ms: np.ndarray  # every request's latency
    status: np.ndarray  # every request's HTTP status (0: no answer, see errors)
    started_s: np.ndarray  # when each request was sent, seconds since the run began
    finished_s: np.ndarray  # when its answer (or failure) arrived
    started_at: float = 0.0  # time.time() when the run began
    limited: int = 0  # 429 answers: a limit of the key's tenant (maaslab.serve.quotas)

    @property
    def error_count(self) -> int:
        """Requests that were neither answered 200 nor refused with 503 or 429."""
        return sum(self.errors.values())

    @property
    def ok_latencies_ms(self) -> np.ndarray:
        """Latencies of the 200 answers."""
        return self.latencies_ms[self.status == 200]

    @property
    def rejected_latencies_ms(self) -> np.ndarray:
        """Latencies of the 503 answers (a full queue must refuse at once)."""
        return self.latencies_ms[self.status == 503]

    def summary(self) -> str:
        """One line: concurrency, throughput, percentiles, rejects and errors."""
        return (
            f"{self.model} c={self.concurrency}: {self.ok}/{self.requests} ok, "
            f"{self.throughput:.1f} req/s, p50 {self.p50_ms:.1f} ms, p90 {self.p90_ms:.1f} "
            f"ms, p99 {self.p99_ms:.1f} ms, {self.rejected} rejected, "
            + (f"{self.limited} limited (429), " if self.limited else "")
            + f"{self.error_count} errors"
        )


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


class _Recorder:
    """Per-request outcomes, appended by the client loop and read by LiveStats (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[float] = []
        self.finished: list[float] = []
        self.status: list[int] = []
        self.errors: dict[str, int] = {}
        self.t0 = time.perf_counter()
        self.wall0 = time.time()

    def add(self, started: float, finished: float, status: int, error: str | None) -> None:
        with self.lock:
            self.started.append(started - self.t0)
            self.finished.append(finished - self.t0)
            self.status.append(status)
            if error is not None:
                self.errors[error] = self.errors.get(error, 0) + 1

    def result(self, model: str, concurrency: int, seconds: float) -> LoadResult:
        with self.lock:
            started = np.asarray(self.started, dtype=np.float64)
            finished = np.asarray(self.finished, dtype=np.float64)
            status = np.asarray(self.status, dtype=np.int64)
            errors = dict(self.errors)
        latencies = (finished - started) * 1000.0
        ok = latencies[status == 200]
        n_ok = int((status == 200).sum())
        return LoadResult(
            model=model,
            concurrency=concurrency,
            requests=len(status),
            ok=n_ok,
            rejected=int((status == 503).sum()),
            errors=errors,
            seconds=seconds,
            throughput=n_ok / seconds if seconds > 0 else 0.0,
            p50_ms=_percentile(ok, 50),
            p90_ms=_percentile(ok, 90),
            p99_ms=_percentile(ok, 99),
            latencies_ms=latencies,
            status=status,
            started_s=started,
            finished_s=finished,
            started_at=self.wall0,
            limited=int((status == 429).sum()),
        )


def _check_args(
    concurrency: int, duration_s: float | None, requests: int | None, rate: float | None = None
) -> None:
    if rate is not None and not 0 < rate <= 100_000:
        raise MaaslabError(f"rate must be in (0, 100000] requests per second, got {rate}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise MaaslabError(f"concurrency must be 1..{MAX_CONCURRENCY}, got {concurrency}")
    if duration_s is not None and not 0 < duration_s <= 3600:
        raise MaaslabError(f"duration_s must be in (0, 3600] seconds, got {duration_s}")
    if requests is not None and requests < 1:
        raise MaaslabError(f"requests must be at least 1, got {requests}")


async def _drive(
    url: str,
    model: str,
    bodies: Sequence[bytes],
    concurrency: int,
    duration_s: float | None,
    requests: int | None,
    api_key: str | None,
    recorder: _Recorder,
    progress: Progress | None,
    cancel: threading.Event | None,
    rate: float | None = None,
    endpoint: str | None = None,
) -> float:
    # `concurrency` workers share one client session; each sends, waits, and sends again.
    # aiohttp rather than httpx: the client shares the machine's cores with the server it
    # measures, and aiohttp spends about a tenth of httpx's CPU time per request (0.1-0.2 ms
    # against 1 ms measured here), which the model gets to use instead.
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    target = url.rstrip("/") + (endpoint or infer_path(model))
    sent = 0
    t0 = time.perf_counter()
    deadline = t0 + duration_s if duration_s is not None else None

    def fraction() -> float:
        if requests is not None:
            return min(1.0, len(recorder.status) / requests)
        return min(1.0, (time.perf_counter() - t0) / duration_s) if duration_s else 0.0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while True:
            if cancel is not None and cancel.is_set():
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            if requests is not None and sent >= requests:
                return
            k, body = sent, bodies[sent % len(bodies)]
            sent += 1
            if rate is not None:  # open loop: request k leaves at k / rate, answered or not
                wait = t0 + k / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                if deadline is not None and time.perf_counter() >= deadline:
                    return
            started = time.perf_counter()
            try:
                async with session.post(target, data=body, headers=headers) as response:
                    await response.read()
                    status = response.status
                error = None if status in (200, 429, 503) else str(status)
            except (aiohttp.ClientError, TimeoutError) as err:
                status, error = 0, transport_error(err)
            recorder.add(started, time.perf_counter(), status, error)
            if progress is not None:
                progress(f"{len(recorder.status)} requests", fraction())

    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout: reusing one the
    # server is closing at that moment fails with an error that is no fault of the server.
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=2.0)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=10.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.perf_counter() - t0


def transport_error(err: BaseException) -> str:
    """A short name for a request that got no HTTP answer: "ConnectError" when nothing listens
    (the name the LoadResult.errors readers know), else the exception's class name."""
    if isinstance(err, aiohttp.ClientConnectorError):
        return "ConnectError"
    if isinstance(err, TimeoutError):
        return "Timeout"
    return type(err).__name__


def run_coroutine(make: Callable[[], object]) -> object:
    """Run the coroutine `make()` returns to its end; its value.

    asyncio.run fails inside a running loop (Jupyter); there it runs on a fresh thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())  # type: ignore[arg-type]
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())  # type: ignore[arg-type]
        except BaseException as err:  # handed back to the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name="maaslab-load")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


def run_load(
    url: str,
    model: str,
    *,
    concurrency: int,
    duration_s: float | None = None,
    requests: int | None = None,
    api_key: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    bodies: Sequence[bytes] | None = None,
    rate: float | None = None,
    endpoint: str | None = None,
) -> LoadResult:
    """Send requests from `concurrency` closed-loop clients for a time or a count; what happened.

    Parameters
    ----------
    url : the server, e.g. "http://127.0.0.1:8000".
    model : a served digits-* or sentiment-* model.
    concurrency : clients sending at once (requests in flight at most).
    duration_s : stop sending after this many seconds (answers still awaited).
    requests : stop after this many requests (give this or duration_s, or both).
    api_key : Bearer key when the server requires one.
    progress : called with (stage, fraction) after every answer.
    cancel : a threading.Event that stops sending when set.
    bodies : request bodies to cycle through (default: request_bodies(model)).
    rate : open loop: start requests at this many per second whether or not answers came back
        (concurrency then only caps requests in flight); None: closed loop.
    endpoint : URL path to POST to (default: /v2/models/{model}/infer).
    """
    if duration_s is None and requests is None:
        raise MaaslabError("give duration_s or requests (or both) so the load test ends")
    _check_args(concurrency, duration_s, requests, rate)
    bodies = list(bodies) if bodies is not None else request_bodies(model)
    recorder = _Recorder()
    # Objects alive now (torch, transformers, a loaded model: millions of them in a notebook or
    # the app) are left out of garbage collection while the load runs: a full pass over them
    # stalls the client for a few hundred ms, and that stall would be measured as server
    # latency (503 p99 271 ms at 3x capacity with a model loaded here, 6.9 ms with this).
    gc.freeze()
    try:
        seconds = run_coroutine(
            lambda: _drive(
                url,
                model,
                bodies,
                concurrency,
                duration_s,
                requests,
                api_key,
                recorder,
                progress,
                cancel,
                rate,
                endpoint,
            )
        )
    finally:
        gc.unfreeze()
    return recorder.result(model, concurrency, float(seconds))  # type: ignore[arg-type]


def sweep(
    url: str,
    model: str,
    concurrencies: Sequence[int],
    duration_s: float,
    *,
    api_key: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> list[LoadResult]:
    """run_load at each concurrency in turn (for a throughput / latency curve).

    Parameters
    ----------
    url, model, api_key : as for run_load.
    concurrencies : e.g. (1, 2, 4, 8, 16, 32).
    duration_s : seconds at each concurrency.
    progress, cancel : as for run_load, over the whole sweep.
    """
    bodies = request_bodies(model)
    results = []
    for i, c in enumerate(concurrencies):
        if cancel is not None and cancel.is_set():
            break
        if progress is not None:
            progress(f"concurrency {c}", i / len(concurrencies))
        results.append(
            run_load(
                url,
                model,
                concurrency=c,
                duration_s=duration_s,
                api_key=api_key,
                cancel=cancel,
                bodies=bodies,
            )
        )
    if progress is not None:
        progress("done", 1.0)
    return results


def scrape_or_none(url: str, timeout: float = 2.0) -> ServerMetrics | None:
    """One /metrics scrape, or None when the server does not answer it (a dashboard goes on)."""
    try:
        return scrape_metrics(url, timeout=timeout)
    except MaaslabError:
        return None


def throughput_over_time(result: LoadResult, bin_s: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(bin start times in s, ok answers per second in each bin) for a throughput-vs-time plot."""
    if bin_s <= 0:
        raise MaaslabError(f"bin_s must be positive, got {bin_s}")
    done = result.finished_s[result.status == 200]
    n_bins = max(1, int(np.ceil(result.seconds / bin_s)))
    counts, edges = np.histogram(done, bins=n_bins, range=(0.0, n_bins * bin_s))
    return edges[:-1], counts / bin_s


@dataclass(frozen=True)
class LiveStats:
    """A running load test so far (what a dashboard shows every half second)."""

    elapsed_s: float
    completed: int  # 200 answers
    rejected: int  # 503 answers
    errors: int  # anything else
    throughput: float  # ok answers per second over the whole run
    recent_throughput: float  # ok answers per second over the last RECENT_WINDOW_S seconds
    p50_ms: float  # of the ok answers so far (nan before the first)
    p90_ms: float
    p99_ms: float
    running: bool


@dataclass
class LoadGenerator:
    """run_load on a background thread, with snapshot() while it runs (for a live dashboard).

    duration_s None runs until stop(). After it ends, `result` holds the LoadResult and `error`
    a one-line message if it failed.
    """

    url: str
    model: str
    concurrency: int
    duration_s: float | None = None
    api_key: str | None = None
    # Requests per second, sent whatever the answers (open loop, `concurrency` in flight at
    # most); None: a closed loop, each client sending again as soon as it is answered.
    rate: float | None = None
    result: LoadResult | None = field(default=None, init=False)
    error: str | None = field(default=None, init=False)
    # (LiveStats, the model's queue depth or nan) per sample(): what a live timeline draws
    timeline: list[tuple[LiveStats, float]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        _check_args(self.concurrency, self.duration_s, None, self.rate)
        self._cancel = threading.Event()
        self._recorder = _Recorder()
        self._thread: threading.Thread | None = None
        self._bodies = request_bodies(self.model)  # a bad model name fails here, not later

    def start(self) -> LoadGenerator:
        """Begin sending on a daemon thread."""
        if self._thread is None:
            self._recorder = _Recorder()
            self._thread = threading.Thread(target=self._run, daemon=True, name="maaslab-load")
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            seconds = asyncio.run(
                _drive(
                    self.url,
                    self.model,
                    self._bodies,
                    self.concurrency,
                    self.duration_s or 3600.0,
                    None,
                    self.api_key,
                    self._recorder,
                    None,
                    self._cancel,
                    self.rate,
                )
            )
            self.result = self._recorder.result(self.model, self.concurrency, seconds)
        except Exception as err:  # shown on the page; the traceback would not help a learner
            self.error = f"load test failed: {type(err).__name__}: {err}"

    def stop(self, timeout: float = 70.0) -> LoadResult | None:
        """Stop sending, wait for requests in flight; the LoadResult."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    @property
    def running(self) -> bool:
        """True while the clients are sending or awaiting answers."""
        return self._thread is not None and self._thread.is_alive()

    def sample(self, metrics: ServerMetrics | None) -> list[tuple[LiveStats, float]]:
        """Add a snapshot and the model's queue depth from a /metrics scrape to `timeline`.

        The run's own end time can fall before the last poll's: the final snapshot then
        replaces that one, so the timeline never runs backwards.
        """
        stats = self.snapshot()
        depth = metrics.queue_depth.get(self.model) if metrics is not None else None
        if self.timeline and stats.elapsed_s <= self.timeline[-1][0].elapsed_s:
            self.timeline.pop()
        self.timeline.append((stats, np.nan if depth is None else float(depth)))
        return self.timeline

    def snapshot(self) -> LiveStats:
        """Counts, throughput and latency percentiles so far."""
        r = self._recorder
        elapsed = time.perf_counter() - r.t0 if self._thread is not None else 0.0
        if self.result is not None:
            elapsed = self.result.seconds
        with r.lock:
            status = np.asarray(r.status, dtype=np.int64)
            started = np.asarray(r.started)
            finished = np.asarray(r.finished)
        ok = status == 200
        latencies = (finished[ok] - started[ok]) * 1000.0
        window = min(RECENT_WINDOW_S, elapsed) if elapsed > 0 else 0.0
        recent = int((finished[ok] >= elapsed - window).sum()) / window if window > 0 else 0.0
        return LiveStats(
            elapsed_s=elapsed,
            completed=int(ok.sum()),
            rejected=int((status == 503).sum()),
            errors=int(len(status) - ok.sum() - (status == 503).sum()),
            throughput=float(ok.sum()) / elapsed if elapsed > 0 else 0.0,
            recent_throughput=recent,
            p50_ms=_percentile(latencies, 50),
            p90_ms=_percentile(latencies, 90),
            p99_ms=_percentile(latencies, 99),
            running=self.running,
        )
