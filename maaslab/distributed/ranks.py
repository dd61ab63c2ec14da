"""Start ranks on this machine without forking, and never wait on them forever.

A process that has started threads (OpenMP, a Jupyter kernel's ZMQ, tokenizers) must not be
forked: the child gets a copy of every lock, including ones held at that instant by threads
that do not exist in the child, and the first rank to take such a lock waits forever. So every
rank starts as a fresh interpreter: `start_ranks` uses multiprocessing's spawn method, and
`run_command` runs a command line (torchrun) in its own process group. Both take a deadline;
when it passes, every process they started is killed and a MaaslabError says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

from maaslab.errors import MaaslabError

RANKS_TIMEOUT_S = 300.0  # a run of lesson 13 takes seconds; this long means a stuck rank
MAX_LOCAL_RANKS = 8  # ranks one machine starts in-process (torchrun for more)


def start_ranks(
    target: Callable[..., None],
    world_size: int,
    args: tuple[Any, ...] = (),
    *,
    timeout: float = RANKS_TIMEOUT_S,
) -> None:
    """Run `target(rank, *args)` in `world_size` spawned processes and wait for all of them.

    Parameters
    ----------
    target : a module-level function (a spawned rank imports it by name).
    world_size : ranks to start, 1 to MAX_LOCAL_RANKS.
    args : passed to every rank after its rank number (tensors travel in shared memory).
    timeout : seconds for the whole group; then every rank is killed and MaaslabError raised.
    """
    if not 1 <= world_size <= MAX_LOCAL_RANKS:
        raise MaaslabError(
            f"world_size must be between 1 and {MAX_LOCAL_RANKS} on one machine, got {world_size}"
        )
    group = mp.start_processes(
        target, args=args, nprocs=world_size, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    try:
        while not group.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                raise MaaslabError(
                    f"the {world_size} rank(s) did not finish within {timeout:g} s: "
                    "stopped them all (a rank is stuck, or the work is larger than this "
                    "deadline allows)"
                )
    except mp.ProcessRaisedException as err:
        raise MaaslabError(f"a rank failed: {str(err).strip().splitlines()[-1]}") from None
    except mp.ProcessExitedException as err:
        raise MaaslabError(f"a rank died: {err}") from None
    finally:
        for process in group.processes:
            if process.is_alive():
                process.kill()
            process.join(5.0)


def run_command(
    command: Sequence[str],
    *,
    cwd: str | Path,
    env: dict[str, str],
    timeout: float = RANKS_TIMEOUT_S,
    name: str = "torchrun",
) -> subprocess.CompletedProcess[str]:
    """Run `command` (torchrun and the ranks it starts) with a deadline for all of them.

    The command gets a process group of its own, so a deadline kills its ranks too and not
    only the launcher.
    """
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise MaaslabError(
            f"{name} did not finish within {timeout:g} s: stopped it and its "
            "ranks (a rank is stuck, or the work is larger than this deadline allows)"
        ) from None
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
