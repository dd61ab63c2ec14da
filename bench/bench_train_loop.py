"""P1: the Training Studio's instrumented loop vs a bare PyTorch loop, same model, data and seed.

"Instrumented" is exactly what the Studio runs when Train is pressed: `maaslab.studio.build_run`
then `maaslab.train` on a background TrainingJob with the Studio's callbacks (Stop button,
divergence guard, weight snapshots for the live views, pace set to full speed), recording step
losses, train/test loss and accuracy and per-layer gradient norms. "Bare" is what a learner
writes by hand: forward, loss, backward, step, and a test evaluation each epoch.

Both run interleaved in one process (bare, ours, bare, ours, ...), so machine noise hits both
alike; the summary line is the ratio of their medians. Goal: ours / bare <= 1.05.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
from torch import nn

from maaslab.callbacks import Throttle
from maaslab.data import make_loaders
from maaslab.device import describe
from maaslab.jobs import TrainingJob
from maaslab.studio import StudioConfig, build_run
from maaslab.train import cpu_threads, evaluate, make_optimizer

CASES = {
    "moons-mlp": StudioConfig(dataset="moons", n_samples=2000, depth=2, width=16),
    "digits-mlp": StudioConfig(dataset="digits", depth=2, width=64),
    "digits-cnn": StudioConfig(dataset="digits", model="cnn", depth=2, width=16),
}


def bare_loop(cfg: StudioConfig) -> float:
    """The hand-written loop on the Studio's model, data, optimizer and loaders, on a thread.

    It runs on a worker thread like the Studio's job: torch's CPU kernels can time very
    differently on the main thread and on a worker when the machine is busy.
    """
    result: list[float] = []
    worker = threading.Thread(target=lambda: result.append(_bare_loop(cfg)))
    threads = torch.get_num_threads()
    worker.start()
    worker.join()
    torch.set_num_threads(threads)
    return result[0]


def _bare_loop(cfg: StudioConfig) -> float:
    run = build_run(cfg)  # the same seeded model and data as the Studio's run
    model, data = run.model.to("cpu").train(), run.data
    torch.set_num_threads(cpu_threads(model, run.train_config))  # the threads the Studio uses
    started = time.perf_counter()  # both timings include set-up: loaders, optimizer
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader, val_loader = make_loaders(data, cfg.batch_size, generator=generator)
    opt = make_optimizer(model, run.train_config)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(cfg.epochs):
        model.train()
        running = 0.0
        for xb, yb in train_loader:
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()
        evaluate(model, val_loader, data.task)
    return time.perf_counter() - started


def studio_loop(cfg: StudioConfig) -> float:
    """What the Studio's Train button runs, timed from the job's start to its end."""
    run = build_run(cfg)
    job = TrainingJob(run.model, run.data, run.train_config, [Throttle(cfg.pace)])
    started = time.perf_counter()
    job.start().join()
    elapsed = time.perf_counter() - started
    if job.error:
        raise SystemExit(job.error)
    return elapsed


def main() -> None:
    """Run the interleaved pairs and print the table and the summary line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved pairs per case")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per timed run")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    args = parser.parse_args()
    print(f"# {describe('cpu').summary()} · torch threads {torch.get_num_threads()}")
    ratios = {}
    for name in args.cases.split(","):
        cfg = StudioConfig(**{**CASES[name].__dict__, "epochs": args.epochs, "pace": 0.0})
        bare_loop(cfg), studio_loop(cfg)  # warm-up both paths
        bare_times, our_times = [], []
        for _ in range(args.repeats):
            bare_times.append(bare_loop(cfg))
            our_times.append(studio_loop(cfg))
        bare, ours = statistics.median(bare_times), statistics.median(our_times)
        ratios[name] = ours / bare
        print(
            f"{name:<11} batch {cfg.batch_size} x {cfg.epochs} epochs: "
            f"bare {bare * 1000:.1f} ms · Studio {ours * 1000:.1f} ms · "
            f"ratio {ratios[name]:.3f}"
        )
    shown = " · ".join(f"{k} {v:.3f}" for k, v in ratios.items())
    verdict = "meets" if max(ratios.values()) <= 1.05 else "misses"
    print(
        f"P1 Studio/bare loop time (median of {args.repeats} interleaved pairs): {shown}"
        f" — {verdict} goal <= 1.05"
    )


if __name__ == "__main__":
    main()
