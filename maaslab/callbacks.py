"""Callbacks: how live views, progress bars and stop buttons watch the one training loop.

A callback never changes what is computed; it reads `TrainState` and may set `state.stop`.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from maaslab.errors import MaaslabError


@dataclass
class TrainState:
    """What the loop shares with callbacks while it runs."""

    model: nn.Module
    history: Any  # maaslab.train.History (typed loosely to avoid an import cycle)
    total_epochs: int
    config: Any  # maaslab.train.TrainConfig
    epoch: int = 0  # finished epochs
    step: int = 0  # optimizer steps taken
    last_loss: float = math.nan
    stop: bool = False  # set True to end training after the current step
    info: dict[str, Any] = field(default_factory=dict)  # free space for callbacks


class Callback:
    """Base class: override the hooks you need."""

    def on_train_begin(self, state: TrainState) -> None:
        """Called once before the first step (also when resuming)."""

    def on_step_end(self, state: TrainState) -> None:
        """Called after every optimizer step."""

    def on_epoch_end(self, state: TrainState) -> None:
        """Called after each epoch's evaluation, once history.epochs has the new record."""

    def on_train_end(self, state: TrainState) -> None:
        """Called once when training ends, finished or stopped."""


class StopOnEvent(Callback):
    """Stop when a threading.Event is set (a Stop button, a signal handler)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def on_step_end(self, state: TrainState) -> None:
        """Check the event after every step so Stop takes effect within one step."""
        if self.event.is_set():
            state.stop = True


class EarlyStopping(Callback):
    """Stop when the validation loss has not improved by `min_delta` for `patience` epochs.

    It watches the validation split, never the test split: stopping where the test loss is
    lowest would choose the epoch on the data meant to report the result, and the test figure
    would then flatter the model.
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best, self.bad_epochs = math.inf, 0

    def on_epoch_end(self, state: TrainState) -> None:
        """Compare this epoch's validation loss with the best so far."""
        loss = state.history.epochs[-1].val_loss
        if math.isnan(loss):
            raise MaaslabError(
                "early stopping needs a validation split, and this dataset's is empty: load it "
                "with val_fraction > 0 (the default)"
            )
        if loss < self.best - self.min_delta:
            self.best, self.bad_epochs = loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                state.stop = True
                state.info["early_stopping"] = f"no improvement for {self.patience} epochs"


class StopOnDivergence(Callback):
    """Stop a run whose loss becomes NaN/inf, or whose epoch loss explodes past `factor` x start.

    Cross-entropy rarely reaches NaN: with too large a learning rate the logits blow up and the
    loss jumps to hundreds, then wanders. Both are divergence, and both end the run with a note.
    """

    def __init__(self, factor: float = 10.0) -> None:
        self.factor = factor
        self.start_loss = math.nan

    def on_train_begin(self, state: TrainState) -> None:
        """Remember the first loss of this run (known after the first step)."""
        self.start_loss = state.history.step_loss[0] if state.history.step_loss else math.nan

    def on_step_end(self, state: TrainState) -> None:
        """Check the step's loss."""
        if math.isnan(self.start_loss):
            self.start_loss = state.last_loss
        if not math.isfinite(state.last_loss):
            state.stop = True
            state.info["diverged"] = f"the loss became {state.last_loss} at step {state.step}"

    def on_epoch_end(self, state: TrainState) -> None:
        """Compare the epoch's mean training loss with the run's first loss."""
        loss = state.history.epochs[-1].train_loss
        if self.start_loss > 0 and loss > self.factor * self.start_loss:
            state.stop = True
            state.info["diverged"] = (
                f"the training loss of epoch {state.epoch} was {loss:.4g}, "
                f"{loss / self.start_loss:.0f}x the loss it started from ({self.start_loss:.4g})"
            )


class TqdmProgress(Callback):
    """A tqdm bar over epochs with the latest losses (used by the CLI)."""

    def __init__(self, **tqdm_kwargs: Any) -> None:
        self.kwargs = tqdm_kwargs
        self.bar = None

    def on_train_begin(self, state: TrainState) -> None:
        """Open the bar at the epoch training starts from."""
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.total_epochs, initial=state.epoch, unit="epoch", **self.kwargs)

    def on_epoch_end(self, state: TrainState) -> None:
        """Advance one epoch and show its losses and accuracy."""
        rec = state.history.epochs[-1]
        shown = {"train_loss": f"{rec.train_loss:.4f}", "val_loss": f"{rec.val_loss:.4f}"}
        if rec.val_accuracy is not None:
            shown["val_acc"] = f"{rec.val_accuracy:.3f}"
        self.bar.set_postfix(shown)
        self.bar.update(1)

    def on_train_end(self, state: TrainState) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


class Throttle(Callback):
    """Make each epoch last at least `seconds`, so a live view can be watched (0 = full speed).

    Tiny 2-D problems train hundreds of epochs per second; a classroom wants to see the curve
    move. The pause is taken between epochs, so what is learned does not change.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, seconds)
        self._t0 = time.perf_counter()

    def on_train_begin(self, state: TrainState) -> None:
        """Start the first epoch's clock."""
        self._t0 = time.perf_counter()

    def on_epoch_end(self, state: TrainState) -> None:
        """Sleep what is left of the epoch's minimum duration."""
        left = self.seconds - (time.perf_counter() - self._t0)
        if left > 0:
            time.sleep(left)
        self._t0 = time.perf_counter()
