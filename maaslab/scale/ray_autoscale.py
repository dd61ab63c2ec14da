"""Autoscaling measured: a step of load on, then off, and the replica count Ray Serve follows.

`step_response(url, model)` holds `concurrency` closed-loop clients on one model for a while
and records how many replicas of its deployment run (serve.status, every `poll_s`) until the
count reaches its top; then it stops the load and records until the count is back down. The
reaction times are what lesson 17 shows: load on -> one more replica running, load off -> the
replicas gone, with Ray Serve's own delays (upscale_delay_s, downscale_delay_s) inside them.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from maaslab.errors import MaaslabError
from maaslab.scale.ray_cluster import APP


@dataclass(frozen=True)
class AutoscaleStep:
    """What one step of load did to a deployment's replica count."""

    deployment: str  # the model's deployment
    concurrency: int  # clients during the step
    replicas_before: int  # running replicas when the load started
    replicas_peak: int  # the most running at once
    up_s: float  # load on -> one more replica running (nan if none came)
    down_s: float  # load off -> back to replicas_before (nan if not within the wait)
    timeline: tuple[tuple[float, int], ...]  # (seconds since load on, running replicas)
    requests_ok: int  # 200 answers during the step

    def summary(self) -> str:
        """One line: replicas, reaction times."""
        return (
            f"{self.deployment} c={self.concurrency}: {self.replicas_before} -> "
            f"{self.replicas_peak} replicas in {self.up_s:.1f} s after load on, back to "
            f"{self.replicas_before} in {self.down_s:.1f} s after load off "
            f"({self.requests_ok} requests answered)"
        )


def running_replicas(deployment: str, app: str = APP) -> int:
    """Replicas of `deployment` Ray Serve reports RUNNING now."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        raise MaaslabError(f"no deployment {deployment!r} in the Ray Serve app {app!r}")
    return status.deployments[deployment].replica_states.get("RUNNING", 0)


def step_response(
    url: str,
    model: str,
    *,
    concurrency: int = 16,
    target: int = 2,
    up_timeout_s: float = 60.0,
    down_timeout_s: float = 60.0,
    poll_s: float = 0.25,
) -> AutoscaleStep:
    """Load on until `target` replicas run (or up_timeout_s), then off until the count is back.

    Parameters
    ----------
    url : the Serve HTTP proxy, e.g. "http://127.0.0.1:8000".
    model : a served digits-* or sentiment-* model with an autoscaled deployment.
    concurrency : closed-loop clients while the load is on.
    target : the replica count that ends the load (the autoscale max, usually).
    up_timeout_s, down_timeout_s : how long to wait for each change.
    poll_s : how often the replica count is read.
    """
    from maaslab.serve.loadtest import run_load

    before = running_replicas(model)
    stop = threading.Event()
    done: list = []
    loader = threading.Thread(
        target=lambda: done.append(
            run_load(url, model, concurrency=concurrency, duration_s=3600.0, cancel=stop)
        ),
        daemon=True,
        name="autoscale-load",
    )
    timeline: list[tuple[float, int]] = []
    started = time.perf_counter()
    loader.start()
    up_s = down_s = float("nan")
    try:
        while time.perf_counter() - started < up_timeout_s:
            count = running_replicas(model)
            timeline.append((time.perf_counter() - started, count))
            if count > before and math.isnan(up_s):
                up_s = timeline[-1][0]
            if count >= target:
                break
            time.sleep(poll_s)
    finally:
        stop.set()
        loader.join(120.0)
    off = time.perf_counter()
    while time.perf_counter() - off < down_timeout_s:
        count = running_replicas(model)
        timeline.append((time.perf_counter() - started, count))
        if count <= before:
            down_s = time.perf_counter() - off
            break
        time.sleep(poll_s)
    return AutoscaleStep(
        model,
        concurrency,
        before,
        max(c for _, c in timeline),
        up_s,
        down_s,
        tuple(timeline),
        done[0].ok if done else 0,
    )
