"""Data-parallel training in each rank: DistributedSampler, DDP, rank-0 checkpoints, timing.

`python -m maaslab.distributed` (under torchrun) calls `train_ddp` in every rank inside
`process_group()`. `reference_train` takes the same optimizer steps in one process, on the same
global batches, so a test can compare the two. Every step, in a rank and in the reference, is
`maaslab.train.train_step` with train's optimizer and loss; only the loop around it is DDP's
own, because a rank draws its batches through a DistributedSampler instead of train's loaders.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

from maaslab.data import Dataset, load_dataset, make_loaders, split_loader, to_tensors
from maaslab.distributed.collective import global_batches, steps_per_epoch
from maaslab.errors import MaaslabError
from maaslab.models import build_model
from maaslab.registry import save_model, state_to_safetensors, write_json
from maaslab.runtime import torch_threads
from maaslab.train import (
    TrainConfig,
    cpu_threads,
    evaluate,
    make_optimizer,
    task_loss,
    train_step,
)

MODELS = ("mlp", "cnn")
BACKENDS = ("gloo", "nccl")
RUN_FILE = "run.json"
MODEL_DIR = "model"
GRADIENTS_FILE = "gradients.safetensors"
LOG_FILE = "rank0.log"  # what rank 0 printed (written by the launchers of launch.py)
TIMING_REPEATS = 10  # timed repeats of compute-only and all-reduce-only, after training


@dataclass(frozen=True)
class DDPConfig:
    """One data-parallel run; every field is also a flag of `python -m maaslab.distributed`."""

    dataset: str = "digits"  # a maaslab.data dataset (digits: 1,077 training images)
    n_samples: int = 400  # points of a 2-D toy set (ignored by digits and the sklearn sets)
    model: str = "mlp"  # "mlp", or "cnn" for digits
    hidden: tuple[int, ...] = (64,)  # MLP hidden widths (a CNN uses its default shape)
    epochs: int = 2  # passes over the training split
    batch_size: int = 32  # examples per rank per step: the global batch is batch_size x ranks
    optimizer: str = "sgd"  # one of maaslab.train.OPTIMIZERS
    lr: float = 0.1  # learning rate (not scaled by the number of ranks: see scaled_lr)
    seed: int = 0  # data split, initial weights and DistributedSampler's shuffling
    max_steps: int = 0  # stop after this many optimizer steps (0 = run every epoch)
    output: str = ""  # folder for model/, run.json (and gradients); "" saves nothing
    record_gradients: bool = False  # save the first step's all-reduced gradients in output
    backend: str = ""  # "gloo" or "nccl"; "" picks nccl with CUDA, gloo without
    threads: int = 0  # CPU threads per rank (0 = leave torch's choice: 1 under torchrun)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.model not in MODELS:
            raise MaaslabError(f"unknown model {self.model!r}: choose one of {', '.join(MODELS)}")
        if self.model == "cnn" and self.dataset != "digits":
            raise MaaslabError("the cnn needs images: use --dataset digits, or --model mlp")
        if self.backend not in ("", *BACKENDS):
            raise MaaslabError(f"unknown backend {self.backend!r}: choose gloo or nccl")
        if self.max_steps < 0 or self.threads < 0:
            raise MaaslabError("max_steps and threads must be 0 or more")
        self.train_config()  # optimizer, lr, epochs and batch size are checked there

    def train_config(self) -> TrainConfig:
        """The maaslab.train settings this run shares with single-process training."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            seed=self.seed,
        )


@dataclass
class DDPRun:
    """What one run measured (rank 0 writes it to output/run.json)."""

    world_size: int
    backend: str
    device: str
    threads: int  # CPU threads per rank
    global_batch: int  # batch_size x world_size
    n_params: int
    steps: int = 0  # optimizer steps taken
    dropped_per_epoch: int = 0  # training examples no rank sees in an epoch (uneven tail)
    step_loss: list[float] = field(default_factory=list)  # mean over ranks, one per step
    steps_per_second: float = 0.0  # after the first steps (warm-up excluded)
    compute_ms: float = 0.0  # median forward + backward of one rank's batch, no communication
    allreduce_ms: float = 0.0  # median all-reduce of a gradient-sized float32 buffer
    test_loss: float = 0.0  # the test split, read once after the last step
    test_accuracy: float | None = None
    seconds: float = 0.0  # wall time of the training loop

    @property
    def examples_per_second(self) -> float:
        """Training examples processed per second, all ranks together."""
        return self.steps_per_second * self.global_batch


def build(cfg: DDPConfig) -> tuple[Dataset, nn.Module]:
    """The dataset and freshly initialised model of a run (the same in every rank and in the
    single-process reference: both are built from cfg.seed)."""
    data = load_dataset(cfg.dataset, n_samples=cfg.n_samples, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.model == "cnn":
        return data, build_model("cnn", out_features=data.out_features)
    return data, build_model(
        "mlp", in_features=data.n_features, hidden=cfg.hidden, out_features=data.out_features
    )


def check_fits(n_train: int, cfg: DDPConfig, world_size: int) -> int:
    """Steps per epoch; a training split too small for one global batch raises MaaslabError."""
    steps = steps_per_epoch(n_train, world_size, cfg.batch_size)
    if steps == 0:
        raise MaaslabError(
            f"the training split has {n_train} examples, fewer than one global batch of "
            f"{world_size} ranks x {cfg.batch_size} = {world_size * cfg.batch_size}: "
            "lower --batch-size or --nproc_per_node"
        )
    return steps


def pick_backend(requested: str = "") -> str:
    """nccl with CUDA, gloo without (or the one asked for, if this machine can run it)."""
    backend = requested or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl" and not torch.cuda.is_available():
        raise MaaslabError("nccl needs CUDA GPUs and none is visible: use --backend gloo")
    return backend


@contextlib.contextmanager
def process_group(
    backend: str = "", *, init_method: str = "", rank: int = 0, world_size: int = 1
) -> Iterator[tuple[int, int]]:
    """Join a process group; yield (rank, world_size). Always destroyed at the end, also when
    training fails.

    Parameters
    ----------
    backend : "gloo", "nccl" or "" (pick_backend decides).
    init_method : where the ranks meet, e.g. "file:///tmp/x/store", with `rank` and
        `world_size`; "" joins the group torchrun describes in the environment, or, started
        without torchrun (no RANK), runs as a group of one through a file store, so the same
        script also runs as a plain single process.
    """
    backend = pick_backend(backend)
    if init_method:
        dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size)
        store = None
    elif "RANK" in os.environ:  # torchrun set RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
        dist.init_process_group(backend)
        store = None
    else:
        store = Path(os.environ.get("TMPDIR", "/tmp")) / f"maaslab-ddp-{os.getpid()}"
        store.unlink(missing_ok=True)
        dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    try:
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        yield dist.get_rank(), dist.get_world_size()
    finally:
        # A DDP wrapper still alive when its group is destroyed (held by a reference cycle,
        # or a local of the caller) makes the rank abort at interpreter exit, after its work
        # is done ("terminate called without an active exception"): 14 of 40 two-rank jobs
        # here, 0 of 40 once the wrappers were freed first. The body's locals are gone by now;
        # collecting frees what only a cycle still holds.
        gc.collect()
        dist.destroy_process_group()
        if store is not None:
            store.unlink(missing_ok=True)


def _loader(data: Dataset, cfg: DDPConfig, rank: int, world: int, device: torch.device):
    train_set = TensorDataset(*to_tensors(data.X_train, data.y_train, device))
    # drop_last=True: every rank gets the same number of examples, every step the same global
    # batch size, so the averaged gradient is exactly the gradient of the global batch.
    sampler = DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    batches = BatchSampler(sampler, cfg.batch_size, drop_last=True)
    return sampler, DataLoader(train_set, sampler=batches, batch_size=None)


def _median_ms(fn: Callable[[], object], repeats: int = TIMING_REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def train_ddp(cfg: DDPConfig, log: Callable[[str], None] = lambda _: None) -> DDPRun:
    """Train with DDP in this rank of an initialised process group; rank 0 saves the outputs.

    Parameters
    ----------
    cfg : the run; every rank must get the same one.
    log : called with progress lines; the caller passes print on rank 0 only.
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    backend = dist.get_backend()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if backend == "nccl" else "cpu")
    data, model = build(cfg)
    per_epoch = check_fits(len(data.y_train), cfg, world)
    model.to(device).train()
    ddp = DistributedDataParallel(
        model, device_ids=[device.index] if device.index is not None else None
    )
    sampler, loader = _loader(data, cfg, rank, world, device)
    _, val_loader = make_loaders(data, cfg.batch_size, device=device)
    optimizer = make_optimizer(ddp, cfg.train_config())
    run = DDPRun(
        world_size=world,
        backend=backend,
        device=str(device),
        threads=torch.get_num_threads(),
        global_batch=cfg.batch_size * world,
        n_params=sum(p.numel() for p in model.parameters()),
        dropped_per_epoch=len(data.y_train) - per_epoch * cfg.batch_size * world,
    )
    total = min(cfg.epochs * per_epoch, cfg.max_steps or cfg.epochs * per_epoch)
    warmup = min(3, total // 4)  # first steps pay one-off costs (allocations, DDP buckets)
    log(
        f"{world} rank(s), backend {backend}, {device}, {run.threads} thread(s) each; "
        f"global batch {run.global_batch}, {per_epoch} steps per epoch, "
        f"{run.dropped_per_epoch} example(s) per epoch left out (uneven tail)"
    )
    out = Path(cfg.output) if cfg.output else None
    losses: list[float] = []

    def record_first_step() -> None:
        # after backward, so these are the all-reduced gradients every rank applies
        if run.steps == 0 and out is not None:
            first = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
            out.mkdir(parents=True, exist_ok=True)
            state_to_safetensors(first, out / GRADIENTS_FILE)

    hook = record_first_step if cfg.record_gradients and rank == 0 else None
    timed, started = 0.0, time.perf_counter()
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same one on every rank
        for xb, yb in loader:
            step_start = time.perf_counter()
            # DDP all-reduces the gradients bucket by bucket during the step's backward
            loss, _ = train_step(ddp, optimizer, xb, yb, data.task, before_update=hook)
            losses.append(loss.item())
            if device.type == "cuda":
                torch.cuda.synchronize()
            run.steps += 1
            if run.steps > warmup:
                timed += time.perf_counter() - step_start
            if run.steps == total:
                break
        val_loss, val_accuracy = evaluate(model, val_loader, data.task)
        log(
            f"epoch {epoch + 1}: step {run.steps}, loss {losses[-1]:.4f} (rank 0), "
            f"validation loss {val_loss:.4f}"
            + (f", validation accuracy {val_accuracy:.3f}" if val_accuracy is not None else "")
        )
        _checkpoint(model, out, cfg, rank)
        if run.steps == total:
            break
    run.seconds = time.perf_counter() - started
    # the test split, read once, after the last step
    test_loader = split_loader(data, "test", max(cfg.batch_size, 256), device=device)
    run.test_loss, run.test_accuracy = evaluate(model, test_loader, data.task)
    log(
        f"test split, read once: loss {run.test_loss:.4f}"
        + (f", accuracy {run.test_accuracy:.3f}" if run.test_accuracy is not None else "")
    )
    run.steps_per_second = (run.steps - warmup) / timed if timed else 0.0
    run.step_loss = _mean_over_ranks(losses, world)
    _time_parts(run, ddp, loader, data.task, device)
    if rank == 0 and out is not None:
        write_json(out / RUN_FILE, {**asdict(run), "config": asdict(cfg)})
    dist.barrier()
    log(
        f"{run.steps} steps, {run.steps_per_second:.1f} steps/s "
        f"({run.examples_per_second:.0f} examples/s); compute {run.compute_ms:.2f} ms, "
        f"all-reduce {run.allreduce_ms:.2f} ms"
    )
    return run


def _checkpoint(model: nn.Module, out: Path | None, cfg: DDPConfig, rank: int) -> None:
    # Every rank holds the same weights, so one writer is enough; the others wait at the
    # barrier, so nobody reads (or starts the next epoch's save over) a half-written folder.
    if rank == 0 and out is not None:
        meta = {"dataset": cfg.dataset, "ddp_config": asdict(cfg)}
        save_model(model, out / MODEL_DIR, metadata=meta, overwrite=True)
    dist.barrier()


def _mean_over_ranks(losses: list[float], world: int) -> list[float]:
    # One gather after training instead of one all-reduce per step: logging must not add
    # communication to the steps being timed.
    gathered: list[list[float] | None] = [None] * world
    dist.all_gather_object(gathered, losses)
    return [sum(step) / world for step in zip(*gathered, strict=True)]


def _time_parts(run: DDPRun, ddp, loader, task: str, device: torch.device) -> None:
    # A step is compute (forward + backward) plus communication (the gradient all-reduce);
    # timing each alone shows which one dominates. no_sync() skips DDP's all-reduce.
    xb, yb = next(iter(loader))

    def compute() -> None:
        with ddp.no_sync():
            task_loss(ddp(xb), yb, task).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    buffer = torch.zeros(run.n_params, device=device)

    def allreduce() -> None:
        dist.all_reduce(buffer)
        if device.type == "cuda":
            torch.cuda.synchronize()

    dist.barrier()
    run.compute_ms = _median_ms(compute)
    dist.barrier()
    run.allreduce_ms = _median_ms(allreduce) if run.world_size > 1 else 0.0
    ddp.zero_grad(set_to_none=True)


def reference_train(cfg: DDPConfig, world_size: int) -> tuple[nn.Module, dict, list[float]]:
    """One process taking the optimizer steps a `world_size`-rank DDP run takes.

    Each step uses the global batch: every rank's shard of that step, concatenated
    (collective.global_batches). Returns (model, first step's gradients, loss per step).
    """
    data, model = build(cfg)
    check_fits(len(data.y_train), cfg, world_size)
    # as maaslab.train: small models on one thread (a second one mostly waits when cores are busy)
    with torch_threads(cpu_threads(model, cfg.train_config())):
        return _reference_steps(cfg, world_size, data, model)


def _reference_steps(cfg: DDPConfig, world_size: int, data: Dataset, model: nn.Module):
    per_epoch = steps_per_epoch(len(data.y_train), world_size, cfg.batch_size)
    total = min(cfg.epochs * per_epoch, cfg.max_steps or cfg.epochs * per_epoch)
    X, y = to_tensors(data.X_train, data.y_train)
    optimizer = make_optimizer(model, cfg.train_config())
    model.train()
    first: dict[str, torch.Tensor] = {}
    losses: list[float] = []

    def record_first_step() -> None:
        if not first:
            first.update({n: p.grad.clone() for n, p in model.named_parameters()})

    for epoch in range(cfg.epochs):
        for rows in global_batches(len(y), world_size, cfg.batch_size, seed=cfg.seed, epoch=epoch):
            loss, _ = train_step(
                model, optimizer, X[rows], y[rows], data.task, before_update=record_first_step
            )
            losses.append(loss.item())
            if len(losses) == total:
                return model.eval(), first, losses
    return model.eval(), first, losses
