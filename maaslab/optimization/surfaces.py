"""Four 2-D loss surfaces for optimizer races, each with an analytic gradient and a torch twin.

Every surface maps points of shape (..., 2) to values of shape (...), so one call evaluates a
single point, a path or a whole contour grid. `torch_value` is the same formula written with torch
operations so tests can compare the hand-derived `grad` with autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from maaslab.errors import MaaslabError

# The quadratic's curvatures: 1 along x, KAPPA along y, so its condition number is KAPPA.
KAPPA = 100.0


def _split(xy: np.ndarray | torch.Tensor) -> tuple:
    return xy[..., 0], xy[..., 1]


def _stack(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return np.stack(np.broadcast_arrays(dx, dy), axis=-1)


def _quadratic(xy):
    x, y = _split(xy)
    return 0.5 * (x**2 + KAPPA * y**2)


def _quadratic_grad(xy: np.ndarray) -> np.ndarray:
    x, y = _split(xy)
    return _stack(x, KAPPA * y)


def _rosenbrock(xy):
    x, y = _split(xy)
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _rosenbrock_grad(xy: np.ndarray) -> np.ndarray:
    x, y = _split(xy)
    return _stack(-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2))


# Beale's three terms are (c_k - x + x y^k) for k = 1, 2, 3.
_BEALE_C = (1.5, 2.25, 2.625)


def _beale(xy):
    x, y = _split(xy)
    return sum((c - x + x * y**k) ** 2 for k, c in enumerate(_BEALE_C, start=1))


def _beale_grad(xy: np.ndarray) -> np.ndarray:
    x, y = _split(xy)
    dx = np.zeros_like(x, dtype=float)
    dy = np.zeros_like(y, dtype=float)
    for k, c in enumerate(_BEALE_C, start=1):
        r = c - x + x * y**k
        dx = dx + 2 * r * (y**k - 1)
        dy = dy + 2 * r * k * x * y ** (k - 1)
    return _stack(dx, dy)


def _saddle(xy):
    x, y = _split(xy)
    return x**2 - y**2


def _saddle_grad(xy: np.ndarray) -> np.ndarray:
    x, y = _split(xy)
    return _stack(2 * x, -2 * y)


def _lrs(**by_optimizer: float) -> tuple[tuple[str, float], ...]:
    return tuple(by_optimizer.items())


@dataclass(frozen=True)
class Surface:
    """A 2-D loss f(x, y): its formula, plotting window, default start and analytic gradient."""

    name: str  # key in SURFACES
    title: str  # human name for figure titles and select boxes
    formula: str  # LaTeX, without $ signs
    x_range: tuple[float, float]  # plotting window along x
    y_range: tuple[float, float]  # plotting window along y
    start: tuple[float, float]  # a default start that makes the race interesting
    minimum: tuple[float, float] | None  # global minimum; None when unbounded below (saddle)
    lrs: tuple[tuple[str, float], ...]  # learning rate per optimizer that races well here
    steps: int  # a race length that shows the differences (RaceConfig.steps stays the caller's)
    note: str  # one sentence on what the surface teaches
    _f: Callable = field(default=None, repr=False)  # value formula, numpy or torch alike
    _grad: Callable = field(default=None, repr=False)  # analytic gradient, numpy

    def value(self, xy: np.ndarray) -> np.ndarray:
        """f at points of shape (..., 2); returns shape (...)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._f(np.asarray(xy, dtype=float))

    def grad(self, xy: np.ndarray) -> np.ndarray:
        """The analytic gradient (df/dx, df/dy) at points (..., 2); returns shape (..., 2)."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self._grad(np.asarray(xy, dtype=float))

    def torch_value(self, xy: torch.Tensor) -> torch.Tensor:
        """The same formula on a torch tensor (..., 2), so autograd can check `grad`."""
        return self._f(xy)

    @property
    def min_value(self) -> float | None:
        """f at the global minimum (None for the saddle)."""
        return None if self.minimum is None else float(self.value(np.array(self.minimum)))

    def lr_for(self, optimizer: str) -> float:
        """The learning rate that races well on this surface for the named optimizer."""
        return dict(self.lrs)[optimizer]


SURFACES: dict[str, Surface] = {
    s.name: s
    for s in (
        Surface(
            name="quadratic",
            title="Ill-conditioned quadratic",
            formula=r"f(x, y) = \tfrac{1}{2}\left(x^2 + 100\,y^2\right)",
            x_range=(-6.0, 6.0),
            y_range=(-2.0, 2.0),
            start=(-5.0, 1.5),
            minimum=(0.0, 0.0),
            # GD is stable only below lr = 2/100; at 0.0175 it zig-zags across the valley and
            # crawls along it, while momentum at a quarter of that lr runs down the middle.
            lrs=_lrs(gd=0.0175, momentum=0.004, nesterov=0.004, rmsprop=0.05, adam=0.1),
            steps=200,
            note="A long narrow valley: curvature 100 times larger across it than along it.",
            _f=_quadratic,
            _grad=_quadratic_grad,
        ),
        Surface(
            name="rosenbrock",
            title="Rosenbrock",
            formula=r"f(x, y) = (1 - x)^2 + 100\,(y - x^2)^2",
            x_range=(-2.0, 2.0),
            y_range=(-1.0, 3.0),
            start=(-1.2, 1.0),
            minimum=(1.0, 1.0),
            # Across the valley the curvature is ~1000 at the minimum and ~1500 at the start, so
            # GD is stable only below ~0.002. The others sit near their best 500-step value.
            lrs=_lrs(gd=0.0015, momentum=0.001, nesterov=0.001, rmsprop=0.02, adam=0.1),
            steps=500,
            note="A curved banana valley: easy to fall into, slow to follow to the minimum.",
            _f=_rosenbrock,
            _grad=_rosenbrock_grad,
        ),
        Surface(
            name="beale",
            title="Beale",
            formula=(r"f(x, y) = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2"),
            x_range=(-4.5, 4.5),
            y_range=(-4.5, 4.5),
            start=(1.0, 1.5),
            minimum=(3.0, 0.5),
            # Good from the default start; from (2, 2), on a steep wall, the gradient-sized steps
            # of GD and momentum explode while RMSprop and Adam (steps of about lr) survive.
            lrs=_lrs(gd=0.01, momentum=0.002, nesterov=0.002, rmsprop=0.05, adam=0.1),
            steps=300,
            note="Flat plateaus next to steep walls: gradient sizes differ by orders of magnitude.",
            _f=_beale,
            _grad=_beale_grad,
        ),
        Surface(
            name="saddle",
            title="Saddle",
            formula=r"f(x, y) = x^2 - y^2",
            x_range=(-2.0, 2.0),
            y_range=(-2.0, 2.0),
            start=(-1.5, 0.01),
            minimum=None,
            # One lr for all: the race is about who notices the tiny slope along y.
            lrs=_lrs(gd=0.01, momentum=0.01, nesterov=0.01, rmsprop=0.01, adam=0.01),
            steps=200,
            note="Downhill along y, uphill along x: a start near y = 0 hardly feels the way out.",
            _f=_saddle,
            _grad=_saddle_grad,
        ),
    )
}


def get_surface(name: str) -> Surface:
    """The surface called `name`; MaaslabError naming the choices when there is none."""
    if name not in SURFACES:
        raise MaaslabError(f"unknown surface {name!r}: choose one of {', '.join(SURFACES)}")
    return SURFACES[name]
