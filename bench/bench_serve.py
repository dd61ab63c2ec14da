"""Model server throughput and latency, measured side by side in one run.

P2: sentiment-minilm over HTTP at concurrency 16 (closed loop, one review per request), the
maaslab server with batching on vs off: throughput ratio (goal >= 3.0) and p99 on vs off.
P3: the same load against LitServe serving the same merged model with its own batching
(max_batch_size 32, batch_timeout = our max delay): maaslab / LitServe throughput (goal >= 1.0).
P4: served throughput / in-process SentimentModel.predict throughput on batches of 32
(goal >= 0.8).
Overload: an open-loop arrival rate of 3x the measured capacity against a server with a small
queue: no crash, every accepted request answered, 503 rejects answered in < 50 ms (p99).

Every server runs in its own process with the server's defaults (one model instance, torch's
own thread count) unless --instances/--threads say otherwise; LitServe gets as many workers as
we get instances, and the in-process reference as many torch threads as the server has in all.
The load generator runs in this process. All of them share this machine's cores, so the
client's HTTP work is paid from the same CPU budget as the model.
Rounds are interleaved (on, off, LitServe, on, off, LitServe, ...) so machine noise hits each
alike; the median round is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import torch

from maaslab.auto import load
from maaslab.device import describe
from maaslab.reviews import load_reviews
from maaslab.serve.config import ServeConfig
from maaslab.serve.loadtest import LoadResult, request_bodies, run_load, scrape_metrics
from maaslab.serve.process import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sentiment-minilm"


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_litserve(
    max_batch_size: int, batch_timeout_s: float, threads: int | None, workers: int
) -> tuple:
    """bench/litserve_sentiment.py as a child process; (process, url) once /health answers."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "litserve_sentiment.py"),
            "--port",
            str(port),
            "--max-batch-size",
            str(max_batch_size),
            "--batch-timeout",
            str(batch_timeout_s),
            "--workers",
            str(workers),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"LitServe exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise RuntimeError("LitServe did not become healthy in 180 s")


def pause(proc: subprocess.Popen, paused: bool) -> None:
    """Stop (or continue) a process group: LitServe's worker processes poll their queues and
    took about a tenth of a core here while idle, which the servers being measured would lose."""
    os.killpg(proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)


class InProcess:
    """SentimentModel.predict on batches of held-out reviews in this process: the model's own
    throughput with no HTTP, no queue and no JSON."""

    def __init__(self, batch: int) -> None:
        self.model = load(MODEL, device="cpu")
        self.texts = list(load_reviews("test").texts)
        self.batch, self.i = batch, 0
        self.model.predict(self.texts[:batch])  # the first call pays one-time setup

    def run(self, seconds: float) -> tuple[float, float]:
        """(texts per second, share of the time spent tokenizing) over `seconds`."""
        done, tokenize, model_time = 0, 0.0, 0.0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            chunk = [self.texts[(self.i + k) % len(self.texts)] for k in range(self.batch)]
            self.i += self.batch
            t = time.perf_counter()
            self.model.model.encode(chunk)
            tokenize += time.perf_counter() - t
            t = time.perf_counter()
            self.model.predict(chunk)  # tokenizes again, then runs the model
            model_time += time.perf_counter() - t
            done += self.batch
        return done / model_time, tokenize / model_time


def med(results: list[LoadResult], key: str) -> float:
    """Median of one LoadResult field over rounds."""
    return statistics.median(getattr(r, key) for r in results)


def main() -> None:
    """Print P2, P3, P4 and the overload figures, then one summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measured round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per server")
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per instance; 0: the server's default (torch's "
        "own, shared by the instances)",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="model instances in each maaslab server (LitServe workers)",
    )
    parser.add_argument("--no-litserve", action="store_true", help="skip P3")
    parser.add_argument("--device", default="cpu", help="cpu or cuda for the maaslab servers")
    args = parser.parse_args()

    per_instance = args.threads or max(1, torch.get_num_threads() // args.instances)
    total = per_instance * args.instances
    env = {"OMP_NUM_THREADS": str(per_instance)} if args.threads or args.instances > 1 else {}
    torch.set_num_threads(total)  # the in-process reference uses what the server uses in all
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )
    print(
        f"device: {describe().summary()}; torch threads in-process {torch.get_num_threads()}, "
        f"per server {args.instances} instance(s) x {per_instance}; load average before start "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"settings: {MODEL}, concurrency {args.concurrency} (closed loop, 1 review per "
        f"request), {args.rounds} x {args.seconds:g} s rounds, max batch 32, max delay "
        f"{args.max_delay_ms:g} ms; client and servers share the same cores"
    )

    inproc = InProcess(32)
    inproc_runs: list[tuple[float, float]] = []
    base = ServeConfig(
        models=(MODEL,),
        port=0,
        device=args.device,
        max_batch_size=32,
        max_delay_ms=args.max_delay_ms,
        instances=args.instances,
    )
    servers = {
        "on": ServerProcess(base, env=env).start(180),
        "off": ServerProcess(replace(base, batching=False), env=env).start(180),
    }
    urls = {k: s.url for k, s in servers.items()}
    lit = None
    if not args.no_litserve:
        lit = start_litserve(
            32, args.max_delay_ms / 1000, env.get("OMP_NUM_THREADS"), args.instances
        )
        urls["litserve"] = lit[1]
    texts = load_reviews("test").texts
    bodies = {k: request_bodies(MODEL) for k in ("on", "off")}
    bodies["litserve"] = [json.dumps({"text": t}).encode() for t in texts]
    endpoint = {"litserve": "/predict"}
    results: dict[str, list[LoadResult]] = {k: [] for k in urls}

    def measure(key: str, seconds: float) -> LoadResult:
        # LitServe runs only while it is measured (see pause).
        if key == "litserve" and lit is not None:
            pause(lit[0], False)
        try:
            return run_load(
                urls[key],
                MODEL,
                concurrency=args.concurrency,
                duration_s=seconds,
                bodies=bodies[key],
                endpoint=endpoint.get(key),
            )
        finally:
            if key == "litserve" and lit is not None:
                pause(lit[0], True)

    try:
        for key in urls:  # warm-up: first batches of each size, connections
            measure(key, 2.0)
        for _ in range(args.rounds):
            inproc_runs.append(inproc.run(args.seconds))
            print(
                f"  in-process batches of 32: {inproc_runs[-1][0]:.1f} texts/s (tokenizing "
                f"{inproc_runs[-1][1]:.0%} of the time)"
            )
            for key in urls:
                r = measure(key, args.seconds)
                results[key].append(r)
                print(f"  {key:8s} {r.summary()}")
        batches = scrape_metrics(urls["on"]).batch_size[MODEL]
        for key, rs in results.items():
            bad = sum(r.error_count + r.rejected for r in rs)
            print(
                f"{key:8s}: median {med(rs, 'throughput'):6.1f} req/s, p50 "
                f"{med(rs, 'p50_ms'):6.1f} ms, p99 {med(rs, 'p99_ms'):6.1f} ms, "
                f"{bad} not ok"
            )
        print(f"batching on: {batches.count} batches, mean {batches.mean:.1f} rows")
        on, off = med(results["on"], "throughput"), med(results["off"], "throughput")
        p2 = on / off
        p99_ratio = med(results["on"], "p99_ms") / med(results["off"], "p99_ms")
        print(
            f"P2: batching on / off throughput = {p2:.2f}x (goal >= 3.0); p99 on / off = "
            f"{p99_ratio:.2f} (goal <= 1.0)"
        )
        p3 = float("nan")
        if lit is not None:
            p3 = on / med(results["litserve"], "throughput")
            print(f"P3: maaslab / LitServe throughput = {p3:.2f}x (goal >= 1.0)")
        inproc_tput = statistics.median(t for t, _ in inproc_runs)
        print(f"in-process: median {inproc_tput:6.1f} texts/s in batches of 32")
        p4 = on / inproc_tput
        print(f"P4: served / in-process batch-32 throughput = {p4:.2f} (goal >= 0.8)")
    finally:
        for s in servers.values():
            s.stop()
        if lit is not None:
            pause(lit[0], False)
            os.killpg(lit[0].pid, signal.SIGTERM)
            lit[0].wait(30)

    # Overload: open loop at 3x capacity against a small queue.
    rate = 3 * on
    with ServerProcess(replace(base, max_queue=16), env=env) as small:
        run_load(small.url, MODEL, concurrency=args.concurrency, duration_s=2.0)
        r = run_load(small.url, MODEL, concurrency=128, duration_s=args.seconds, rate=rate)
        alive = small.running and httpx.get(small.url + "/v2/health/ready").status_code == 200
        scraped = scrape_metrics(small.url)
        codes = scraped.requests_by_code(MODEL)
    # The server's own clock for its 503s (without the client's queueing), when it records it.
    server_reject = scraped.reject_latency.get(MODEL)
    server_reject_p99 = server_reject.quantile(0.99) * 1000 if server_reject else float("nan")
    rejects = r.rejected_latencies_ms
    offered = r.requests / r.seconds
    reject_p99 = float(np.percentile(rejects, 99)) if len(rejects) else float("nan")
    print(
        f"overload: asked {rate:.0f} req/s (3 x {on:.0f}), sent {offered:.0f} req/s; "
        f"{r.ok} ok, {r.rejected} rejected (503), errors {r.errors or 'none'}; server saw "
        f"{codes}; alive after: {alive}"
    )
    print(
        f"overload: ok p50 {r.p50_ms:.0f} ms, p99 {r.p99_ms:.0f} ms; 503 p50 "
        f"{np.median(rejects) if len(rejects) else float('nan'):.1f} ms, p99 {reject_p99:.1f} "
        f"ms at the client (goal < 50 ms); server-side 503 p99 {server_reject_p99:.1f} ms "
        f"(from its histogram); answered {r.ok + r.rejected} of {r.requests}"
    )
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        f"summary: P2 {p2:.2f}x (goal >= 3.0), p99 on/off {p99_ratio:.2f}; P3 {p3:.2f}x "
        f"(goal >= 1.0); P4 {p4:.2f} (goal >= 0.8); overload 503 p99 {reject_p99:.1f} ms "
        f"(server-side {server_reject_p99:.1f} ms), "
        f"{r.error_count} errors, alive {alive}"
    )


if __name__ == "__main__":
    main()
