"""Gradient equivalence: one process on a global batch vs N ranks on its shards, averaged.

`global_gradient` and `shard_gradients` + `average_gradients` do it in one process;
`ddp_gradients` and `all_reduce_values` start real ranks (fresh processes, gloo) so the
lesson can compare the hand version with what torch.distributed and DDP compute.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from maaslab.distributed.ddp import LOG_FILE, DDPConfig, process_group, train_ddp
from maaslab.distributed.ranks import RANKS_TIMEOUT_S, start_ranks
from maaslab.errors import MaaslabError
from maaslab.models import build_model, model_config
from maaslab.registry import read_safetensors, state_to_safetensors, write_json
from maaslab.train import task_loss

Grads = dict[str, torch.Tensor]


def _grads(model: nn.Module) -> Grads:
    return {
        n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def global_gradient(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, task: str = "classification"
) -> Grads:
    """The gradient of the mean loss over the whole batch (X, y), computed in one process.

    Parameters
    ----------
    model : the model; its .grad fields are cleared before and after.
    X, y : one global batch.
    task : "classification", "regression" or "language_model" (picks the loss, as train does).
    """
    model.zero_grad(set_to_none=True)
    task_loss(model(X), y, task).backward()
    grads = _grads(model)
    model.zero_grad(set_to_none=True)
    return grads


def shard(n: int, world_size: int, rank: int) -> slice:
    """Rank `rank`'s rows of a global batch of `n`: every world_size-th, as DistributedSampler."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise MaaslabError(f"rank must be in [0, {world_size - 1}], got {rank}")
    if n % world_size:
        raise MaaslabError(
            f"a global batch of {n} examples cannot be split into {world_size} equal shards: "
            "DDP averages the ranks' mean gradients, which equals the gradient of the global "
            f"mean only when every rank holds the same number of examples; use a multiple of "
            f"{world_size}"
        )
    return slice(rank, n, world_size)


def shard_gradients(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    world_size: int,
    task: str = "classification",
) -> list[Grads]:
    """Each rank's local gradient (mean loss over its own shard), all computed in this process.

    Parameters
    ----------
    world_size : number of ranks; len(X) must be a multiple of it.
    """
    parts = [shard(len(X), world_size, r) for r in range(world_size)]
    return [global_gradient(model, X[s], y[s], task) for s in parts]


def max_relative_difference(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Largest |a - b| over all parameters, relative to the largest |b| (0 when identical)."""
    if sorted(a) != sorted(b):
        raise MaaslabError(f"the two gradient tables name different parameters: {list(a)}")
    diff = max(float((a[n].double() - b[n].double()).abs().max()) for n in a)
    scale = max(float(b[n].double().abs().max()) for n in b)
    return diff / scale if scale else diff


# --- real ranks on this machine ----------------------------------------------------------------

JOB_FILE = "job.json"  # what every rank of a run_ranks job does
INPUTS_FILE = "inputs.safetensors"  # the tensors every rank reads


def rank_main(folder: str | Path, rank: int) -> None:
    """One rank of a `run_ranks` job: join through a file in `folder`, work, write its result.

    `python -m maaslab.distributed.worker FOLDER RANK` calls this in a fresh interpreter.
    """
    folder = Path(folder)
    spec = json.loads((folder / JOB_FILE).read_text(encoding="utf-8"))
    torch.set_num_threads(1)  # the ranks share the machine's cores
    # A file store needs no port, so nothing can collide with another run on this machine.
    store = f"file://{folder}/store"
    with process_group("gloo", init_method=store, rank=rank, world_size=spec["world_size"]):
        _rank_job(folder, rank, spec["job"], spec["world_size"], spec["info"])


def _rank_job(folder: Path, rank: int, job: str, world_size: int, info: dict[str, Any]) -> None:
    inputs = folder / INPUTS_FILE
    tensors = read_safetensors(inputs) if inputs.is_file() else {}
    if job == "train":  # a whole DDP run (launch.run_spawned); rank 0 saves its record
        cfg = DDPConfig(**info["cfg"])
        lines: list[str] = []
        train_ddp(cfg, log=lines.append if rank == 0 else lambda _: None)
        if rank == 0:
            text = "".join(f"{line}\n" for line in lines)
            (Path(cfg.output) / LOG_FILE).write_text(text, encoding="utf-8")
        return
    if job == "all_reduce":
        value = tensors[f"value{rank}"].clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        out = {"value": value}
    else:
        model = build_model(info["model_type"], **info["config"])
        state = {k.removeprefix("state."): v for k, v in tensors.items() if k[:6] == "state."}
        model.load_state_dict(state)
        ddp = DistributedDataParallel(model)
        rows = shard(len(tensors["X"]), world_size, rank)
        logits = ddp(tensors["X"][rows])
        task_loss(logits, tensors["y"][rows], info["task"]).backward()
        out = _grads(model)  # DDP has all-reduced (averaged) them during backward
    state_to_safetensors(out, folder / f"rank{rank}.safetensors")


def run_ranks(
    job: str,
    world_size: int,
    tensors: Mapping[str, torch.Tensor],
    info: dict[str, Any],
    timeout: float = RANKS_TIMEOUT_S,
) -> list[Grads]:
    """Run `job` ("gradients", "all_reduce" or "train") on `world_size` fresh rank processes.

    The job, its settings (`info`, JSON) and its inputs (`tensors`, safetensors) go to a
    temporary folder; each rank is `python -m maaslab.distributed.worker FOLDER RANK` (never a
    fork: see maaslab.distributed.ranks), the ranks join through a file store there, so they
    need no port, and each returns its table through a file.
    """
    with tempfile.TemporaryDirectory(prefix="maaslab-ddp-") as tmp:
        folder = Path(tmp)
        write_json(folder / JOB_FILE, {"job": job, "world_size": world_size, "info": info})
        if tensors:
            state_to_safetensors(dict(tensors), folder / INPUTS_FILE)
        worker = [sys.executable, "-m", "maaslab.distributed.worker", str(folder)]
        start_ranks(worker, world_size, folder, timeout=timeout)
        if job == "train":
            return []
        return [read_safetensors(folder / f"rank{r}.safetensors") for r in range(world_size)]


def ddp_gradients(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    world_size: int = 2,
    task: str = "classification",
) -> list[Grads]:
    """Every rank's gradient after one DDP backward pass, each rank holding its shard of (X, y).

    Starts `world_size` rank processes (gloo on CPU), each with a copy of `model`; DDP all-reduces
    the gradients during backward, so all returned tables should be equal to each other and to
    `global_gradient(model, X, y)`.

    Parameters
    ----------
    model : a MaaS Lab model (it is rebuilt in every rank from its config and weights).
    X, y : the global batch; len(X) must be a multiple of world_size.
    world_size : ranks to start (2 on this machine's 2 cores).
    """
    shard(len(X), world_size, 0)  # refuse uneven shards before starting any process
    state = {f"state.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
    tensors = {**state, "X": X.detach().cpu(), "y": y.detach().cpu()}
    return run_ranks("gradients", world_size, tensors, {**model_config(model), "task": task})


def all_reduce_values(values: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """What each rank holds after torch.distributed.all_reduce(SUM) of `values[rank]`.

    Parameters
    ----------
    values : one tensor per rank, all the same shape; len(values) is the world size.
    """
    if not values:
        raise MaaslabError("all_reduce_values needs one tensor per rank")
    tensors = [torch.as_tensor(v, dtype=torch.float32).detach().cpu() for v in values]
    if any(t.shape != tensors[0].shape for t in tensors):
        raise MaaslabError("every rank must hold a tensor of the same shape")
    table = {f"value{r}": t for r, t in enumerate(tensors)}
    return [out["value"] for out in run_ranks("all_reduce", len(tensors), table, {})]
