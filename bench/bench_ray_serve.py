"""Ray Serve vs the single-process server, same model and the same copies of it, in one run.

At concurrency 16 (closed loop, one row per request), the same model served by
- our server in its own process with 1 and with 2 model instances (`--instances`), and
- Ray Serve (maaslab.scale.ray_serve) on one local Ray node with 1 and with 2 replicas,
every server batching the same way (max batch 32, max delay 5 ms), each copy of the model given
the same torch threads in both engines: (cores - 1) / copies, at least 1 (Ray's default: a
core stays with its proxy and ingress). With torch's own 2 threads, one instance measured 19
req/s at a load average of 7 on 2 cores, where 2 instances of 1 thread each gave 165.
Printed: throughput and p99 of each, Ray / process throughput at 1 and at 2 copies, and 2 / 1
copies for each engine; one of the two replicas killed under load (answered / sent, and how long
Ray Serve took to replace it). Then (unless --no-autoscale) the step load of
maaslab.scale.ray_autoscale on an autoscaled deployment (1..2 replicas): how long Ray Serve
takes to add a replica under load and to remove it after.

The process servers alternate round by round; Ray's two deployments are measured one after the
other (changing the replica count redeploys). Client, servers and Ray share this machine's cores.
`--quick`: one 4 s round each after a 2 s warm-up.

`--llm`: instead, a language model (mini-llama) on our server in its own process and on Ray
Serve with one replica (maaslab.scale.ray_llm: the same engine in the replica, its tokens
streamed to the ingress through a streaming handle), the same streamed workload
(maaslab.serve.llm_load, closed loop, greedy): tokens per second, time to first token and the
gap between tokens, and Ray / process for each.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, replace

import torch

from maaslab.llm.measure import Workload
from maaslab.scale.ray_autoscale import running_replicas, step_response
from maaslab.scale.ray_cluster import (
    LocalCluster,
    deploy,
    free_port,
    kill_replica,
    replica_placement,
)
from maaslab.serve.config import ScaleConfig, ServeConfig
from maaslab.serve.llm_load import LLMLoadResult, run_llm_load
from maaslab.serve.loadtest import LoadResult, request_bodies, run_load
from maaslab.serve.process import ServerProcess

KILL_LOAD_S = 45.0  # the fault run's load: long enough for Ray to replace the replica (10-40 s)
LLM_MODEL = "mini-llama"
LLM_USERS = 8  # --llm: closed-loop users streaming at once


def median_of(runs: list[LoadResult], key: str) -> float:
    """The median of one figure over rounds."""
    return statistics.median(getattr(r, key) for r in runs)


@dataclass(frozen=True)
class Fault:
    """One replica of two killed under load: what the clients got, and when Ray replaced it."""

    load: LoadResult  # the whole run: before, during and after the fault
    killed_at_s: float  # seconds into the run when the replica's process was killed
    replaced_s: float  # from the kill until two replicas ran again, the killed one not among them


def kill_under_load(url: str, model: str, bodies: list, concurrency: int) -> Fault:
    """SIGKILL one of the model's two replicas 2 s into a closed-loop load that lasts until Ray
    Serve has replaced it (plus 2 s); count the answers."""
    done = threading.Event()
    box: dict[str, LoadResult] = {}

    def load() -> None:
        box["run"] = run_load(
            url, model, concurrency=concurrency, duration_s=KILL_LOAD_S, bodies=bodies
        )
        done.set()

    started = time.perf_counter()
    threading.Thread(target=load, daemon=True).start()
    time.sleep(2.0)
    killed = kill_replica(model)
    killed_at = time.perf_counter()
    replaced = float("nan")
    while not done.is_set():
        alive = {
            p.replica for p in replica_placement() if p.deployment == model and p.state == "ALIVE"
        }
        if len(alive) == 2 and killed.replica not in alive:
            replaced = time.perf_counter() - killed_at
            break
        time.sleep(0.5)
    done.wait(KILL_LOAD_S + 60)
    return Fault(box["run"], killed_at - started, replaced)


def main() -> None:
    """Measure, then print the table and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sentiment-minilm", help="a digits-* or sentiment-*")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measured round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one 4 s round each")
    parser.add_argument("--no-autoscale", action="store_true", help="skip the step load")
    parser.add_argument("--llm", action="store_true", help="mini-llama instead (module notes)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = 4.0, 1
    if args.llm:
        llm_rows(args.quick)
        return
    cores = os.cpu_count() or 1
    print(
        f"machine: {platform.machine()}, {cores} cores; python {platform.python_version()}, "
        f"torch {torch.__version__}; load average before start "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"settings: {args.model}, concurrency {args.concurrency} (closed loop), "
        f"{args.rounds} x {args.seconds:g} s rounds, max batch 32, max delay 5 ms, cpu"
    )
    bodies = request_bodies(args.model)

    def threads(copies: int) -> int:
        return max(1, (cores - 1) // copies)

    print(f"torch threads per copy: 1 copy {threads(1)}, 2 copies {threads(2)} (both engines)")
    base = ServeConfig(models=(args.model,), port=0, device="cpu", max_batch_size=32)
    results: dict[str, list[LoadResult]] = {}

    def measure(key: str, url: str, seconds: float, keep: bool = True) -> None:
        run = run_load(
            url, args.model, concurrency=args.concurrency, duration_s=seconds, bodies=bodies
        )
        if keep:
            results.setdefault(key, []).append(run)
            print(f"  {key}: {run.summary()}", flush=True)

    # Our server: one process each, 1 and 2 instances.
    servers = {
        f"process x{n}": ServerProcess(replace(base, instances=n, threads=threads(n))).start(180)
        for n in (1, 2)
    }
    try:
        for key, server in servers.items():
            measure(key, server.url, 2.0, keep=False)  # warm-up
        for _ in range(args.rounds):
            for key, server in servers.items():
                measure(key, server.url, args.seconds)
    finally:
        for server in servers.values():
            server.stop()

    step = None
    with LocalCluster(node_cpus=(cores,)) as _cluster:
        config = replace(base, port=free_port())
        url = f"http://127.0.0.1:{config.port}"
        for n in (1, 2):
            started = time.perf_counter()
            deploy(replace(config, threads=threads(n)), ScaleConfig("ray", replicas=n))
            print(f"Ray Serve with {n} replica(s) running in {time.perf_counter() - started:.1f} s")
            measure(f"ray x{n}", url, 2.0, keep=False)
            for _ in range(args.rounds):
                measure(f"ray x{n}", url, args.seconds)
        fault = kill_under_load(url, args.model, bodies, args.concurrency)
        if not args.no_autoscale:
            deploy(config, ScaleConfig("ray", autoscale=(1, 2)))
            deadline = time.monotonic() + 60.0  # the fixed deployment's second replica goes first
            while running_replicas(args.model) > 1 and time.monotonic() < deadline:
                time.sleep(0.5)
            step = step_response(url, args.model, concurrency=args.concurrency, target=2)
        from ray import serve

        serve.shutdown()

    print(f"\n{'server':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for key, runs in results.items():
        print(
            f"{key:<12} {median_of(runs, 'throughput'):8.1f} {median_of(runs, 'p50_ms'):8.1f} "
            f"{median_of(runs, 'p99_ms'):8.1f}"
        )
    rate = {k: median_of(v, "throughput") for k, v in results.items()}
    p99 = {k: median_of(v, "p99_ms") for k, v in results.items()}
    for n in (1, 2):
        print(
            f"Ray / process at {n} cop{'y' if n == 1 else 'ies'}: throughput "
            f"{rate[f'ray x{n}'] / rate[f'process x{n}']:.2f}, p99 "
            f"{p99[f'ray x{n}']:.1f} vs {p99[f'process x{n}']:.1f} ms"
        )
    for engine in ("process", "ray"):
        print(
            f"{engine}: 2 / 1 copies throughput {rate[f'{engine} x2'] / rate[f'{engine} x1']:.2f}"
        )
    run = fault.load
    print(
        f"kill one of 2 replicas {fault.killed_at_s:.1f} s into a {run.seconds:.0f} s load: "
        f"{run.ok} answered 200, {run.rejected} refused 503, {run.error_count} other "
        f"({dict(run.errors)}) of {run.requests} sent; replaced after {fault.replaced_s:.1f} s"
    )
    if step is not None:
        print(f"autoscaling step: {step.summary()}")
        changes = [
            f"{t:.1f} s: {c}"
            for i, (t, c) in enumerate(step.timeline)
            if i == 0 or c != step.timeline[i - 1][1]
        ]
        print("  running replicas: " + ", ".join(changes))


def llm_rows(quick: bool) -> None:
    """--llm: mini-llama on the single-process server vs one Ray Serve replica (module notes)."""
    cores = os.cpu_count() or 1
    requests = 16 if quick else 48
    workload = Workload(requests, prompt_tokens=(16, 64), output_tokens=(32, 128), vocab=(10, 999))
    warm_up = Workload(requests=2, prompt_tokens=(8, 8), output_tokens=(8, 8), vocab=(10, 999))
    print(
        f"machine: {platform.machine()}, {cores} cores; load average before start "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(f"settings: {LLM_MODEL}, {requests} streamed requests, {LLM_USERS} users, greedy, cpu")
    config = ServeConfig(models=(LLM_MODEL,), port=0, device="cpu", threads=max(1, cores - 1))
    runs: dict[str, LLMLoadResult] = {}

    def measure(key: str, url: str) -> None:
        run_llm_load(url, LLM_MODEL, warm_up, concurrency=2)
        runs[key] = run_llm_load(url, LLM_MODEL, workload, concurrency=LLM_USERS)
        print(f"  {key}: {runs[key].line()}", flush=True)

    server = ServerProcess(config).start(180)
    try:
        measure("process", server.url)
    finally:
        server.stop()
    with LocalCluster(node_cpus=(cores,)) as _cluster:
        ray_config = replace(config, port=free_port())
        started = time.perf_counter()
        deploy(ray_config, ScaleConfig("ray", replicas=1))
        print(f"Ray Serve with 1 replica running in {time.perf_counter() - started:.1f} s")
        measure("ray x1", f"http://127.0.0.1:{ray_config.port}")
    process, ray = runs["process"].report, runs["ray x1"].report
    if process is None or ray is None:
        print("a run finished no stream: no ratios")
        return
    print(
        f"Ray / process: tokens/s {ray.tokens_per_s / process.tokens_per_s:.2f}; TTFT p50 "
        f"{ray.ttft['p50'] * 1e3:.0f} vs {process.ttft['p50'] * 1e3:.0f} ms; ITL p50 "
        f"{ray.itl['p50'] * 1e3:.1f} vs {process.itl['p50'] * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
