"""Reproducibility and fast mode: the two switches every lesson, page and test shares."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

FAST_ENV = "MAASLAB_FAST"


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a torch.Generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def fast_mode() -> bool:
    """True when MAASLAB_FAST is set to 1/true/yes: CI and classroom previews shrink their work."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def scaled(full: int, fast: int) -> int:
    """Pick the full-size number, or the fast-mode one when fast mode is on.

    Parameters
    ----------
    full : the epochs / samples / steps a lesson uses normally.
    fast : the smaller number used under MAASLAB_FAST=1 (CI, quick previews).
    """
    return fast if fast_mode() else full


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch using `threads` CPU threads (None: leave as is), then restore.

    torch's thread count is process-wide. Small models run faster on one thread whenever the
    cores are busy with anything else (a second thread then waits for a core at every op).
    """
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
