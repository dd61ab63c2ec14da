"""Lesson 18: one FedAvg federation run by hand (run_federated) and on Flower's Deployment Engine.

Both runs start from the same initial weights, deal the same partition and take the same seeded
local steps (client.local_update); only the server differs: our loop in this process, or a
SuperLink, one SuperNode per client and a ServerApp with Flower's FedAvg strategy, as processes
on 127.0.0.1. Ours runs before and after Flower (the median of the two is its figure), so
machine noise hits both sides. A round's wall time is from the end of the previous round's
validation to the end of its own (both sides measure it so); Flower's process start-up (until
every SuperNode has connected) and the rest of its run outside the rounds (the ServerApp's own
process start, the test split, the log stream closing) are reported apart.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics

from maaslab import seed_everything
from maaslab.data import load_dataset
from maaslab.device import describe
from maaslab.federated import FederatedConfig, partition_dataset, run_federated
from maaslab.federated.flower_runner import run_flower_deployment
from maaslab.models import build_model


def main() -> None:
    """Print both runs' per-round accuracy and wall time, their ratio, and Flower's start-up."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=3, help="clients = SuperNodes")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.3)
    p.add_argument("--alpha", type=float, default=None, help="Dirichlet alpha (default IID)")
    p.add_argument("--hidden", default="16", help="MLP widths")
    p.add_argument("--quick", action="store_true", help="2 rounds: a smoke run")
    args = p.parse_args()
    rounds = 2 if args.quick else args.rounds
    data = load_dataset("digits")
    seed_everything(0)
    hidden = tuple(int(w) for w in args.hidden.split(","))
    model = build_model(
        "mlp", in_features=data.n_features, hidden=hidden, out_features=data.out_features
    )
    cfg = FederatedConfig(rounds=rounds, local_epochs=args.local_epochs, lr=args.lr, device="cpu")
    partition = partition_dataset(data, args.clients, alpha=args.alpha, seed=0)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"device: {describe().summary()} | load average {load}")
    skew = "IID" if args.alpha is None else f"Dirichlet({args.alpha:g})"
    print(
        f"MLP 64-{args.hidden}-10 on digits, {args.clients} clients ({skew}, sizes "
        f"{partition.sizes.tolist()}), {rounds} rounds x {args.local_epochs} local epoch(s)"
    )

    before = run_federated(copy.deepcopy(model), data, partition, cfg)
    flower = run_flower_deployment(
        model, cfg, args.clients, alpha=args.alpha, partition_seed=0, timeout_s=600
    )
    final = copy.deepcopy(model)
    after = run_federated(final, data, partition, cfg)

    print(f"{'round':>5} {'ours acc':>9} {'Flower acc':>10} {'ours s':>8} {'Flower s':>9}")
    for r in range(rounds + 1):
        ours_s = statistics.median([before.rounds[r].seconds, after.rounds[r].seconds])
        print(
            f"{r:5d} {after.rounds[r].val_accuracy:9.4f} {flower.rounds[r].val_accuracy:10.4f} "
            f"{ours_s:8.3f} {flower.rounds[r].seconds:9.3f}"
        )
    ours_round = statistics.median(
        statistics.mean(rec.seconds for rec in run.rounds[1:]) for run in (before, after)
    )
    flower_round = statistics.mean(rec.seconds for rec in flower.rounds[1:])
    outside = flower.run_seconds - sum(rec.seconds for rec in flower.rounds)
    drift = max((flower.state[k] - v).abs().max().item() for k, v in final.state_dict().items())
    print(
        f"wall time per round: ours {ours_round:.3f} s, Flower {flower_round:.2f} s "
        f"({flower_round / ours_round:.0f}x)"
    )
    print(
        f"Flower start-up (SuperLink + {args.clients} SuperNodes connected) "
        f"{flower.startup_seconds:.1f} s; its run outside the rounds {outside:.1f} s; "
        f"whole call {flower.wall_time:.1f} s vs ours {after.wall_time:.2f} s"
    )
    print(
        f"final accuracy: val ours {after.rounds[-1].val_accuracy:.4f} / Flower "
        f"{flower.rounds[-1].val_accuracy:.4f}; test ours {after.test_accuracy:.4f} / Flower "
        f"{flower.test_accuracy:.4f}; largest weight difference {drift:.1e}"
    )


if __name__ == "__main__":
    main()
