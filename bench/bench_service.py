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

Adding a section (fairness and overhead come next): write `def pNN_name(server, args) -> dict`
returning its figures keyed "PNN_...", printing as it goes, and list it in SECTIONS; --only
picks sections by number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from maaslab.device import describe
from maaslab.serve.config import ServeConfig
from maaslab.serve.process import ServerProcess
from maaslab.serve.protocols import (
    PROTOCOLS,
    ProtocolClients,
    ProtocolConfig,
    compare_protocols,
    digit_rows,
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


# Sections in the order they run: (number, name, function). Each gets the one server.
SECTIONS: list[tuple[str, str, Callable[[ServerProcess, argparse.Namespace], dict[str, float]]]] = [
    ("P15", "protocols", p15_protocols),
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
