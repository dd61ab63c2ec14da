"""Start ranks on this machine as fresh processes, and never wait on them forever.

A process that has started threads (OpenMP, a Jupyter kernel's ZMQ, tokenizers) must not be
forked: the child gets a copy of every lock, including ones held at that instant by threads
that do not exist in the child, and the first rank to take such a lock waits forever. So every
rank is a new interpreter started from a command line, like torchrun starts its ranks:
`start_ranks` runs one command per rank, `run_command` runs torchrun itself. Nothing is
inherited but the environment and the arguments (not multiprocessing's spawn either, which
re-runs the caller's main script in every child: a Streamlit page, a test runner). Each command
gets a process group of its own and a deadline; when it passes, or a rank fails, every process
still running is killed and a MaaslabError says which and why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from maaslab.errors import MaaslabError
from maaslab.paths import ROOT

RANKS_TIMEOUT_S = 300.0  # a run of lesson 13 takes seconds; this long means a stuck rank
MAX_LOCAL_RANKS = 8  # ranks one machine starts by itself (torchrun for more)
POLL_S = 0.05  # how often the ranks' exit codes are read


def rank_env(threads: int = 1) -> dict[str, str]:
    """The environment of a rank: this one, `threads` OpenMP threads, maaslab importable."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _last_line(path: Path) -> str:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error: ")]
    return (errors or lines or ["(it printed nothing)"])[-1].strip()


def start_ranks(
    command: Sequence[str],
    world_size: int,
    logs: str | Path,
    *,
    timeout: float = RANKS_TIMEOUT_S,
    env: dict[str, str] | None = None,
) -> None:
    """Run `command + [rank]` for every rank at once and wait until all have exited 0.

    Parameters
    ----------
    command : the rank's command line, without its rank number (appended last).
    world_size : ranks to start, 1 to MAX_LOCAL_RANKS.
    logs : a folder; rank r's output (stdout and stderr) goes to logs/rank{r}.out.
    timeout : seconds for the whole group; then every rank is killed and MaaslabError raised.
    env : the ranks' environment (default: rank_env()).
    """
    if not 1 <= world_size <= MAX_LOCAL_RANKS:
        raise MaaslabError(
            f"world_size must be between 1 and {MAX_LOCAL_RANKS} on one machine, got {world_size}"
        )
    outputs = [Path(logs) / f"rank{rank}.out" for rank in range(world_size)]
    processes: list[subprocess.Popen] = []
    deadline = time.monotonic() + timeout
    try:
        for rank, output in enumerate(outputs):
            with output.open("wb") as sink:
                processes.append(
                    subprocess.Popen(
                        [*command, str(rank)],
                        cwd=ROOT,
                        env=env or rank_env(),
                        stdin=subprocess.DEVNULL,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        while True:
            codes = [p.poll() for p in processes]
            failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:  # the others would wait for it in their next collective: stop them
                rank = failed[0]
                raise MaaslabError(
                    f"rank {rank} failed (exit code {codes[rank]}): {_last_line(outputs[rank])}"
                )
            if all(code == 0 for code in codes):
                return
            if time.monotonic() >= deadline:
                raise MaaslabError(
                    f"the {world_size} rank(s) did not finish within {timeout:g} s: "
                    "stopped them all (a rank is stuck, or the work is larger than this "
                    "deadline allows)"
                )
            time.sleep(POLL_S)
    finally:
        for process in processes:
            _kill(process)


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
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(process)
        process.communicate()
        raise MaaslabError(
            f"{name} did not finish within {timeout:g} s: stopped it and its ranks (a rank is "
            "stuck, or the work is larger than this deadline allows)"
        ) from None
    except BaseException:
        _kill(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
