"""Lesson 13: the same DDP training with 1 and 2 processes (and 1 process on 2 threads).

Every setup is the real command line, `torchrun --standalone --nproc_per_node=N -m
maaslab.distributed`, training the same model for the same number of steps on the same global
batch (split over the processes). The setups are run in rounds (1, 2, ..., then again), so
machine noise hits all of them; the table gives each setup's median over the rounds, and the
last line the ratio of 2 processes to 1. On a CUDA machine the same script uses nccl.
"""

from __future__ import annotations

import argparse
import os
import statistics

from maaslab.device import describe
from maaslab.distributed import DDPConfig, ScalingRow, measure_scaling


def main() -> None:
    """Print the median steps/s, compute and all-reduce time of each setup over the rounds."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", default="256,256", help="MLP widths")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run")
    p.add_argument("--global-batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="times every setup is run")
    p.add_argument("--no-threads-row", action="store_true", help="skip 1 process x 2 threads")
    args = p.parse_args()
    hidden = tuple(int(w) for w in args.hidden.split(","))
    cfg = DDPConfig(hidden=hidden, epochs=1000, max_steps=args.steps)
    setups = ((1, 1), (2, 1)) if args.no_threads_row else ((1, 1), (1, 2), (2, 1))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"device: {describe().summary()} | load average {load}")
    work = f"global batch {args.global_batch}, {args.steps} steps"
    print(f"MLP 64-{args.hidden}-10 on digits, {work}")
    rounds: list[list[ScalingRow]] = []
    for _ in range(args.rounds):
        rounds.append(measure_scaling(cfg, setups, global_batch=args.global_batch))
    print(f"{'setup':>14} {'steps/s':>9} {'examples/s':>11} {'compute ms':>11} {'all-red. ms':>11}")
    medians = {}
    for i, (procs, threads) in enumerate(setups):
        rows = [r[i] for r in rounds]
        sps = statistics.median(r.steps_per_second for r in rows)
        medians[(procs, threads)] = sps
        print(
            f"{f'{procs} proc x {threads} thr':>14} {sps:9.1f} "
            f"{statistics.median(r.examples_per_second for r in rows):11.0f} "
            f"{statistics.median(r.compute_ms for r in rows):11.2f} "
            f"{statistics.median(r.allreduce_ms for r in rows):11.2f}"
        )
    print(f"2 processes / 1 process: {medians[(2, 1)] / medians[(1, 1)]:.2f}x steps per second")


if __name__ == "__main__":
    main()
