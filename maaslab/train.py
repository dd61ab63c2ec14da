"""THE training loop: `train(model, data, cfg, callbacks)` -> History.

Notebooks, the Training Studio, the CLI and the compression recipes call this one function.
It records per-step loss, per-epoch train/validation loss and accuracy, per-layer gradient
norms and wall time; callbacks watch it and may stop it; with a checkpoint folder it saves after
every epoch and can resume from there, continuing exactly where it stopped (weights, optimizer,
random streams). Every optimizer step it takes is `train_step`, which the data-parallel ranks of
maaslab.distributed call too (they need a DistributedSampler instead of train's loaders).

The loop never reads the test split: what it measures between epochs, and what early stopping
and any choice between runs look at, is the validation split. The test split is read once, when
every choice is made, with `evaluate_split(model, data, "test")`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from maaslab.callbacks import Callback, TrainState
from maaslab.data import Dataset, make_loaders, split_loader
from maaslab.device import get_device
from maaslab.errors import MaaslabError
from maaslab.models import model_config
from maaslab.registry import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    atomic_folder,
    read_config,
    read_safetensors,
    state_to_safetensors,
    write_json,
    write_model_files,
)
from maaslab.runtime import torch_threads

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
SCHEDULES = ("constant", "warmup_linear")
WARMUP_FRACTION = 0.1
SMALL_MODEL = 1_000_000  # parameters; see TrainConfig.cpu_threads
STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
# A custom training loss: (model outputs, input batch, label batch) -> scalar tensor.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# What a run steps with, replaced before its first step: (model, optimizer, training loader) ->
# (module to step, optimizer, training loader). Opacus's PrivacyEngine.make_private has this
# shape: per-example gradients, clipping and noise, Poisson-sampled batches (federated.privacy).
Prepare = Callable[
    [nn.Module, torch.optim.Optimizer, DataLoader],
    tuple[nn.Module, torch.optim.Optimizer, DataLoader],
]


@dataclass(frozen=True)
class TrainConfig:
    """How to train; stored in every checkpoint."""

    epochs: int = 20  # passes over the training split (resume counts the ones already done)
    batch_size: int = 32  # examples per optimizer step
    optimizer: str = "adam"  # one of OPTIMIZERS; "momentum" is SGD with `momentum`
    lr: float = 0.01  # learning rate
    momentum: float = 0.9  # used by "momentum" and "rmsprop"
    weight_decay: float = 0.0  # L2 penalty added by the optimizer
    seed: int = 0  # seeds initial shuffling and dropout; the model is built by the caller
    device: str | None = None  # None -> maaslab.device.get_device() (MAASLAB_DEVICE honoured)
    checkpoint_dir: str | None = None  # save a checkpoint here after epochs; None = no saving
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch is always saved)
    resume: bool = False  # continue from the checkpoint in checkpoint_dir (it must hold one)
    grad_norm_samples: int = 4  # steps per epoch whose per-layer gradient norms are read (0 = off)
    # CPU threads torch may use while training; None: 1 for models under SMALL_MODEL parameters
    # (they gain little from a second thread and slow down up to 10x when the cores are busy).
    cpu_threads: int | None = None
    # Learning rate over the run: "constant", or "warmup_linear" (rises from 0 over the first
    # WARMUP_FRACTION of all steps, then falls linearly to 0 at the last: the usual schedule for
    # fine-tuning a pretrained transformer, as in transformers' get_linear_schedule_with_warmup).
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise MaaslabError(
                f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}"
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise MaaslabError("epochs and batch_size must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise MaaslabError(f"learning rate must be a positive number, got {self.lr}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise MaaslabError(f"cpu_threads must be at least 1, got {self.cpu_threads}")
        if self.schedule not in SCHEDULES:
            raise MaaslabError(
                f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}"
            )
        if self.resume and not self.checkpoint_dir:
            raise MaaslabError("resume needs a checkpoint_dir to resume from")


@dataclass
class EpochRecord:
    """Metrics of one finished epoch."""

    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's steps (the weights changed while it was measured)
    val_loss: float  # validation split, after the epoch
    train_accuracy: float | None  # None for regression
    val_accuracy: float | None
    grad_norms: dict[str, float]  # layer -> mean gradient L2 norm over the sampled steps
    seconds: float  # wall time of the epoch, evaluation included

    @property
    def test_loss(self) -> float:
        """Not recorded: the loop never reads the test split (see val_loss, evaluate_split)."""
        raise MaaslabError(_NO_TEST)

    @property
    def test_accuracy(self) -> float:
        """Not recorded: the loop never reads the test split (see val_accuracy, evaluate_split)."""
        raise MaaslabError(_NO_TEST)


_NO_TEST = (
    "a training run records the validation split after every epoch (val_loss, val_accuracy), "
    "never the test split: read the test split once, when training and every choice are done, "
    'with maaslab.train.evaluate_split(model, data, "test")'
)


@dataclass
class History:
    """Everything a training run recorded; JSON round-trips through to_dict / from_dict."""

    task: str = "classification"
    step_loss: list[float] = field(default_factory=list)  # one entry per optimizer step
    epochs: list[EpochRecord] = field(default_factory=list)
    steps_per_epoch: int = 0  # optimizer steps in one full epoch (to place steps on an epoch axis)
    wall_time: float = 0.0  # seconds spent in train(), summed over resumed runs
    stopped_early: bool = False  # a callback stopped it before cfg.epochs

    @property
    def last(self) -> EpochRecord | None:
        """The most recent finished epoch, or None."""
        return self.epochs[-1] if self.epochs else None

    def column(self, name: str) -> list[Any]:
        """One metric across epochs, e.g. history.column("val_loss")."""
        return [getattr(e, name) for e in self.epochs]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """Inverse of to_dict."""
        names = {f.name for f in fields(cls)}
        if any("test_loss" in e for e in d.get("epochs", [])):
            raise MaaslabError(
                "this history was recorded before training measured a validation split (its "
                "epochs hold test figures); start a new run instead of resuming it"
            )
        h = cls(**{k: v for k, v in d.items() if k in names and k != "epochs"})
        h.epochs = [EpochRecord(**e) for e in d.get("epochs", [])]
        return h


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The torch optimizer named by cfg.optimizer."""
    params, wd = model.parameters(), cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=wd)
    if cfg.optimizer == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=wd)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=0.0, weight_decay=wd)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=wd)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=wd)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step `step` (0-based) of `total_steps`."""
    if schedule == "constant":
        return 1.0
    warmup = max(1, round(WARMUP_FRACTION * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def layer_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters grouped by the module that owns them ("hidden1": [weight, bias], ...)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(name.rsplit(".", 1)[0].removeprefix("layers."), []).append(p)
    return groups


def task_loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """The task's standard loss, a mean over the batch: MSE for regression, else cross-entropy.

    A language model predicts every position: logits (B, T, V) and targets (B, T) become
    (B*T, V) and (B*T,), so its loss is the mean over all predicted tokens.
    """
    if task == "language_model":
        return F.cross_entropy(out.flatten(0, 1), y.flatten())
    if task == "regression":
        return F.mse_loss(out, y.view_as(out))
    return F.cross_entropy(out, y)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    task: str,
    *,
    loss: LossFn | None = None,
    before_update: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch: forward, loss, backward, update; returns (loss, outputs).

    Parameters
    ----------
    model : the model (or its DistributedDataParallel wrapper, which all-reduces in backward).
    task : picks the standard loss (task_loss) when `loss` is None.
    loss : a custom training loss `loss(outputs, inputs, labels)` -> scalar.
    before_update : called after backward, before the update: the gradients are there to read
        (gradient norms, a recorded first step) and the learning rate can still be set.
    """
    out = model(xb)
    value = task_loss(out, yb, task) if loss is None else loss(out, xb, yb)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    if before_update is not None:
        before_update()
    optimizer.step()
    return value, out


def _accuracy(predicted: list[torch.Tensor], labels: list[torch.Tensor]) -> float:
    # One comparison per epoch instead of one per step; classification logits are argmax'd here.
    pred = torch.cat(predicted)
    pred = pred.argmax(1) if pred.is_floating_point() else pred
    return (pred == torch.cat(labels)).float().mean().item()


def _layer_norms(samples: list[torch.Tensor], layer_of: torch.Tensor, n_layers: int) -> list:
    # samples: per sampled step, the L2 norm of every parameter's gradient. A layer's norm is
    # the root of its parameters' summed squares; the epoch's value is the mean over samples.
    squares = torch.stack(samples).square()  # (S, P)
    per_layer = torch.zeros(len(samples), n_layers, device=squares.device)
    per_layer.index_add_(1, layer_of, squares)
    return per_layer.sqrt().mean(0).tolist()


@torch.no_grad()
def evaluate(model: nn.Module, loader, task: str) -> tuple[float, float | None]:
    """Mean loss and accuracy (None for regression) of `model` over a loader, in eval mode.

    For a language model both are per token: next-token cross-entropy and next-token accuracy.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, count, predictions = 0.0, 0, 0, 0
    for xb, yb in loader:
        out = model(xb)
        total_loss += task_loss(out, yb, task).item() * len(yb)
        if task != "regression":
            correct += (out.argmax(-1) == yb).sum().item()
            predictions += yb.numel()  # one per example, or one per position for a language model
        count += len(yb)
    model.train(was_training)
    if count == 0:  # an empty split (a dataset loaded with val_fraction=0) has no figures
        return math.nan, (math.nan if task != "regression" else None)
    return total_loss / count, (correct / max(predictions, 1) if task != "regression" else None)


# --- checkpoints -------------------------------------------------------------------------------


def save_checkpoint(
    folder: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    history: History,
    cfg: TrainConfig,
    generator: torch.Generator,
) -> None:
    """Write a resumable checkpoint folder (a model folder plus optimizer, RNG and history)."""
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, slots in opt_state["state"].items():
        for key, value in slots.items():
            target = tensors if isinstance(value, torch.Tensor) else scalars
            target[f"{idx}.{key}"] = value
    with atomic_folder(folder, overwrite=True) as staging:
        write_model_files(model, {**model_config(model), "metadata": {}}, staging)
        state_to_safetensors(tensors or {"_empty": torch.zeros(0)}, staging / OPTIM_FILE)
        state_to_safetensors(
            {"torch": torch.get_rng_state(), "loader": generator.get_state()}, staging / RNG_FILE
        )
        write_json(
            staging / STATE_FILE,
            {
                "epoch": len(history.epochs),
                "train_config": asdict(cfg),
                "optimizer_scalars": scalars,
                "param_groups": opt_state["param_groups"],
                "history": history.to_dict(),
            },
        )


def load_checkpoint(
    folder: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    generator: torch.Generator,
) -> History:
    """Restore model, optimizer and random streams from `folder`; return the saved History."""
    folder = Path(folder)
    saved = read_config(folder)
    if saved.get("model_type") != model_config(model)["model_type"] or saved.get(
        "config"
    ) != json.loads(json.dumps(model_config(model)["config"])):
        raise MaaslabError(f"checkpoint in {folder} was made for a different model: {saved}")
    try:
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError) as err:
        raise MaaslabError(f"{folder} is not a training checkpoint ({STATE_FILE}: {err})") from None
    if state["train_config"]["optimizer"] != cfg.optimizer:
        raise MaaslabError(
            f"checkpoint used optimizer {state['train_config']['optimizer']!r}, "
            f"not {cfg.optimizer!r}; resume with the same optimizer"
        )
    model.load_state_dict(read_safetensors(folder / WEIGHTS_FILE))
    slots: dict[int, dict[str, Any]] = {}
    flat = {**read_safetensors(folder / OPTIM_FILE), **state["optimizer_scalars"]}
    for key, value in flat.items():
        if key == "_empty":
            continue
        idx, name = key.split(".", 1)
        slots.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state["param_groups"]})
    rng = read_safetensors(folder / RNG_FILE)
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["loader"])
    return History.from_dict(state["history"])


def has_checkpoint(folder: str | Path | None) -> bool:
    """True if `folder` holds a trainer checkpoint."""
    return (
        bool(folder)
        and (Path(folder) / STATE_FILE).is_file()
        and (Path(folder) / CONFIG_FILE).is_file()
    )


# --- the loop ------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig = TrainConfig(),
    callbacks: Sequence[Callback] = (),
    loss: LossFn | None = None,
    prepare: Prepare | None = None,
) -> History:
    """Train `model` on `data` with `cfg`; return the History (also when a callback stops it).

    Parameters
    ----------
    model : any nn.Module mapping a batch of `data` inputs to logits (or regression outputs);
        for a language model, (B, T) token ids to (B, T, vocab) next-token logits.
    data : a Dataset from maaslab.data.load_dataset (or maaslab.textdata.load_text_dataset).
    cfg : optimizer, epochs, batch size, seed, device, checkpointing.
    callbacks : objects with on_train_begin / on_step_end / on_epoch_end / on_train_end; any of
        them may set `state.stop = True` to end training after the current step.
    loss : the training loss as `loss(outputs, inputs, labels)` -> scalar (e.g. a distillation
        loss that also asks a teacher about `inputs`); None: cross-entropy, or MSE for
        regression. Validation loss and accuracy are always the task's standard ones.
    prepare : replaces what the steps use before the first one: `prepare(model, optimizer,
        train_loader)` -> (module, optimizer, train_loader), e.g. differentially private
        training (maaslab.federated.privacy). The steps run `module`, which must share `model`'s
        parameters; validation, callbacks and the History see `model`. A prepared loader may
        yield empty batches (Poisson sampling): they take their step (the noise still moves the
        weights) and add nothing to the epoch's mean loss. Not with checkpoints: what a
        prepared optimizer keeps (an accountant's ledger) is not saved.
    """
    if prepare is not None and cfg.checkpoint_dir:
        raise MaaslabError(
            "a run with `prepare` (e.g. differentially private training) does not checkpoint: "
            "leave checkpoint_dir unset"
        )
    device = get_device(cfg.device)
    threads = cpu_threads(model, cfg) if device.type == "cpu" else None
    with torch_threads(threads):
        return _train(model, data, cfg, callbacks, device, loss, prepare)


def cpu_threads(model: nn.Module, cfg: TrainConfig) -> int:
    """How many CPU threads training `model` uses (TrainConfig.cpu_threads, or the default)."""
    if cfg.cpu_threads is not None:
        return cfg.cpu_threads
    size = sum(p.numel() for p in model.parameters())
    return 1 if size < SMALL_MODEL else torch.get_num_threads()


def _train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    callbacks: Sequence[Callback],
    device: torch.device,
    custom_loss: LossFn | None = None,
    prepare: Prepare | None = None,
) -> History:
    model.to(device).train()
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_loader, val_loader = make_loaders(
        data, cfg.batch_size, device=device, generator=generator
    )
    optimizer = make_optimizer(model, cfg)
    history = History(task=data.task)
    if cfg.resume:
        if not has_checkpoint(cfg.checkpoint_dir):
            raise MaaslabError(f"no training checkpoint to resume from in {cfg.checkpoint_dir}")
        history = load_checkpoint(cfg.checkpoint_dir, model, optimizer, cfg, generator)
        history.stopped_early = False
    step_model = model  # what train_step runs: the model, or what `prepare` wrapped it in
    if prepare is not None:
        step_model, optimizer, train_loader = prepare(model, optimizer, train_loader)
    history.steps_per_epoch = len(train_loader)
    groups = layer_groups(model)
    layer_names = list(groups)
    grad_params = [p for params in groups.values() for p in params]
    # layer index of each parameter, to sum squared norms per layer in one index_add_
    layer_of = torch.tensor([i for i, ps in enumerate(groups.values()) for _ in ps], device=device)
    classify = data.task != "regression"  # classification and language_model have accuracy
    language_model = data.task == "language_model"
    # Gradient norms cost a few kernel launches; reading them on a fixed number of evenly spaced
    # steps per epoch keeps that cost bounded, however many steps an epoch has.
    norm_every = (
        max(1, history.steps_per_epoch // cfg.grad_norm_samples) if cfg.grad_norm_samples else 0
    )
    total_steps = cfg.epochs * history.steps_per_epoch
    state = TrainState(model=model, history=history, total_epochs=cfg.epochs, config=cfg)
    state.epoch = len(history.epochs)
    state.step = len(history.step_loss)
    started = time.perf_counter()
    for cb in callbacks:
        cb.on_train_begin(state)
    # Called after every step: skip callbacks that keep the base class's empty hook.
    step_callbacks = [cb for cb in callbacks if type(cb).on_step_end is not Callback.on_step_end]
    norm_samples: list[torch.Tensor] = []  # per sampled step of an epoch: each parameter's norm

    def before_update() -> None:
        # between backward and the update: this step's learning rate, a gradient-norm sample
        if cfg.schedule != "constant":
            factor = lr_factor(cfg.schedule, state.step, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * factor
        if norm_every and state.step % norm_every == 0:
            grads = [p.grad if p.grad is not None else p.new_zeros(1) for p in grad_params]
            norm_samples.append(torch.stack(torch._foreach_norm(grads)))

    hook = before_update if cfg.schedule != "constant" or norm_every else None
    while state.epoch < cfg.epochs and not state.stop:
        epoch_start = time.perf_counter()
        loss_sum, seen = 0.0, 0
        logits: list[torch.Tensor] = []  # kept per step; compared with labels once per epoch
        labels: list[torch.Tensor] = []
        norm_samples.clear()
        for xb, yb in train_loader:
            loss, out = train_step(
                step_model, optimizer, xb, yb, data.task, loss=custom_loss, before_update=hook
            )
            loss_value = loss.item()
            history.step_loss.append(loss_value)
            if len(yb):  # an empty Poisson batch's mean loss is NaN and weighs nothing
                loss_sum += loss_value * len(yb)
                seen += len(yb)
            if classify:
                # A language model's logits are (B, T, V): keeping a whole epoch of them would
                # take gigabytes, so its step keeps only the (B, T) predicted ids.
                logits.append(out.detach().argmax(-1) if language_model else out.detach())
                labels.append(yb)
            state.step += 1
            state.last_loss = loss_value
            for cb in step_callbacks:
                cb.on_step_end(state)
            if state.stop:
                break
        if state.stop and seen < len(data.y_train):
            break  # a partial epoch is not recorded as an epoch; its steps are in step_loss
        val_loss, val_acc = evaluate(model, val_loader, data.task)
        state.epoch += 1
        history.epochs.append(
            EpochRecord(
                epoch=state.epoch,
                train_loss=loss_sum / seen if seen else math.nan,
                val_loss=val_loss,
                train_accuracy=_accuracy(logits, labels) if classify else None,
                val_accuracy=val_acc,
                grad_norms=dict(
                    zip(
                        layer_names,
                        _layer_norms(norm_samples, layer_of, len(layer_names)),
                        strict=True,
                    )
                )
                if norm_samples
                else {},
                seconds=time.perf_counter() - epoch_start,
            )
        )
        for cb in callbacks:
            cb.on_epoch_end(state)
        last = state.epoch == cfg.epochs or state.stop
        if cfg.checkpoint_dir and (last or state.epoch % cfg.checkpoint_every == 0):
            history.wall_time += time.perf_counter() - started
            started = time.perf_counter()
            save_checkpoint(cfg.checkpoint_dir, model, optimizer, history, cfg, generator)

    history.wall_time += time.perf_counter() - started
    history.stopped_early = state.stop and state.epoch < cfg.epochs
    for cb in callbacks:
        cb.on_train_end(state)
    model.eval()
    return history


def evaluate_split(
    model: nn.Module, data: Dataset, split: str = "test", *, device: str | None = None
) -> tuple[float, float | None]:
    """Mean loss and accuracy (None for regression) of `model` on one split of `data`.

    Parameters
    ----------
    split : "test" (the default) is meant to be read once, for the trained and chosen model;
        "val" is what choices are made on; "train" shows how well the data was fitted.
    device : where to run; None -> the device the model's weights are on.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = str(first.device) if first is not None else "cpu"
    return evaluate(model, split_loader(data, split, device=device), data.task)


def run_metadata(
    data: Dataset, cfg: TrainConfig, history: History, model: nn.Module | None = None
) -> dict[str, Any]:
    """What a saved model folder records about its training run (dataset, config, metrics).

    The metrics are the last epoch's validation figures; given the trained `model`, its test
    loss and accuracy are measured here too (the one read of the test split a run makes).
    """
    last = history.last
    data_args = ("seed", "test_fraction", "val_fraction", "standardize", "n_samples", "noise")
    metrics: dict[str, Any] = {}
    if last:
        metrics.update(val_loss=last.val_loss, val_accuracy=last.val_accuracy)
    if model is not None:
        test_loss, test_accuracy = evaluate_split(model, data, "test")
        metrics.update(test_loss=test_loss, test_accuracy=test_accuracy)
    return {
        "dataset": data.name,
        "data_args": {k: data.meta[k] for k in data_args if k in data.meta},
        "task": data.task,
        "class_names": list(data.class_names),
        "feature_names": list(data.feature_names),
        "train_config": asdict(cfg),
        "epochs_trained": len(history.epochs),
        "metrics": metrics,
    }
