"""`torchrun --nproc_per_node=2 -m maaslab.distributed [flags]`: data-parallel training.

The same command runs on CPUs (gloo) and GPUs (nccl), on one machine or several (torchrun's
--nnodes and rendezvous flags); without torchrun it runs as a single process. Only rank 0
prints. A bad flag or a dataset too small for one global batch exits with code 2 and one line
saying what to change.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from maaslab.data import dataset_names
from maaslab.distributed.ddp import BACKENDS, MODELS, DDPConfig, process_group, train_ddp
from maaslab.errors import MaaslabError
from maaslab.train import OPTIMIZERS


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected widths like 64,64, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m maaslab.distributed`."""
    d = DDPConfig()
    p = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=N -m maaslab.distributed",
        description="Data-parallel training with DDP (gloo on CPU, nccl on GPU).",
    )
    p.add_argument("--dataset", default=d.dataset, choices=dataset_names())
    p.add_argument("--n-samples", type=_positive, default=d.n_samples, help="toy sets only")
    p.add_argument("--model", default=d.model, choices=MODELS)
    p.add_argument("--hidden", type=_hidden, default=d.hidden, help="MLP widths, e.g. 256,256")
    p.add_argument("--epochs", type=_positive, default=d.epochs)
    p.add_argument(
        "--batch-size", type=_positive, default=d.batch_size, help="examples per process per step"
    )
    p.add_argument("--optimizer", default=d.optimizer, choices=OPTIMIZERS)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-steps", type=int, default=d.max_steps, help="0 = every epoch")
    p.add_argument("--output", default=d.output, help="folder for model/ and run.json")
    p.add_argument(
        "--record-gradients", action="store_true", help="save step 1's gradients in --output"
    )
    p.add_argument("--backend", default=d.backend, choices=("", *BACKENDS), help="default: auto")
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads per process")
    return p


def config_from_args(argv: Sequence[str]) -> DDPConfig:
    """Parse flags into a DDPConfig (argparse exits with code 2 on a malformed flag)."""
    args = vars(parser().parse_args(list(argv)))
    return DDPConfig(**args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one rank; return the exit code (0, or 2 for a user error reported by rank 0)."""

    rank0 = os.environ.get("RANK", "0") == "0"
    try:
        cfg = config_from_args(sys.argv[1:] if argv is None else argv)
        with process_group(cfg.backend) as (rank, _):
            train_ddp(cfg, log=print if rank == 0 else lambda _: None)
    except MaaslabError as err:
        if rank0:
            print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
