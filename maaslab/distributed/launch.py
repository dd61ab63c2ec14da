"""Start `torchrun -m maaslab.distributed` from Python, read its results, compare setups.

The notebook and the tests launch the real command line (a subprocess, like a terminal would),
so what they measure is what a learner gets by typing it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from maaslab.distributed.ddp import (
    LOG_FILE,
    RUN_FILE,
    DDPConfig,
    DDPRun,
    process_group,
    train_ddp,
)
from maaslab.distributed.gradients import run_ranks
from maaslab.distributed.ranks import RANKS_TIMEOUT_S, rank_env, run_command
from maaslab.errors import MaaslabError
from maaslab.paths import ROOT
from maaslab.runtime import torch_threads

LAUNCHERS = ("torchrun", "spawn")  # how measure_scaling starts the ranks of each setup


def cli_args(cfg: DDPConfig) -> list[str]:
    """The flags of `python -m maaslab.distributed` that reproduce `cfg` (defaults left out)."""
    default = DDPConfig()
    args: list[str] = []
    for f in fields(DDPConfig):
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag)
        elif isinstance(value, tuple):
            args += [flag, ",".join(str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return args


def torchrun_command(
    cfg: DDPConfig,
    nproc_per_node: int = 2,
    *,
    nnodes: int = 1,
    rdzv_endpoint: str = "",
    python: str = sys.executable,
) -> list[str]:
    """The torchrun command line for `cfg`, as a list (join with spaces to type it).

    Parameters
    ----------
    nproc_per_node : processes on this machine (one per GPU, or a few on a CPU).
    nnodes : machines taking part; above 1 every machine runs the same command and they meet
        at `rdzv_endpoint` (host:port of one of them), which assigns each its node rank.
    rdzv_endpoint : "" on one machine: --standalone picks a free local port by itself.
    """
    if nproc_per_node < 1 or nnodes < 1:
        raise MaaslabError("nproc_per_node and nnodes must be at least 1")
    cmd = [python, "-m", "torch.distributed.run"]
    if nnodes == 1 and not rdzv_endpoint:
        cmd.append("--standalone")
    else:
        if not rdzv_endpoint:
            raise MaaslabError("several nodes need --rdzv-endpoint host:port of one of them")
        cmd += [
            f"--nnodes={nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv_endpoint}",
            "--rdzv-id=maaslab-ddp",
        ]
    return [*cmd, f"--nproc_per_node={nproc_per_node}", "-m", "maaslab.distributed", *cli_args(cfg)]


def run_in_process(cfg: DDPConfig) -> DDPRun:
    """Run `cfg` in this process as a group of one: train_ddp without starting anything.

    The threads are restored afterwards. The steps equal those of `torchrun
    --nproc_per_node=1`, the timings do not: run this way (in a notebook kernel or a script)
    the same steps measured 1.5x to 7x slower than in a rank that torchrun started, so
    measure_scaling always launches fresh processes.
    """
    with torch_threads(cfg.threads or None), process_group(cfg.backend):
        return train_ddp(cfg)


def run_spawned(cfg: DDPConfig, nproc: int = 2, *, timeout: float = RANKS_TIMEOUT_S) -> DDPRun:
    """Run `cfg` on `nproc` ranks started from this process (gloo, joined through a file).

    What torchrun would run, minus torchrun itself: each rank is a fresh interpreter started
    from a command line (never a fork of this process, which may hold threads), and sets its
    own threads (cfg.threads, default 1). Ranks still running after `timeout` seconds are
    killed and MaaslabError says so.
    """
    if not cfg.output:
        raise MaaslabError("run_spawned needs cfg.output: the folder where rank 0 saves")
    run_ranks("train", nproc, {}, {"cfg": asdict(cfg)}, timeout=timeout)
    return load_run(cfg.output)


def load_run(folder: str | Path) -> DDPRun:
    """The DDPRun that rank 0 wrote to folder/run.json."""
    path = Path(folder) / RUN_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as err:
        raise MaaslabError(f"{path} is not the record of a finished run: {err}") from None
    names = {f.name for f in fields(DDPRun)}
    return DDPRun(**{k: v for k, v in saved.items() if k in names})


def run_torchrun(
    cfg: DDPConfig, nproc_per_node: int = 2, *, timeout: float = RANKS_TIMEOUT_S
) -> DDPRun:
    """Run `torchrun --nproc_per_node=N -m maaslab.distributed` and return rank 0's record.

    Parameters
    ----------
    cfg : the run; cfg.output must name a folder (it receives model/, run.json and
        rank0.log, what rank 0 printed).
    nproc_per_node : processes to start (2 here: one per core).
    timeout : seconds before torchrun and its ranks are killed and the run reported as stuck.
    """
    if not cfg.output:
        raise MaaslabError("run_torchrun needs cfg.output: the folder where rank 0 saves")
    # torchrun gives each process one OpenMP thread when it starts several; say it explicitly
    # so one process gets the same default, and let cfg.threads override it in the rank.
    env = rank_env(cfg.threads or 1)
    done = run_command(torchrun_command(cfg, nproc_per_node), cwd=ROOT, env=env, timeout=timeout)
    if done.returncode:
        errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
        tail = errors[0][len("error: ") :] if errors else "\n".join(done.stderr.splitlines()[-5:])
        raise MaaslabError(f"torchrun failed (exit code {done.returncode}): {tail}")
    (Path(cfg.output) / LOG_FILE).write_text(done.stdout, encoding="utf-8")
    return load_run(cfg.output)


@dataclass(frozen=True)
class ScalingRow:
    """One setup of measure_scaling: the same total work, split over `processes`."""

    processes: int
    threads_per_process: int
    global_batch: int
    steps_per_second: float
    examples_per_second: float
    compute_ms: float  # forward + backward of one process's share of a step
    allreduce_ms: float  # one all-reduce of the gradient (0 with one process)
    speedup: float  # steps_per_second relative to the first setup
    output: str  # the run's folder (model/, run.json), "" when it was not kept


def measure_scaling(
    cfg: DDPConfig,
    setups: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (2, 1)),
    global_batch: int = 64,
    keep: str = "",
    launcher: str = "torchrun",
) -> list[ScalingRow]:
    """Train the same steps of the same global batch with different (processes, threads) setups.

    Parameters
    ----------
    cfg : model, data and cfg.max_steps (the work); batch size, threads and output are set here.
    setups : (processes, CPU threads per process) pairs, each launched with torchrun.
    global_batch : examples per step, split evenly over the processes.
    keep : a folder to keep every run in (keep/<processes>x<threads>); "" discards them.
    launcher : "torchrun" (as in a terminal) or "spawn" (run_spawned: the same ranks started as
        fresh processes without torchrun's own start-up; the steps are timed the same way).
    """
    if launcher not in LAUNCHERS:
        raise MaaslabError(f"unknown launcher {launcher!r}: choose {' or '.join(LAUNCHERS)}")
    rows: list[ScalingRow] = []
    with tempfile.TemporaryDirectory(prefix="maaslab-scaling-") as tmp:
        for procs, threads in setups:
            if global_batch % procs:
                raise MaaslabError(f"global batch {global_batch} does not split over {procs}")
            folder = Path(keep or tmp) / f"{procs}x{threads}"
            run_cfg = replace(
                cfg, batch_size=global_batch // procs, threads=threads, output=str(folder)
            )
            start = run_spawned if launcher == "spawn" else run_torchrun
            run = start(run_cfg, procs)
            base = rows[0].steps_per_second if rows else run.steps_per_second
            rows.append(
                ScalingRow(
                    processes=procs,
                    threads_per_process=threads,
                    global_batch=global_batch,
                    steps_per_second=run.steps_per_second,
                    examples_per_second=run.examples_per_second,
                    compute_ms=run.compute_ms,
                    allreduce_ms=run.allreduce_ms,
                    speedup=run.steps_per_second / base if base else 0.0,
                    output=str(folder) if keep else "",
                )
            )
    return rows
