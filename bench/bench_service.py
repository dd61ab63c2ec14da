"""The model server as a service, measured side by side in one run against one server.

P15 protocols: the same digits sent to digits-cnn by gRPC, REST with the binary tensor extension
and REST-JSON (tritonclient, maaslab.serve.protocols). First the lab itself: bit-identical
outputs, bytes on the wire, encode/decode time, one client. Then a closed loop of --clients
threads, each with its own clients (tritonclient.http's client is not thread-safe), at 1, 32
and 1,024 rows per request: requests/s, rows/s and p50 latency per protocol, and the ratios
gRPC / REST-binary and REST-binary / REST-JSON (reported as measured; no goal yet).

One server process (digits-cnn, HTTP and gRPC, the server's defaults but one torch thread,
--threads 1, and no batching wait, --max-delay-ms 0: a wait for company adds the same to every
protocol); the clients run in this process and share the machine's cores (and this process's
GIL) with it. Rounds are interleaved (each protocol once per round, per rows count) so machine
noise hits each alike; the median round is reported.

P16 fairness: tenant A floods at 5x the server's capacity while tenant B sends its normal load
(25 % of capacity, an open loop at a fixed rate); A's client runs at the lowest CPU priority
(nice 19), standing in for a tenant on other machines. Capacity is measured first (32-row JSON
requests, closed loop, median of three); A's key is limited to a share of it, one key per
share (--flood-limits, default a quarter, half and all of it), and one more key has a
student's limit from `maaslab keys classroom` (20 requests/s, burst 40). First, what one 429 costs
the server's event loop (its main thread's CPU per request of a tenant whose every request is
refused, 64 clients back to back), at the door and in the app. Then B alone, then B while A
floods (A from a process of its own), each round, against a server with keys (fair queues, A's
429s answered by the connection layer's door; once per share), the same with the door off
(MAASLAB_SERVE_DOOR=0: the app refuses, as before the door; A at the largest share) and one
without keys (one shared queue): B's p50/p99 alone
and under flood and their ratio (goal <= 2), the server loop's CPU per request under flood,
A's and B's answers by status (goal: A gets 429s, B none), every request sent answered, the
200s the server counted equal to those received, the server ready after; and the cores the
server's event loop, its model thread, each client and the whole machine used meanwhile.
P17 overhead: the same closed loop against a server without keys and one with a classroom's
keys file (the teacher's key, no limits), at 1 and 32 rows, interleaved rounds, median:
keys / no keys throughput (goal: overhead <= 5 %); and the keyed server with the door off; and
each server's event-loop CPU per request (steadier than throughput when other work shares the
cores); then the tenant layer's own work per request (key check, limits, metering) timed alone
in this process, as a share of the loop's CPU per 1-row request without keys.
P16 and P17 start their own servers with the shared one's settings (HTTP only) and drive them
with run_load (maaslab.serve.loadtest, aiohttp).

Adding a section: write `def pNN_name(server, args) -> dict` returning its figures keyed
"PNN_...", printing as it goes, and list it in SECTIONS; --only picks sections by number.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np

from maaslab.device import describe
from maaslab.serve.access import Tenancy
from maaslab.serve.client import digits_body
from maaslab.serve.config import ServeConfig
from maaslab.serve.connections import DOOR_ENV
from maaslab.serve.loadtest import LoadResult, run_load, scrape_metrics
from maaslab.serve.process import ServerProcess
from maaslab.serve.protocols import (
    PROTOCOLS,
    ProtocolClients,
    ProtocolConfig,
    compare_protocols,
    digit_rows,
)
from maaslab.serve.tenants import (
    STUDENT_LIMITS,
    KeyTable,
    Limits,
    Tenant,
    classroom,
    hash_key,
    new_key,
)

MODEL = "digits-cnn"
LOAD_ROWS = (1, 32, 1024)  # rows per request in P15's closed loop


def closed_loop(
    server: ServerProcess, protocol: str, x: np.ndarray, clients: int, seconds: float
) -> dict[str, float]:
    """`clients` threads send `x` by `protocol` back to back for `seconds`: req/s, rows/s, p50."""
    config = ProtocolConfig(model=MODEL, rows=len(x))
    address = f"127.0.0.1:{server.grpc_port}"
    ready = threading.Barrier(clients + 1)
    calls: list[list[tuple[float, float]]] = [[] for _ in range(clients)]  # (sent, answered)
    errors: list[BaseException] = []
    start: list[float] = []

    def worker(k: int) -> None:
        client = ProtocolClients(server.url, address, config)  # made in its own thread
        try:
            client.call(protocol, x)  # connect before the clock starts
            ready.wait()
            deadline = start[0] + seconds
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                client.call(protocol, x)
                calls[k].append((t0, time.perf_counter()))
        except BaseException as err:  # reported below; a broken barrier frees the others
            errors.append(err)
            ready.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start.append(time.perf_counter() + 0.05)
    ready.wait()
    for t in threads:
        t.join(seconds + 120)
    if errors:
        raise RuntimeError(f"{protocol} at {len(x)} rows failed: {errors[0]!r}")
    # Throughput counts the answers that came before the deadline (a last call still running
    # then would stretch the window); latency is every call's.
    end = start[0] + seconds
    answered = sum(1 for per in calls for _, t in per if t <= end)
    latency = np.array([t - t0 for per in calls for t0, t in per]) * 1e3
    return {
        "req_s": answered / seconds,
        "rows_s": answered * len(x) / seconds,
        "p50_ms": float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        "p90_ms": float(np.percentile(latency, 90)) if len(latency) else float("nan"),
    }


def p15_protocols(server: ServerProcess, args: argparse.Namespace) -> dict[str, float]:
    """P15: the protocol lab, then gRPC vs REST-binary vs REST-JSON under a closed loop."""
    lab = compare_protocols(
        server.url,
        f"127.0.0.1:{server.grpc_port}",
        ProtocolConfig(model=MODEL, repeats=5 if args.quick else 20),
    )
    print("P15 lab (one client, one call at a time):")
    for row in lab.table():
        print(
            f"  {row['rows']:>5} rows {row['protocol']:<11} request {row['request bytes']:>8,} B, "
            f"response {row['response bytes']:>7,} B, encode {row['encode ms']:7.3f} ms, "
            f"decode {row['decode ms']:7.3f} ms, p50 {row['p50 ms']:7.2f} ms, "
            f"identical {row['identical']}"
        )
    print(f"  {lab.summary()}")
    figures: dict[str, float] = {
        f"P15_{r.protocol}_{r.rows}_{part}_bytes": getattr(r, f"{part}_bytes")
        for r in lab.records
        for part in ("request", "response")
    }
    print(
        f"P15 closed loop: {args.clients} clients, {args.rounds} x {args.seconds:g} s rounds per "
        "protocol and size (median round):"
    )
    for n in LOAD_ROWS:
        x = digit_rows(n, seed=0)
        for protocol in PROTOCOLS:  # warm-up: connections, the model's first batch of this size
            closed_loop(server, protocol, x, args.clients, 0.5)
        rounds: dict[str, list[dict[str, float]]] = {p: [] for p in PROTOCOLS}
        for _ in range(args.rounds):
            for protocol in PROTOCOLS:
                rounds[protocol].append(
                    closed_loop(server, protocol, x, args.clients, args.seconds)
                )
        for protocol, runs in rounds.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            figures |= {f"P15_{protocol}_{n}_{k}": v for k, v in med.items()}
            print(
                f"  {n:>5} rows {protocol:<11} {med['req_s']:8.1f} req/s {med['rows_s']:10,.0f} "
                f"rows/s  p50 {med['p50_ms']:7.2f} ms  p90 {med['p90_ms']:7.2f} ms"
            )
        grpc, binary, js = (
            figures[f"P15_{p}_{n}_req_s"] for p in ("gRPC", "REST-binary", "REST-JSON")
        )
        figures[f"P15_{n}_grpc_over_binary"] = grpc / binary
        figures[f"P15_{n}_binary_over_json"] = binary / js
        print(
            f"P15 at {n:,} rows: gRPC / REST-binary {grpc / binary:.2f}x, REST-binary / "
            f"REST-JSON {binary / js:.2f}x (throughput)"
        )
    return figures


# P16 and P17 send 32 digits per request as OIP JSON. At 32 rows a request is one whole
# batch and the server answers 185 to 300 of them a second here (with the machine's other load),
# so 5x is an offer one client process can make: it sent over 4,000 refused requests/s, at
# about 0.1 ms of its CPU each. At 1 row the server answers about 1,700/s (batched), and a 5x
# offer would measure the client, not the server.
FLOOD_ROWS = 32
FLOOD_TIMES = 5.0  # P16: tenant A offers this many times the measured capacity
NORMAL_SHARE = 0.25  # P16: tenant B's open-loop rate, as a share of the capacity
FLOOD_CLIENTS = 512  # A's requests in flight at most (its queue of 256, and refusals)
NORMAL_CLIENTS = 64  # B's requests in flight at most (far more than its rate needs)
FLOOD_LEAD_S = 1.0  # A floods this long before B starts and after B stops
# A's client process runs at this CPU priority (os.nice): a stand-in for a tenant on machines
# of its own. At 5x the capacity its Python client keeps about a core busy, which on a 2-core
# machine the server and B's client would otherwise have to share with it.
FLOOD_NICE = 19
SETTLE_S = 2.0  # after a flood, the queue drains before the next measurement starts
STATUSES = ("200", "429", "503")  # the answers P16 expects; any other counts as "other"
CLASS_SIZE = 30  # P17's keys file: a classroom (a teacher and this many students)
NO_DOOR = {DOOR_ENV: "0"}  # a keyed server whose app refuses, as before the connection layer did
# P16's student: A with the rate limit of the keys `maaslab keys classroom` makes (its rate
# only: the daily quota would end a run of many rounds, and digits have no tokens to count)
STUDENT = Limits(requests_per_s=STUDENT_LIMITS.requests_per_s, burst=STUDENT_LIMITS.burst)
SPENT = Limits(requests_per_s=0.001, burst=1)  # P16's third tenant: all but its first refused
REFUSAL_CLIENTS = 64  # P16: closed-loop clients of the spent tenant while refusals are timed
OVERHEAD_ROWS = (1, 32)  # P17: 1 row is where a per-request cost shows most
TENANT_CALLS = 20_000  # P17: requests' worth of tenant-layer work timed in one go
FLOOD_LIMITS = (0.25, 0.5, 1.0)  # P16: A's rate limit as a share of the capacity, one key each


def shares_list(text: str) -> tuple[float, ...]:
    """--flood-limits: "0.25,0.5,1" -> (0.25, 0.5, 1.0), each above 0, no repeats."""
    try:
        shares = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers: {text!r}") from None
    if not shares or min(shares) <= 0 or len(set(shares)) != len(shares):
        raise argparse.ArgumentTypeError(f"give distinct shares above 0, e.g. 0.25,0.5,1: {text!r}")
    return tuple(sorted(shares))


def warm_up(
    server: ServerProcess, bodies: list[bytes], clients: int, key: str | None = None
) -> None:
    """One second of the load before any clock: connections opened, first batches run."""
    run_load(server.url, MODEL, concurrency=clients, duration_s=1.0, bodies=bodies, api_key=key)


def json_bodies(rows: int, n: int = 8) -> list[bytes]:
    """`n` distinct OIP v2 JSON bodies of `rows` digits each (encoded once, before the clock)."""
    return [json.dumps(digits_body(digit_rows(rows, seed=s))).encode() for s in range(n)]


def status_counts(status: np.ndarray) -> dict[str, int]:
    """Requests per answer: "200", "429", "503", "other" (another code, or no answer: 0)."""
    counts = {code: int((status == int(code)).sum()) for code in STATUSES}
    return counts | {"other": int(len(status) - sum(counts.values()))}


def http_only(server: ServerProcess) -> ServeConfig:
    """The shared server's settings without gRPC: P16's and P17's servers differ from these
    (and from each other) only in their keys."""
    return replace(server.config, grpc_port=None)


def server_200s(server: ServerProcess, key: str | None) -> int:
    """The 200 answers of MODEL the server has counted so far (its /metrics)."""
    return scrape_metrics(server.url, api_key=key).requests_by_code(MODEL).get("200", 0)


def ready(server: ServerProcess) -> bool:
    """True when the server process lives and answers its readiness probe with 200."""
    try:
        ok = httpx.get(server.url + "/v2/health/ready", timeout=5.0).status_code == 200
    except httpx.HTTPError:
        ok = False
    return server.running and ok


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """CPU seconds (user + system) of a process, or of one of its threads; nan without /proc."""
    path = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat; nan without it)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def cpu_snapshot(server: ServerProcess, flood_pid: int) -> dict[str, float]:
    """CPU seconds so far of the server's event loop (its main thread), the whole server, A's
    client process, this process (B's client) and the machine, with the wall clock."""
    assert server.pid is not None
    return {
        "loop": cpu_seconds(server.pid, server.pid),
        "server": cpu_seconds(server.pid),
        "A": cpu_seconds(flood_pid),
        "B": cpu_seconds(os.getpid()),
        "machine": machine_busy_seconds(),
        "wall": time.perf_counter(),
    }


def cores_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Cores each part kept busy between two cpu_snapshots (server "other": all but the loop)."""
    wall = after["wall"] - before["wall"]
    cores = {k: (after[k] - before[k]) / wall for k in before if k != "wall"}
    cores["other"] = cores.pop("server") - cores["loop"]
    return cores


def core_line(cores: dict[str, float]) -> str:
    """Cores used, in words: "loop 0.52, model 0.31, A 0.20, B 0.03, machine 1.95"."""
    return (
        f"loop {cores['loop']:.2f}, model {cores['other']:.2f}, A {cores['A']:.2f}, "
        f"B {cores['B']:.2f}, machine {cores['machine']:.2f}"
    )


def normal_load(
    server: ServerProcess,
    flood_pid: int,
    key: str,
    bodies: list[bytes],
    rate: float,
    seconds: float,
) -> tuple[LoadResult, dict[str, float]]:
    """B's open-loop load with its key for `seconds`, and the cores each part used meanwhile."""
    cpu = cpu_snapshot(server, flood_pid)
    result = run_load(
        server.url,
        MODEL,
        concurrency=NORMAL_CLIENTS,
        duration_s=seconds,
        api_key=key,
        bodies=bodies,
        rate=rate,
    )
    return result, cores_used(cpu, cpu_snapshot(server, flood_pid))


def flood_round(
    server: ServerProcess,
    pool: ProcessPoolExecutor,
    flood_pid: int,
    keys: tuple[str | None, str | None],
    bodies: list[bytes],
    rates: tuple[float, float],
    seconds: float,
) -> tuple[LoadResult, LoadResult, int, dict[str, float]]:
    """A (key keys[0]) floods at rates[0] from the pool's process (`flood_pid`) while B
    (keys[1]) sends at rates[1] from this one for `seconds`: A's and B's LoadResults, the 200s
    the server counted meanwhile, and the cores each part used while B ran."""
    before = server_200s(server, keys[1])
    flood = pool.submit(
        run_load,
        server.url,
        MODEL,
        concurrency=FLOOD_CLIENTS,
        duration_s=seconds + 2 * FLOOD_LEAD_S,
        api_key=keys[0],
        bodies=bodies,
        rate=rates[0],
    )
    time.sleep(FLOOD_LEAD_S)  # B starts once A's queue has filled
    normal, cores = normal_load(server, flood_pid, keys[1], bodies, rates[1], seconds)
    flooded = flood.result(timeout=seconds + 120)
    return flooded, normal, server_200s(server, keys[1]) - before, cores


def refusal_cost(server: ServerProcess, key: str, bodies: list[bytes], seconds: float) -> float:
    """Milliseconds of the server's event-loop CPU per request of a tenant whose every
    request is refused (429), sent back to back by REFUSAL_CLIENTS clients for `seconds`."""
    assert server.pid is not None
    before = cpu_seconds(server.pid, server.pid)
    result = run_load(
        server.url,
        MODEL,
        concurrency=REFUSAL_CLIENTS,
        duration_s=seconds,
        api_key=key,
        bodies=bodies,
    )
    if result.limited < result.requests - 1:
        raise RuntimeError(f"the spent tenant was not refused: {result.summary()}")
    return 1e3 * (cpu_seconds(server.pid, server.pid) - before) / result.requests


def pooled_ms(results: list[LoadResult], q: float) -> float:
    """Percentile `q` of the 200 answers' latencies of several runs taken together."""
    ok = np.concatenate([r.ok_latencies_ms for r in results])
    return float(np.percentile(ok, q)) if len(ok) else float("nan")


def p16_fairness(server: ServerProcess, args: argparse.Namespace) -> dict[str, float]:
    """P16: tenant A floods at 5x capacity while B sends its normal load; B's p99 against B's
    p99 alone, with tenants (fair queues, A rate-limited) and without (one shared queue)."""
    # What B waits for under the flood, as measured here (2 cores, load average 1-3): the front
    # door all tenants share, before any fair queue: one event loop and one GIL in the server
    # process read, refuse and parse A's requests in arrival order (its loop and model thread
    # together stayed under one core while the machine had cores idle). A 429 cost the loop
    # about 0.18 ms; a 503 for A's full queue about 0.72 ms while the body was read and
    # JSON-parsed before the route looked at the queue (now refused from the path first:
    # serve.oip.FullQueueMiddleware; B's p50 under the flood 23-25 -> 16 ms, the p99 of its calm
    # rounds 65-87 -> 38-44 ms, a last round still spiking to 150-240 ms). Diagnostic runs (not
    # this bench, before that change): with A's limit at 1 request/s (a flood of 429s only)
    # B's p99 stayed at 7.5-12 ms; at half the capacity 39-216 ms, at the capacity 65-67 ms
    # (the server at 0.93 cores in both); with the server's garbage collector off, B's p99 fell
    # from 52-67 ms to 34-37 ms and its p50 stayed at 17-19 ms (4 ms alone).
    # Since then A's 429s (and any 401) are answered by the connection layer's door
    # (serve.connections) from the headers, without the app. Measured by this bench on a quiet
    # 2-core machine (load average 0.6-1.3): a 429 cost the loop 0.027 ms of CPU at the door
    # against 0.049 ms in the app; B's pooled p99 ratio 6.67x with the door, 6.58x with it off,
    # 254.86x without tenants; the loop's CPU per request under the flood 0.33 ms with the door,
    # 0.35 ms without. With about 3 in 4 requests refused, the refusals make under 0.03 ms of
    # it. The rest is the traffic let in: A's admitted requests, at up to the capacity, whose
    # bodies the loop parses, with the model saturated.
    # Later, with A limited to a quarter, half and all of the capacity side by side (one run,
    # 3 rounds, capacity 252 req/s): B's pooled p99 ratio 9.4x, 29.4x and 106.9x, single rounds
    # from 13 ms to 1.2 s. Under the flood the server's loop and model thread together kept
    # 0.93-0.95 cores busy in most rounds (B alone at 63 req/s: 0.24-0.41), the machine
    # 1.0-1.5 of its 2: one process, one GIL, saturated even with a quarter of the capacity
    # admitted for A. The loop's CPU per admitted 32-row JSON request was 3.2-3.4 ms, 2.5-2.7
    # ms after the request layer's number parsing moved to C. A GIL switch interval of 0.2 ms
    # (the model thread waits less for the GIL after each op: a forward pass beside a busy
    # thread 79 -> 6.5 ms) did not help here: in one run, 43.6x against 7.4x with Python's
    # 5 ms (A at the full capacity), so it was not kept. A prototype with digits-cnn's batches
    # run in a process of its own (a spawn ProcessPoolExecutor; --quick, 1 round) gave 1.6x,
    # 37.5x and 4.9x, B alone p50 8 ms against 5-6 ms in process: not the whole answer either.
    # A leaner one (a spawned process per model, its answers read by the event loop from a pipe
    # with no thread in the server, two batches in flight) raised the capacity to 379-411
    # req/s, and A's flood with it to about 2,000 req/s; B's p99 ratio was 58-99x (2 rounds):
    # the one event loop that reads and parses every request becomes the bottleneck.
    # Since then A's client runs at nice 19 (FLOOD_NICE): at 5x the capacity it keeps about a
    # core of this 2-core machine busy. One run (3 rounds, capacity 235 req/s): B's pooled p99
    # ratio 3.46x, 12.01x and 57.81x at a quarter, half and all of it; 38.96x with the door
    # off, 213.51x without tenants (an earlier run without nice: 9.4x, 29.4x, 106.9x).
    # A GIL switch interval of 0.5 ms, side by side with Python's 5 ms (3 passes each, 2 rounds
    # of 8 s, A at nice 19): B's pooled p99 ratio 1.52x, 1.44x, 2.55x at 5 ms against 1.81x,
    # 1.15x, 6.25x at 0.5 ms with A at a quarter of the capacity, 22.1x, 4.9x, 8.9x against
    # 44.7x, 2.3x, 12.9x at half: no difference that the noise does not swamp, so the server
    # keeps Python's interval. With A on a student's key from `maaslab keys classroom` (20
    # req/s, 0.07-0.10x the capacity) the same passes gave 1.39x to 1.72x, all within the goal.
    seconds = 2 * args.seconds  # B's p99 needs a few hundred answers per round
    bodies = json_bodies(FLOOD_ROWS)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(http_only(server)).start(180) as plain:
        warm_up(plain, bodies, args.clients)
        # The median of three measurements: one alone varied 148-263 req/s between runs here.
        capacity = statistics.median(
            run_load(
                plain.url,
                MODEL,
                concurrency=args.clients,
                duration_s=args.seconds / 2,
                bodies=bodies,
            ).throughput
            for _ in range(3)
        )
        rates = (FLOOD_TIMES * capacity, NORMAL_SHARE * capacity)
        # One tenant A per share of the capacity it may use (its rate limit), on one server.
        shares = args.flood_limits
        floods = {share: f"flood-{share:g}" for share in shares}
        keys = {name: new_key() for name in (*floods.values(), "student", "normal", "spent")}
        limits = {share: Limits(requests_per_s=max(1, round(share * capacity))) for share in shares}
        KeyTable(
            [
                *(
                    Tenant(floods[share], "user", hash_key(keys[floods[share]]), limits[share])
                    for share in shares
                ),
                Tenant("student", "user", hash_key(keys["student"]), STUDENT),
                Tenant("normal", "user", hash_key(keys["normal"]), Limits()),
                Tenant("spent", "user", hash_key(keys["spent"]), SPENT),
            ]
        ).save(Path(tmp) / "keys.json")
        keyed_config = replace(plain.config, keys_file=str(Path(tmp) / "keys.json"))
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no fork of threads
        with (
            ServerProcess(keyed_config).start(180) as keyed,
            ServerProcess(keyed_config, env=NO_DOOR).start(180) as no_door,
            ProcessPoolExecutor(
                1, mp_context=spawn, initializer=os.nice, initargs=(FLOOD_NICE,)
            ) as pool,
        ):
            for srv in (keyed, no_door):
                warm_up(srv, bodies, args.clients, keys["normal"])
            flood_pid = pool.submit(os.getpid).result()  # A's process starts before any clock
            limited = ", ".join(
                f"{limits[sh].requests_per_s:g} req/s = {sh:g}x (burst {limits[sh].bucket_size})"
                for sh in shares
            )
            print(
                f"P16: capacity {capacity:.0f} req/s of {FLOOD_ROWS} rows ({args.clients} "
                f"clients, closed loop, server without keys, median of 3). A offers "
                f"{FLOOD_TIMES:g}x = {rates[0]:.0f} req/s (open loop, {FLOOD_CLIENTS} in flight "
                f"at most; with tenants, its key limited to {limited} of the capacity, one key "
                f"per setup), from its own process at nice {FLOOD_NICE}; B offers "
                f"{rates[1]:.0f} req/s ({NORMAL_SHARE:.0%}, open loop) from this one. "
                f"{args.rounds} rounds of {seconds:g} s, each B alone then B under flood, per "
                "setup; B's percentiles pooled over rounds. Cores: what the server's event loop "
                "(its main thread), its other threads (the model), A's and B's clients and the "
                "whole machine "
                f"({os.cpu_count()} cores) kept busy while B ran."
            )
            # What one 429 costs the loop every tenant shares, at the door and in the app.
            refusal: dict[str, list[float]] = {"door": [], "app": []}
            for _ in range(args.rounds):
                for name, srv in (("door", keyed), ("app", no_door)):
                    refusal[name].append(refusal_cost(srv, keys["spent"], bodies, args.seconds / 2))
            for name, costs in refusal.items():
                figures[f"P16_refusal_loop_ms_{name}"] = statistics.median(costs)
            print(
                f"P16 a refusal (429, {FLOOD_ROWS}-row body) costs the server's event loop "
                f"{figures['P16_refusal_loop_ms_door']:.3f} ms of CPU at the door, "
                f"{figures['P16_refusal_loop_ms_app']:.3f} ms in the app (its door off); "
                f"{REFUSAL_CLIENTS} clients back to back, {args.rounds} rounds of "
                f"{args.seconds / 2:g} s each, median; rounds: door "
                + " ".join(f"{c:.3f}" for c in refusal["door"])
                + ", app "
                + " ".join(f"{c:.3f}" for c in refusal["app"])
                + f"; load average {os.getloadavg()[0]:.1f}"
            )
            # The door's worth is measured at the largest share (the most traffic let in).
            most = floods[max(shares)]
            setups = {
                "tenants_student": (keyed, (keys["student"], keys["normal"])),
                **{
                    f"tenants_{share:g}": (keyed, (keys[floods[share]], keys["normal"]))
                    for share in shares
                },
                "tenants_no_door": (no_door, (keys[most], keys["normal"])),
                "no_tenants": (plain, (None, None)),
            }
            runs = {name: {"alone": [], "flood": [], "A": [], "server_ok": []} for name in setups}
            cores: dict[str, list[dict[str, float]]] = {name: [] for name in setups}
            loop_ms: dict[str, list[float]] = {name: [] for name in setups}
            for k in range(args.rounds):
                for name, (srv, (key_a, key_b)) in setups.items():
                    alone, quiet = normal_load(srv, flood_pid, key_b, bodies, rates[1], seconds)
                    a, b, server_ok, busy = flood_round(
                        srv, pool, flood_pid, (key_a, key_b), bodies, rates, seconds
                    )
                    for part, r in (("alone", alone), ("flood", b), ("A", a)):
                        runs[name][part].append(r)
                    runs[name]["server_ok"].append(server_ok)
                    cores[name].append(busy)
                    late = b.ok_latencies_ms[b.started_s[b.status == 200] >= seconds - 1]
                    print(
                        f"  round {k + 1} {name:<15} B alone p50 {alone.p50_ms:6.1f} p99 "
                        f"{alone.p99_ms:6.1f} ms; under flood p50 {b.p50_ms:6.1f} p99 "
                        f"{b.p99_ms:7.1f} ms (p50 of its last second "
                        f"{np.median(late) if len(late) else float('nan'):.1f} ms) "
                        f"{status_counts(b.status)}; A sent {a.requests / a.seconds:.0f} req/s "
                        f"{status_counts(a.status)}"
                    )
                    # The loop's CPU per request that reached it (A's and B's alike): what a
                    # refusal costs the front door that every tenant shares.
                    arriving = a.requests / a.seconds + b.requests / b.seconds
                    loop_ms[name].append(1e3 * busy["loop"] / arriving)
                    print(
                        f"    cores alone / under flood: {core_line(quiet)} / {core_line(busy)}"
                        f"; loop {loop_ms[name][-1]:.2f} ms per request under flood"
                        f"; load average {os.getloadavg()[0]:.1f}"
                    )
                    time.sleep(SETTLE_S)
            alive = {name: ready(srv) for name, (srv, _) in setups.items()}
    for name, run in runs.items():
        p50, p99 = (pooled_ms(run["alone"], q) for q in (50, 99))
        f50, f99 = (pooled_ms(run["flood"], q) for q in (50, 99))
        a_counts = status_counts(np.concatenate([r.status for r in run["A"]]))
        b_counts = status_counts(np.concatenate([r.status for r in run["flood"]]))
        sent = sum(r.requests for part in ("alone", "flood", "A") for r in run[part])
        answered = sum(int((r.status != 0).sum()) for p in ("alone", "flood", "A") for r in run[p])
        client_ok = a_counts["200"] + b_counts["200"]
        server_ok = sum(run["server_ok"])
        figures |= {
            f"P16_{name}_B_alone_p50_ms": p50,
            f"P16_{name}_B_alone_p99_ms": p99,
            f"P16_{name}_B_flood_p50_ms": f50,
            f"P16_{name}_B_flood_p99_ms": f99,
            f"P16_{name}_B_p99_ratio": f99 / p99,
            f"P16_{name}_unanswered": sent - answered,
            f"P16_{name}_accepted_lost": server_ok - client_ok,
        }
        figures |= {
            f"P16_{name}_flood_cores_{part}": statistics.median(c[part] for c in cores[name])
            for part in cores[name][0]
        }
        figures[f"P16_{name}_loop_ms_per_request"] = statistics.median(loop_ms[name])
        figures |= {f"P16_{name}_A_{code}": n for code, n in a_counts.items()}
        figures |= {f"P16_{name}_B_{code}": n for code, n in b_counts.items()}
        print(
            f"P16 {name}: B p50 {p50:.1f} -> {f50:.1f} ms, p99 {p99:.1f} -> {f99:.1f} ms under "
            f"flood: p99 ratio {f99 / p99:.2f}x (goal <= 2); A {a_counts}, B under flood "
            f"{b_counts} (goal: A gets 429s, B none); answered {answered} of {sent} sent; "
            f"200s counted by the server {server_ok}, received {client_ok}; ready after: "
            f"{alive[name]}"
        )
    figures["P16_capacity_req_s"] = capacity
    print(
        "P16 fairness buys: B's p99 under flood / alone "
        f"{figures['P16_tenants_student_B_p99_ratio']:.2f}x with A on a student's key "
        f"({STUDENT.requests_per_s:g} req/s = {STUDENT.requests_per_s / capacity:.2f}x the "
        "capacity), "
        + ", ".join(
            f"{figures[f'P16_tenants_{sh:g}_B_p99_ratio']:.2f}x with A limited to {sh:g}x the "
            "capacity"
            for sh in shares
        )
        + f"; {figures['P16_tenants_no_door_B_p99_ratio']:.2f}x with tenants refused by the app "
        f"instead of the door (A at {max(shares):g}x), "
        f"{figures['P16_no_tenants_B_p99_ratio']:.2f}x without tenants; "
        "the loop's CPU per request under flood (median round) "
        + ", ".join(f"{name} {figures[f'P16_{name}_loop_ms_per_request']:.2f} ms" for name in runs)
    )
    return figures


def tenant_work_us(table: KeyTable, key: str, calls: int = TENANT_CALLS) -> float:
    """Microseconds of the tenant layer's own work per request, timed here in a loop: the key
    checked and the limits applied (Tenancy.gate, as the door does), the answer metered
    (Usage.record, as TenantMiddleware does, and a batch's compute share, as the Batcher's
    hook does). The ASGI layer and the per-tenant FIFO are not in it: the FIFO is the same code
    without keys (one tenant, None)."""
    tenancy = Tenancy(table)
    authorization = f"Bearer {key}"
    started = time.perf_counter()
    for _ in range(calls):
        tenant = tenancy.gate(authorization)
        assert isinstance(tenant, Tenant)
        tenancy.usage.record(tenant.name)
        tenancy.meter_share(tenant.name, 1, 1e-3)
    return 1e6 * (time.perf_counter() - started) / calls


def p17_overhead(server: ServerProcess, args: argparse.Namespace) -> dict[str, float]:
    """P17: the plain path's throughput with auth + metering + fair queues against without."""
    figures: dict[str, float] = {}
    table, keys = classroom(CLASS_SIZE)  # the teacher's key: a tenant without limits
    with tempfile.TemporaryDirectory() as tmp:
        table.save(Path(tmp) / "keys.json")
        plain_config = http_only(server)
        keyed_config = replace(plain_config, keys_file=str(Path(tmp) / "keys.json"))
        with (
            ServerProcess(plain_config).start(180) as plain,
            ServerProcess(keyed_config).start(180) as keyed,
            ServerProcess(keyed_config, env=NO_DOOR).start(180) as no_door,
        ):
            setups = {
                "no keys": (plain, None),
                "keys": (keyed, keys["teacher"]),
                "keys no door": (no_door, keys["teacher"]),
            }
            print(
                f"P17: {args.clients} clients, closed loop, {args.rounds} x {args.seconds:g} s "
                f"rounds per server and size, interleaved (median round); the keys file holds "
                f"{len(table.tenants)} tenants, the load uses the teacher's (no limits)"
            )
            for rows in OVERHEAD_ROWS:
                bodies = json_bodies(rows)
                for srv, key in setups.values():
                    warm_up(srv, bodies, args.clients, key)
                rounds: dict[str, list[LoadResult]] = {name: [] for name in setups}
                # The server's event-loop CPU per request: what the keys cost where CPU is
                # spent, steadier than throughput when other work shares the cores.
                loop_ms: dict[str, list[float]] = {name: [] for name in setups}
                for _ in range(args.rounds):
                    for name, (srv, key) in setups.items():
                        assert srv.pid is not None
                        before = cpu_seconds(srv.pid, srv.pid)
                        rounds[name].append(
                            run_load(
                                srv.url,
                                MODEL,
                                concurrency=args.clients,
                                duration_s=args.seconds,
                                bodies=bodies,
                                api_key=key,
                            )
                        )
                        spent = cpu_seconds(srv.pid, srv.pid) - before
                        loop_ms[name].append(1e3 * spent / max(1, rounds[name][-1].requests))
                tput = {n: statistics.median(r.throughput for r in rs) for n, rs in rounds.items()}
                bad = {n: sum(r.requests - r.ok for r in rs) for n, rs in rounds.items()}
                ratio = tput["keys"] / tput["no keys"]
                no_door_ratio = tput["keys no door"] / tput["no keys"]
                figures |= {
                    f"P17_{rows}_no_keys_req_s": tput["no keys"],
                    f"P17_{rows}_keys_req_s": tput["keys"],
                    f"P17_{rows}_keys_over_no_keys": ratio,
                    f"P17_{rows}_keys_no_door_req_s": tput["keys no door"],
                    f"P17_{rows}_keys_no_door_over_no_keys": no_door_ratio,
                }
                figures |= {
                    f"P17_{rows}_{n.replace(' ', '_')}_loop_ms_per_request": statistics.median(ms)
                    for n, ms in loop_ms.items()
                }
                print(
                    f"P17 at {rows} rows: without keys {tput['no keys']:.1f} req/s, with keys "
                    f"{tput['keys']:.1f} req/s: keys / no keys {ratio:.3f} (overhead "
                    f"{1 - ratio:+.1%}, goal <= 5%); keys checked by the app instead of the door "
                    f"{tput['keys no door']:.1f} req/s ({no_door_ratio:.3f}); rounds "
                    + ", ".join(
                        f"{n} {' '.join(f'{r.throughput:.0f}' for r in rs)}"
                        for n, rs in rounds.items()
                    )
                    + f"; not 200: {bad}; the loop's CPU per request (median round) "
                    + ", ".join(f"{n} {statistics.median(ms):.3f} ms" for n, ms in loop_ms.items())
                    + f"; load average {os.getloadavg()[0]:.1f}"
                )
    # Throughput here swings 10-20 % between rounds, more than the goal's 5 %; the tenant
    # layer's own work, timed alone, says what share of the loop's time it takes (its ASGI
    # middleware hop aside).
    work = statistics.median(tenant_work_us(table, keys["teacher"]) for _ in range(3))
    share = work / (1e3 * figures[f"P17_{OVERHEAD_ROWS[0]}_no_keys_loop_ms_per_request"])
    figures |= {"P17_tenant_work_us": work, "P17_tenant_work_share_of_loop": share}
    print(
        f"P17 the tenant layer's own work (key check, limits, metering; {len(table.tenants)} "
        f"tenants, timed in this process, median of 3 x {TENANT_CALLS:,} calls): {work:.1f} us "
        f"per request = {share:.1%} of the loop's CPU per {OVERHEAD_ROWS[0]}-row request "
        "without keys"
    )
    return figures


# Sections in the order they run: (number, name, function). Each gets the one server.
SECTIONS: list[tuple[str, str, Callable[[ServerProcess, argparse.Namespace], dict[str, float]]]] = [
    ("P15", "protocols", p15_protocols),
    ("P16", "fairness", p16_fairness),
    ("P17", "overhead", p17_overhead),
]


def main() -> None:
    """Start one server, run the chosen sections against it, print (and save) their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s: a smoke run")
    parser.add_argument("--clients", type=int, default=4, help="closed-loop client threads")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measured round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per protocol")
    parser.add_argument("--device", default="cpu", help="cpu or cuda for the server")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="the server's torch threads (default 1: with the clients on the same cores, a "
        "second OpenMP thread waits for a core at every op; measured here on 2 cores, rounds "
        "with 2 threads varied 3-25x, with 1 within a few percent)",
    )
    parser.add_argument(
        "--max-delay-ms",
        type=float,
        default=0.0,
        help="the server's wait for a batch's company (default 0: the 5 ms default wait is "
        "added to every protocol alike and hides the differences P15 measures)",
    )
    parser.add_argument(
        "--flood-limits",
        type=shares_list,
        default=FLOOD_LIMITS,
        help="P16: tenant A's rate limits as shares of the measured capacity, comma-separated, "
        "each measured with its own key on one server (default "
        f"{','.join(f'{x:g}' for x in FLOOD_LIMITS)}: 1 lets A use the whole server; below 1 "
        "the limit leaves room for the other tenants)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated section numbers, e.g. P15 (default: all)"
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 2.0
    chosen = {s.strip().upper() for s in args.only.split(",") if s.strip()}
    unknown = chosen - {number for number, _, _ in SECTIONS}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}: choose from {[s[0] for s in SECTIONS]}")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"python {platform.python_version()}; device: {describe().summary()}; load average "
        f"before start {', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    config = ServeConfig(
        models=(MODEL,),
        port=0,
        grpc_port=0,
        device=args.device,
        max_delay_ms=args.max_delay_ms,
        threads=args.threads,
    )
    figures: dict[str, float] = {}
    with ServerProcess(config).start(180) as server:
        print(
            f"server: {server.url}, gRPC port {server.grpc_port}, {config.describe()}, "
            f"{config.threads} torch thread(s)"
        )
        for number, name, section in SECTIONS:
            if not chosen or number in chosen:
                print(f"--- {number} {name}")
                figures |= section(server, args)
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
