"""Run the training loop in a background thread that a UI can poll and stop.

The Training Studio keeps a TrainingJob in its session and redraws from `snapshot()` every half
second; Stop sets an event that the loop checks after every step. Nothing here knows Streamlit.
"""

from __future__ import annotations

import copy
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Self

import torch
from torch import nn

from maaslab.callbacks import Callback, StopOnDivergence, StopOnEvent, TrainState
from maaslab.data import Dataset
from maaslab.errors import MaaslabError
from maaslab.train import History, TrainConfig, train

Weights = dict[str, torch.Tensor]


def _copy_weights(model: nn.Module) -> Weights:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class _Watch(Callback):
    # Keeps a reference to the live History, and publishes a copy of the weights at most every
    # `job.weights_every` seconds (at epoch ends), so live views never read a model mid-step.
    def __init__(self, job: TrainingJob) -> None:
        self.job = job
        self.published = 0.0

    def on_train_begin(self, state: TrainState) -> None:
        self.job._live = state.history
        self.job._state = state
        self.job.initial_weights = self.job._weights = _copy_weights(state.model)
        # A private CPU copy for live views; building a fresh model instead would draw from the
        # global torch RNG that this run's dropout and shuffling use.
        self.job._view = copy.deepcopy(state.model).cpu().eval()
        self.published = time.perf_counter()

    def on_epoch_end(self, state: TrainState) -> None:
        if time.perf_counter() - self.published >= self.job.weights_every:
            self.job._weights = _copy_weights(state.model)
            self.published = time.perf_counter()

    def on_train_end(self, state: TrainState) -> None:
        self.job._weights = _copy_weights(state.model)


class _Background:
    # A daemon thread running self._run: start(), join(), running. Subclasses define _run.
    def __init__(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        """Start the work in the background; returns self."""
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the work to end; True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """True while the thread works."""
        return self._thread.is_alive()


class TrainingJob(_Background):
    """One training run on a daemon thread: start(), stop(), snapshot(), and the final result."""

    def __init__(
        self,
        model: nn.Module,
        data: Dataset,
        cfg: TrainConfig,
        callbacks: Sequence[Callback] = (),
        weights_every: float = 0.25,
    ) -> None:
        self.model, self.data, self.cfg = model, data, cfg
        self.weights_every = weights_every  # seconds between weight snapshots for live views
        self.initial_weights: Weights | None = None  # the weights training started from
        self._weights: Weights | None = None
        self._view: nn.Module | None = None
        self._stop = threading.Event()
        self._callbacks = [_Watch(self), StopOnEvent(self._stop), StopOnDivergence(), *callbacks]
        super().__init__("maaslab-train")
        self._live: History | None = None
        self._state: TrainState | None = None
        self.history: History | None = None  # set when the run ends
        self.error: str | None = None  # a one-line message if the run failed
        self.trace: str | None = None  # the full traceback of an unexpected failure, for logs

    def stop(self) -> None:
        """Ask the loop to stop after its current step."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once stop() was called."""
        return self._stop.is_set()

    @property
    def state(self) -> str:
        """One word for a status line: training, stopping, failed, stopped or finished."""
        if self.running:
            return "stopping" if self.stop_requested else "training"
        if self.error:
            return "failed"
        return "stopped" if self.history is not None and self.history.stopped_early else "finished"

    @property
    def notes(self) -> dict[str, object]:
        """Why training stopped on its own (divergence, early stopping), if it did."""
        return dict(self._state.info) if self._state else {}

    def snapshot(self) -> History:
        """A consistent copy of what has been recorded so far (safe to plot while training)."""
        if self.history is not None:
            return self.history
        live = self._live
        if live is None:
            return History(task=self.data.task)
        # list slicing is atomic under the GIL, so each copy is a valid prefix of the run.
        return replace(live, step_loss=live.step_loss[:], epochs=live.epochs[:])

    def weights(self) -> Weights | None:
        """The latest published copy of the weights (CPU tensors), or None before training."""
        return self._weights

    def snapshot_model(self) -> nn.Module | None:
        """A CPU copy of the model with the latest published weights, in eval mode.

        The copy is shared by every call (live views redraw from one thread at a time).
        """
        weights, view = self._weights, self._view
        if weights is None or view is None:
            return None
        view.load_state_dict(weights)
        return view

    def _run(self) -> None:
        try:
            self.history = train(self.model, self.data, self.cfg, self._callbacks)
        except MaaslabError as err:
            self.error = str(err)
        except Exception as err:  # a bug: keep the UI alive and the traceback for the log
            self.error = f"training failed: {type(err).__name__}: {err}"
            self.trace = traceback.format_exc()


class Task(_Background):
    """Any long call on a daemon thread, with progress and cancel (explanations, comparisons).

    `fn(progress, cancel)` receives a progress callback `(stage, fraction)` and a threading.Event
    it must honour; its return value becomes `result`. A UI polls `stage`, `fraction`, `done`.
    """

    def __init__(self, fn: Callable[[Callable[[str, float], None], threading.Event], Any]) -> None:
        self._fn = fn
        self._cancel = threading.Event()
        super().__init__("maaslab-task")
        self.stage, self.fraction = "starting", 0.0
        self.result: Any = None
        self.error: str | None = None  # a one-line message if the call failed or was cancelled
        self.trace: str | None = None  # the traceback of an unexpected failure, for logs
        self.seconds = 0.0

    def cancel(self) -> None:
        """Ask the call to stop at its next check."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        """True once cancel() was called."""
        return self._cancel.is_set()

    def _progress(self, stage: str, fraction: float) -> None:
        self.stage, self.fraction = stage, max(0.0, min(1.0, fraction))

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self.result = self._fn(self._progress, self._cancel)
        except MaaslabError as err:
            self.error = str(err)
        except Exception as err:  # a bug: keep the UI alive and the traceback for the log
            self.error = f"failed: {type(err).__name__}: {err}"
            self.trace = traceback.format_exc()
        self.seconds = time.perf_counter() - started
