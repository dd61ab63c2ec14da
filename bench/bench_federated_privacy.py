"""Lesson 18: the cost of privacy, plain FedAvg averaging vs secure aggregation vs CKKS.

For the digits MLP (64-64-64-10, 8,970 weights) and a larger MLP (64-256-256-10, 85,002), K
clients send their weights for one round of FedAvg's average (`maaslab.federated.aggregate`)
by each method. The methods run in rounds (plain, masked, ckks, then again) so that machine
noise hits all of them; each figure is the median over the rounds. Bytes are what one client
uploads per round; "client ms" is one client's encoding (weighting, and masking or encrypting;
the clients work in parallel), "round ms" the whole round's work done one after the other (all
K clients' encoding, the server's sum, decoding or decrypting); "x plain" divides by plain's
figure measured in the same run. CKKS's
keys are made once per model and reported apart (setup), as a federation makes them once.
The example counts are the digits training split dealt IID among the K clients.
"""

from __future__ import annotations

import argparse
import os
import statistics

import numpy as np
import torch

from maaslab import seed_everything
from maaslab.data import load_dataset
from maaslab.device import describe
from maaslab.federated import AGGREGATIONS, Aggregation, aggregate, make_keys, partition_dataset
from maaslab.models import build_model

SIZES = {"digits MLP 64-64-64-10": (64, 64), "larger MLP 64-256-256-10": (256, 256)}


def client_states(hidden: tuple[int, ...], k: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """K clients' weights: one initial model, each client's copy moved as local training would."""
    seed_everything(seed)
    model = build_model("mlp", in_features=64, hidden=hidden, out_features=10)
    start = model.state_dict()
    generator = torch.Generator().manual_seed(seed)
    return [
        {n: t + 0.01 * torch.randn(t.shape, generator=generator) for n, t in start.items()}
        for _ in range(k)
    ]


def measure(
    states: list[dict[str, torch.Tensor]], weights: list[int], rounds: int
) -> dict[str, list[Aggregation]]:
    """Every method's Aggregation per round, the methods interleaved within each round."""
    keys = make_keys()  # once per federation
    runs: dict[str, list[Aggregation]] = {m: [] for m in AGGREGATIONS}
    for round_ in range(1, rounds + 1):
        for method in AGGREGATIONS:
            runs[method].append(
                aggregate(states, weights, method, round_=round_, keys=keys, seed=0)
            )
    return runs


def report(name: str, runs: dict[str, list[Aggregation]]) -> None:
    """One table: per method bytes, seconds by phase, ratios to plain, error, setup."""
    plain = runs["plain"]
    plain_bytes = plain[0].bytes_per_client
    plain_s = statistics.median(a.seconds for a in plain)
    size, k = plain[0].vector.size, len(plain[0].updates)
    print(f"\n{name}: {size:,} weights, {k} clients, {len(plain)} rounds")
    print(
        f"{'method':>7} {'KB/client':>10} {'x plain':>8} {'client ms':>10} {'server ms':>10} "
        f"{'decode ms':>10} {'round ms':>9} {'x plain':>8} {'max |err|':>10} {'setup':>18}"
    )
    for method, aggs in runs.items():
        med = {
            f: statistics.median(getattr(a, f) for a in aggs)
            for f in ("encode_seconds", "aggregate_seconds", "decode_seconds", "seconds")
        }
        bytes_ = statistics.median(a.bytes_per_client for a in aggs)
        error = max(
            float(np.abs(a.vector - p.vector).max()) for a, p in zip(aggs, plain, strict=True)
        )
        setup = (
            f"{aggs[0].setup_seconds * 1e3:.0f} ms, {aggs[0].setup_bytes / 1e6:.2f} MB"
            if aggs[0].setup_bytes
            else "-"
        )
        print(
            f"{method:>7} {bytes_ / 1e3:10.1f} {bytes_ / plain_bytes:8.1f} "
            f"{med['encode_seconds'] * 1e3 / k:10.2f} {med['aggregate_seconds'] * 1e3:10.2f} "
            f"{med['decode_seconds'] * 1e3:10.2f} {med['seconds'] * 1e3:9.2f} "
            f"{med['seconds'] / plain_s:8.1f} {error:10.1e} {setup:>18}"
        )


def main() -> None:
    """Print one table per model size: plain, masked and ckks side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds: a smoke run")
    parser.add_argument("--clients", type=int, default=10, help="K, the clients in the round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per method")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.rounds = 2
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"device: {describe('cpu').summary()} | load average {load}")
    digits = load_dataset("digits")
    partition = partition_dataset(digits, args.clients, seed=args.seed)
    weights = [len(rows) for rows in partition.indices]
    print(f"example counts (digits training split, IID): {weights}")
    for name, hidden in SIZES.items():
        states = client_states(hidden, args.clients, args.seed)
        report(name, measure(states, weights, args.rounds))
    print(
        "\nmasked: 64-bit ring elements, the pair seeds simulated (a real key agreement adds a "
        "32-byte public key per client and K-1 down per round); ckks: N=8192, (60, 40, 60) "
        "bits, scale 2^40; setup = key generation, and the contexts sent once (public key to "
        "every client, parameters to the server)"
    )


if __name__ == "__main__":
    main()
