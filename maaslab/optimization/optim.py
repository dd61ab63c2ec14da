"""Optimizers written out in NumPy, with torch.optim's update rules, and races on 2-D surfaces.

Each optimizer follows the formula torch.optim uses (same defaults, weight decay added to the
gradient as an L2 penalty), so a test can step it beside its torch twin and see the same numbers.
`race` runs several of them from one start on a surface of `maaslab.optimization.surfaces` and
records paths. These are the hand-written twins of the torch.optim optimizers `maaslab.train`
builds (`HAND_OPTIMIZERS` and `make_hand_optimizer` here, `OPTIMIZERS` and `make_optimizer`
there); `maaslab.exercises.optimizers` grades lesson 03's hand-written update rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from maaslab.errors import MaaslabError
from maaslab.optimization.surfaces import SURFACES, Surface, get_surface

__all__ = [
    "GD",
    "HAND_OPTIMIZERS",
    "SURFACES",
    "Adam",
    "Momentum",
    "Nesterov",
    "Optimizer",
    "OptimizerConfig",
    "OptimizerPath",
    "RMSprop",
    "RaceConfig",
    "RaceResult",
    "Surface",
    "default_optimizers",
    "get_surface",
    "make_hand_optimizer",
    "race",
    "torch_optimizer",
]

HAND_OPTIMIZERS = ("gd", "momentum", "nesterov", "rmsprop", "adam")
NAMES = {
    "gd": "GD",
    "momentum": "Momentum",
    "nesterov": "Nesterov",
    "rmsprop": "RMSprop",
    "adam": "Adam",
}
MAX_STEPS = 5000
DIVERGED = 1e6  # a coordinate beyond this counts as diverged: the path left every window


def _finite(value: object) -> bool:
    number = isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)
    return number and math.isfinite(value)


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimizer and its hyperparameters; defaults are torch.optim's."""

    name: str = "adam"  # one of HAND_OPTIMIZERS
    lr: float = 0.01  # step size alpha (> 0)
    momentum: float = 0.9  # momentum / nesterov: beta of the velocity
    beta1: float = 0.9  # adam: decay of the first moment m
    beta2: float = 0.999  # adam: decay of the second moment v
    alpha: float = 0.99  # rmsprop: decay of the squared-gradient average
    eps: float = 1e-8  # adam / rmsprop: added to the denominator so it is never zero
    weight_decay: float = 0.0  # L2 penalty added to the gradient, as torch does

    def __post_init__(self) -> None:
        if self.name not in HAND_OPTIMIZERS:
            raise MaaslabError(
                f"unknown optimizer {self.name!r}: choose one of {', '.join(HAND_OPTIMIZERS)}"
            )
        if not _finite(self.lr) or self.lr <= 0:
            raise MaaslabError(f"learning rate must be a positive number, got {self.lr!r}")
        for field in ("momentum", "beta1", "beta2", "alpha"):
            value = getattr(self, field)
            if not _finite(value) or not 0 <= value < 1:
                raise MaaslabError(f"{field} must be in [0, 1), got {value!r}")
        if self.name == "nesterov" and self.momentum == 0:
            raise MaaslabError("nesterov needs momentum > 0 (with 0 it is plain GD)")
        for field in ("eps", "weight_decay"):
            value = getattr(self, field)
            if not _finite(value) or value < 0:
                raise MaaslabError(f"{field} must be a number >= 0, got {value!r}")

    @property
    def label(self) -> str:
        """Legend text, e.g. "Adam (lr 0.01)"."""
        return f"{NAMES[self.name]} (lr {self.lr:g})"


class Optimizer:
    """Base class: keeps the optimizer's state between steps; `step` returns new parameters."""

    def __init__(self, cfg: OptimizerConfig) -> None:
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        """Forget all state, as if freshly built."""
        self.t = 0  # steps taken so far

    def step(self, params: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """One update: the new parameters (the inputs are not modified)."""
        params = np.asarray(params, dtype=float)
        grad = np.asarray(grad, dtype=float)
        if self.cfg.weight_decay:  # torch adds the L2 term to the gradient before anything else
            grad = grad + self.cfg.weight_decay * params
        self.t += 1
        return params - self._update(grad)

    def _update(self, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class GD(Optimizer):
    """Plain gradient descent: p -= lr * g."""

    def _update(self, grad: np.ndarray) -> np.ndarray:
        return self.cfg.lr * grad


class Momentum(Optimizer):
    """torch SGD with momentum: v = mu * v + g (v = g on the first step); p -= lr * v."""

    def reset(self) -> None:
        super().reset()
        self.velocity = None

    def _update(self, grad: np.ndarray) -> np.ndarray:
        v = self.velocity
        self.velocity = grad.copy() if v is None else self.cfg.momentum * v + grad
        return self.cfg.lr * self._direction(grad)

    def _direction(self, grad: np.ndarray) -> np.ndarray:
        return self.velocity


class Nesterov(Momentum):
    """torch SGD with nesterov=True: the step looks ahead, p -= lr * (g + mu * v)."""

    def _direction(self, grad: np.ndarray) -> np.ndarray:
        return grad + self.cfg.momentum * self.velocity


class RMSprop(Optimizer):
    """torch RMSprop: s = alpha * s + (1 - alpha) g^2; p -= lr * g / (sqrt(s) + eps)."""

    def reset(self) -> None:
        super().reset()
        self.square_avg = None

    def _update(self, grad: np.ndarray) -> np.ndarray:
        s = np.zeros_like(grad) if self.square_avg is None else self.square_avg
        self.square_avg = self.cfg.alpha * s + (1 - self.cfg.alpha) * grad**2
        return self.cfg.lr * grad / (np.sqrt(self.square_avg) + self.cfg.eps)


class Adam(Optimizer):
    """torch Adam: moments m, v with bias correction; p -= lr * m_hat / (sqrt(v_hat) + eps)."""

    def reset(self) -> None:
        super().reset()
        self.m = None
        self.v = None

    def _update(self, grad: np.ndarray) -> np.ndarray:
        c = self.cfg
        m = np.zeros_like(grad) if self.m is None else self.m
        v = np.zeros_like(grad) if self.v is None else self.v
        self.m = c.beta1 * m + (1 - c.beta1) * grad
        self.v = c.beta2 * v + (1 - c.beta2) * grad**2
        # Both moments start at 0, so early averages are too small; dividing by 1 - beta^t
        # undoes that shrinkage exactly.
        m_hat = self.m / (1 - c.beta1**self.t)
        v_hat = self.v / (1 - c.beta2**self.t)
        return c.lr * m_hat / (np.sqrt(v_hat) + c.eps)


_CLASSES = {"gd": GD, "momentum": Momentum, "nesterov": Nesterov, "rmsprop": RMSprop, "adam": Adam}


def make_hand_optimizer(cfg: OptimizerConfig) -> Optimizer:
    """The NumPy optimizer described by `cfg`, with empty state."""
    return _CLASSES[cfg.name](cfg)


def torch_optimizer(cfg: OptimizerConfig, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """The torch.optim twin of `make_hand_optimizer(cfg)`, for oracle tests and comparisons."""
    wd = cfg.weight_decay
    if cfg.name == "gd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=wd)
    if cfg.name in ("momentum", "nesterov"):
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.name == "nesterov",
            weight_decay=wd,
        )
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, weight_decay=wd)
    return torch.optim.Adam(
        params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=wd
    )


def default_optimizers(surface: str) -> tuple[OptimizerConfig, ...]:
    """Every optimizer once, each at the learning rate that races well on `surface`."""
    s = get_surface(surface)
    return tuple(OptimizerConfig(name, lr=s.lr_for(name)) for name in HAND_OPTIMIZERS)


@dataclass(frozen=True)
class RaceConfig:
    """Which optimizers race, on which surface, from where and for how long."""

    surface: str = "rosenbrock"  # a key of SURFACES
    optimizers: tuple[OptimizerConfig, ...] | None = None  # None: all, at the surface's lrs
    start: tuple[float, float] | None = None  # None: the surface's default start
    steps: int = 200  # updates per optimizer, 1..MAX_STEPS

    def __post_init__(self) -> None:
        surface = get_surface(self.surface)
        opts = default_optimizers(self.surface) if self.optimizers is None else self.optimizers
        if isinstance(opts, OptimizerConfig | str):
            opts = (opts,)
        if not isinstance(opts, list | tuple):
            opts = (None,)  # reported below with the other malformed inputs
        # A bare name races at the surface's suggested learning rate (an unknown one raises).
        opts = tuple(
            OptimizerConfig(o, lr=dict(surface.lrs).get(o, 0.01)) if isinstance(o, str) else o
            for o in opts
        )
        if not opts or not all(isinstance(o, OptimizerConfig) for o in opts):
            raise MaaslabError(
                "optimizers must be a non-empty list of OptimizerConfig or names from "
                f"{', '.join(HAND_OPTIMIZERS)}"
            )
        object.__setattr__(self, "optimizers", opts)
        if self.start is not None:
            start = tuple(self.start) if isinstance(self.start, list | tuple | np.ndarray) else ()
            if len(start) != 2 or not all(_finite(v) for v in start):
                raise MaaslabError(f"start must be two finite numbers (x, y), got {self.start!r}")
            object.__setattr__(self, "start", (float(start[0]), float(start[1])))
        steps = self.steps
        if not isinstance(steps, int | np.integer) or isinstance(steps, bool):
            raise MaaslabError(f"steps must be a whole number, got {steps!r}")
        if not 1 <= steps <= MAX_STEPS:
            raise MaaslabError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")


@dataclass(frozen=True)
class OptimizerPath:
    """Where one optimizer went: positions and losses, cut at divergence."""

    label: str  # legend text, config.label
    config: OptimizerConfig  # the optimizer that made this path
    xy: np.ndarray  # (n + 1, 2) positions, start included; stops before a diverged point
    loss: np.ndarray  # (n + 1,) f at each position
    diverged_at: int | None  # the step whose result was non-finite or beyond DIVERGED

    @property
    def final_loss(self) -> float:
        """f at the last recorded position."""
        return float(self.loss[-1])


@dataclass(frozen=True)
class RaceResult:
    """The outcome of `race`: one path per optimizer, in the order of config.optimizers."""

    config: RaceConfig  # what was raced
    surface: Surface  # where
    paths: tuple[OptimizerPath, ...]  # one per optimizer

    def summary(self) -> list[dict]:
        """One row per optimizer (a table for pandas or st.dataframe): where it ended, how well."""
        rows = []
        for p in self.paths:
            x, y = (float(v) for v in p.xy[-1])
            m = self.surface.minimum
            rows.append(
                {
                    "optimizer": p.label,
                    "final loss": p.final_loss,
                    "diverged at": p.diverged_at,
                    "x": x,
                    "y": y,
                    "distance to minimum": None if m is None else math.hypot(x - m[0], y - m[1]),
                }
            )
        return rows


def _run_path(surface: Surface, cfg: OptimizerConfig, start: np.ndarray, steps: int):
    opt = make_hand_optimizer(cfg)
    p, points, diverged_at = start, [start], None
    for t in range(1, steps + 1):
        with np.errstate(over="ignore", invalid="ignore"):
            p = opt.step(p, surface.grad(p))
        if not np.all(np.isfinite(p)) or np.abs(p).max() > DIVERGED:
            diverged_at = t
            break
        points.append(p)
    xy = np.array(points)
    return OptimizerPath(cfg.label, cfg, xy, surface.value(xy), diverged_at)


def race(cfg: RaceConfig) -> RaceResult:
    """Run every optimizer of `cfg` from the same start on the surface and record the paths.

    Parameters
    ----------
    cfg : surface name, optimizers (configs or names), start (None: the surface's) and steps.
        A path that leaves the finite numbers or goes beyond 1e6 stops there, with
        `diverged_at` set to the step that did it.
    """
    if not isinstance(cfg, RaceConfig):
        raise MaaslabError(f"race needs a RaceConfig, got {type(cfg).__name__}")
    surface = get_surface(cfg.surface)
    start = np.array(cfg.start if cfg.start is not None else surface.start, dtype=float)
    paths = tuple(_run_path(surface, o, start, cfg.steps) for o in cfg.optimizers)
    return RaceResult(cfg, surface, paths)
