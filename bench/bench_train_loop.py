"""P1: the instrumented training loop vs a bare PyTorch loop, same model, data and seed.

Both run interleaved in one process (bare, ours, bare, ours, ...), so machine noise hits both
alike; the summary line is the ratio of their medians. Goal: ours / bare <= 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from maaslab import seed_everything
from maaslab.data import Dataset, load_dataset, make_loaders
from maaslab.device import describe
from maaslab.models import build_model
from maaslab.train import TrainConfig, evaluate, train


def _model(data: Dataset, hidden: tuple[int, ...]) -> nn.Module:
    seed_everything(0)
    return build_model("mlp", in_features=data.n_features, hidden=hidden,
                       out_features=data.out_features)  # fmt: skip


def bare_loop(data: Dataset, hidden: tuple[int, ...], epochs: int, batch_size: int) -> float:
    """What a learner writes by hand: forward, loss, backward, step; evaluate each epoch."""
    model = _model(data, hidden)
    started = time.perf_counter()  # both timings include set-up: loaders, optimizer
    torch.manual_seed(0)
    train_loader, test_loader = make_loaders(data, batch_size, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        running = 0.0
        for xb, yb in train_loader:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()
        evaluate(model, test_loader, data.task)
    return time.perf_counter() - started


def our_loop(data: Dataset, hidden: tuple[int, ...], epochs: int, batch_size: int) -> float:
    """maaslab.train with everything it records (step loss, accuracy, gradient norms)."""
    model = _model(data, hidden)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adam", lr=1e-3, seed=0,
                      device="cpu")  # fmt: skip
    started = time.perf_counter()
    train(model, data, cfg)
    return time.perf_counter() - started


def main() -> None:
    """Run the interleaved pairs and print the table and the summary line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved pairs")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed run")
    args = parser.parse_args()
    print(f"# {describe('cpu').summary()}")
    cases = [
        ("digits", load_dataset("digits"), (128, 64), 32),
        ("moons", load_dataset("moons", n_samples=2000), (16, 16), 32),
    ]
    ratios = {}
    for name, data, hidden, batch_size in cases:
        bare_loop(data, hidden, 1, batch_size)  # warm-up both paths
        our_loop(data, hidden, 1, batch_size)
        bare_times, our_times = [], []
        for _ in range(args.repeats):
            bare_times.append(bare_loop(data, hidden, args.epochs, batch_size))
            our_times.append(our_loop(data, hidden, args.epochs, batch_size))
        bare, ours = statistics.median(bare_times), statistics.median(our_times)
        ratios[name] = ours / bare
        print(f"{name:<7} mlp{hidden} batch {batch_size} x {args.epochs} epochs: "
              f"bare {bare * 1000:.1f} ms · maaslab.train {ours * 1000:.1f} ms · "
              f"ratio {ratios[name]:.3f}")  # fmt: skip
    shown = " · ".join(f"{k} {v:.3f}" for k, v in ratios.items())
    verdict = "meets" if max(ratios.values()) <= 1.05 else "misses"
    print(f"P1 instrumented/bare loop time (median of {args.repeats} interleaved pairs): {shown}"
          f" — {verdict} goal <= 1.05")  # fmt: skip


if __name__ == "__main__":
    main()
