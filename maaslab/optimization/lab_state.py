"""The Gradient Descent Lab's settings: URL query parameters, widget values and the result table.

A teacher shares a link such as
`?surface=rosenbrock&opt=gd,adam&lr=gd:0.001,adam:0.05&start=-1.5,2.0&steps=200` and the page
reopens the same race. A link can carry anything, so every value is checked here and a nonsense
one is replaced by its default with a warning that says what was ignored; reading never raises.
A value is accepted only within what its widget can show (`GRIDS`, the surface's window).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from maaslab.errors import MaaslabError
from maaslab.optimization.optim import (
    HAND_OPTIMIZERS,
    MAX_STEPS,
    OptimizerConfig,
    RaceConfig,
    RaceResult,
)
from maaslab.optimization.surfaces import SURFACES, Surface
from maaslab.urlstate import clipped, quoted

DEFAULT_SURFACE = "rosenbrock"  # the classic race: a banana valley every optimizer finds hard
DEFAULT_OPTIMIZERS = ("gd", "momentum", "adam")  # three paths stay readable on one contour
DEFAULT_STEPS = 500  # Adam nears Rosenbrock's minimum while GD still crawls along the valley
MAX_LR = 10.0  # far past divergence on every surface; larger is a typo, not an experiment
# Learning rates a slider offers: 1, 2, 3, 5, 7 per decade, because good values differ by
# orders of magnitude between optimizers. Written as text so each is the float a person types.
LR_GRID = (*(float(f"{m}e{e}") for e in range(-5, 1) for m in (1, 2, 3, 5, 7)), MAX_LR)
MOMENTUM_GRID = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)  # also beta1: 0.9 is torch's default for both
BETA2_GRID = (0.9, 0.99, 0.995, 0.999, 0.9999)  # 0.999 is torch's default
STEPS_GRID = (10, 20, 50, 100, 200, 500, 1000, 2000, MAX_STEPS)
# setting -> its select slider's stops. A link may carry any value from the first stop to the
# last (one between two stops becomes one more stop on the slider); beyond them it is refused.
GRIDS: dict[str, tuple[float, ...]] = {
    "lr": LR_GRID,
    "momentum": MOMENTUM_GRID,
    "beta1": MOMENTUM_GRID,
    "beta2": BETA2_GRID,
    "steps": STEPS_GRID,
}
PARAMS = ("surface", "opt", "lr", "momentum", "beta1", "beta2", "start", "steps")
_SHARED = ("momentum", "beta1", "beta2")  # one value for every optimizer that uses it


def default_race(
    surface: str = DEFAULT_SURFACE, optimizers: Sequence[str] = DEFAULT_OPTIMIZERS
) -> RaceConfig:
    """The race a page opens with: each optimizer at the surface's suggested learning rate."""
    s = SURFACES[surface]
    opts = tuple(OptimizerConfig(name, lr=s.lr_for(name)) for name in optimizers)
    return RaceConfig(surface, opts, start=s.start, steps=DEFAULT_STEPS)


def bounds(name: str) -> tuple[float, float]:
    """The lowest and highest `name` (lr, momentum, beta1, beta2, steps) a link may set: the
    ends of its slider."""
    return min(GRIDS[name]), max(GRIDS[name])


def _fmt(value: float) -> str:
    # repr is the shortest text that reads back as the same float, so a link round-trips.
    return repr(float(value))


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _last(raw: str | list[str]) -> str:
    if isinstance(raw, str):
        return raw
    return str(raw[-1]) if raw else ""


def _parse_optimizers(raw: str | list[str], warn: list[str]) -> tuple[str, ...]:
    parts = [raw] if isinstance(raw, str) else list(raw)  # ?opt=gd&opt=adam works too
    names = [n.strip() for part in parts for n in str(part).split(",") if n.strip()]
    unknown = [n for n in names if n not in HAND_OPTIMIZERS]
    if unknown:
        warn.append(
            f"ignored opt={quoted(','.join(unknown))} from the URL "
            f"(choose from {', '.join(HAND_OPTIMIZERS)})"
        )
    chosen = tuple(dict.fromkeys(n for n in names if n in HAND_OPTIMIZERS))
    if not chosen:
        warn.append(f"no optimizer left in the URL; racing {', '.join(DEFAULT_OPTIMIZERS)}")
        return DEFAULT_OPTIMIZERS
    return chosen


def _check(name: str, value: float) -> float:
    low, high = bounds(name)
    if not low <= value <= high:
        raise ValueError(f"must be from {low:g} to {high:g}")
    return value


def _parse_lrs(raw: str, chosen: Sequence[str], warn: list[str]) -> dict[str, float]:
    # Either one number for every optimizer (lr=0.01) or one per optimizer (lr=gd:0.001,adam:0.1).
    if ":" not in raw:
        try:
            value = _check("lr", _number(raw))
        except ValueError as err:
            warn.append(
                f"ignored lr={quoted(raw)} from the URL ({err}); using each optimizer's default"
            )
            return {}
        return dict.fromkeys(chosen, value)
    lrs: dict[str, float] = {}
    for item in raw.split(","):
        name, _, text = item.partition(":")
        name = name.strip()
        try:
            if name not in HAND_OPTIMIZERS:
                raise ValueError(f"unknown optimizer {quoted(name)}")
            lrs[name] = _check("lr", _number(text))
        except ValueError as err:
            warn.append(
                f"ignored lr {quoted(item.strip())} from the URL ({err}); using the default"
            )
    return lrs


def _parse_start(raw: str, surface: Surface, warn: list[str]) -> tuple[float, float]:
    try:
        parts = raw.split(",")
        if len(parts) != 2:
            raise ValueError("expected two numbers x,y")
        x, y = (_number(p) for p in parts)
        (x0, x1), (y0, y1) = surface.x_range, surface.y_range
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            raise ValueError(f"outside the window x in [{x0:g}, {x1:g}], y in [{y0:g}, {y1:g}]")
    except ValueError as err:
        default = f"{surface.start[0]:g},{surface.start[1]:g}"
        warn.append(f"ignored start={quoted(raw)} from the URL ({err}); using {default}")
        return surface.start
    return (x, y)


def _parse_steps(raw: str, warn: list[str]) -> int:
    low, high = bounds("steps")
    try:
        value = _number(raw)
        if value != int(value) or not low <= value <= high:
            raise ValueError(f"a whole number from {low} to {high}")
    except ValueError as err:
        warn.append(f"ignored steps={quoted(raw)} from the URL ({err}); using {DEFAULT_STEPS}")
        return DEFAULT_STEPS
    return int(value)


def race_config_from_params(params: Mapping[str, str | list[str]]) -> tuple[RaceConfig, list[str]]:
    """Read a race from URL query parameters; return it and one warning per ignored value.

    Parameters
    ----------
    params : query parameters, e.g. `{k: st.query_params.get_all(k) for k in st.query_params}`;
        a value may be a list (the last one wins, except `opt`, whose values are all used).
        Missing parameters take the defaults of `default_race`; unknown ones are warned about.
    """
    warn: list[str] = []
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        names = ", ".join(clipped(name) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        warn.append(f"ignored unknown URL parameters: {names}{more}")
    surface = _last(params.get("surface", DEFAULT_SURFACE)).strip()
    if surface not in SURFACES:
        warn.append(
            f"ignored surface={quoted(surface)} from the URL (choose from {', '.join(SURFACES)}); "
            f"using {DEFAULT_SURFACE}"
        )
        surface = DEFAULT_SURFACE
    s = SURFACES[surface]
    chosen = _parse_optimizers(params["opt"], warn) if "opt" in params else DEFAULT_OPTIMIZERS
    lrs = _parse_lrs(_last(params["lr"]), chosen, warn) if "lr" in params else {}
    shared: dict[str, float] = {}
    for name in _SHARED:
        if name in params:
            raw = _last(params[name])
            try:
                shared[name] = _check(name, _number(raw))
            except ValueError as err:
                warn.append(f"ignored {name}={quoted(raw)} from the URL ({err}); using the default")
    opts = []
    for name in chosen:
        lr = lrs.get(name, s.lr_for(name))
        try:
            opts.append(OptimizerConfig(name, lr=lr, **shared))
        except MaaslabError as err:  # each value fine alone, but not together (nesterov, mu=0)
            warn.append(f"ignored the URL's settings for {name} ({err}); using its defaults")
            opts.append(OptimizerConfig(name, lr=lr))
    start = _parse_start(_last(params["start"]), s, warn) if "start" in params else s.start
    steps = _parse_steps(_last(params["steps"]), warn) if "steps" in params else DEFAULT_STEPS
    return RaceConfig(surface, tuple(opts), start=start, steps=steps), warn


def race_config_to_params(cfg: RaceConfig) -> dict[str, str]:
    """The query parameters that reopen `cfg`: every setting, so a shared link is explicit.

    Momentum and the betas are written once, from the first optimizer: the lab shares them.
    """
    first = cfg.optimizers[0]
    params = {
        "surface": cfg.surface,
        "opt": ",".join(o.name for o in cfg.optimizers),
        "lr": ",".join(f"{o.name}:{_fmt(o.lr)}" for o in cfg.optimizers),
        **{name: _fmt(getattr(first, name)) for name in _SHARED},
    }
    if cfg.start is not None:
        params["start"] = f"{_fmt(cfg.start[0])},{_fmt(cfg.start[1])}"
    params["steps"] = str(cfg.steps)
    return params


def widget_values(cfg: RaceConfig) -> dict[str, object]:
    """The lab's widget values for `cfg`: surface, opt, lr.<name> for every optimizer, …

    Optimizers not in the race get the surface's suggested learning rate, so adding one later
    starts from a sensible value.
    """
    s = SURFACES[cfg.surface]
    first = cfg.optimizers[0]
    start = cfg.start if cfg.start is not None else s.start
    lrs = {f"lr.{name}": s.lr_for(name) for name in HAND_OPTIMIZERS}
    lrs.update({f"lr.{o.name}": o.lr for o in cfg.optimizers})
    return {
        "surface": cfg.surface,
        "opt": [o.name for o in cfg.optimizers],
        **lrs,
        **{name: getattr(first, name) for name in _SHARED},
        "x": float(start[0]),
        "y": float(start[1]),
        "steps": cfg.steps,
    }


def config_from_widgets(values: Mapping[str, object]) -> RaceConfig:
    """The race the widgets describe (the inverse of `widget_values`); MaaslabError if invalid."""
    shared = {name: float(values[name]) for name in _SHARED}
    opts = tuple(
        OptimizerConfig(name, lr=float(values[f"lr.{name}"]), **shared) for name in values["opt"]
    )
    start = (float(values["x"]), float(values["y"]))
    return RaceConfig(str(values["surface"]), opts, start=start, steps=int(values["steps"]))


def surface_defaults(surface: str) -> dict[str, object]:
    """The widget values that follow the surface: every optimizer's lr and the start."""
    values = widget_values(default_race(surface))
    return {k: v for k, v in values.items() if k.startswith("lr.") or k in ("x", "y")}


def start_from_points(surface: Surface, points: Sequence[Mapping]) -> tuple[float, float] | None:
    """The start picked by a click on the chart (the first point), kept inside the window."""
    for point in points:
        x, y = point.get("x"), point.get("y")
        if all(isinstance(v, int | float) and math.isfinite(v) for v in (x, y)):
            x = float(np.clip(x, *surface.x_range))
            y = float(np.clip(y, *surface.y_range))
            return (round(x, 2), round(y, 2))
    return None


def click_grid(surface: Surface, n: int = 31) -> np.ndarray:
    """(n * n, 2) points covering the surface's window, rounded to 2 decimals: click targets.

    A contour cannot be clicked in a chart, so the page lays these invisible points over it and
    a click on one picks the start.
    """
    xs = np.linspace(*surface.x_range, n)
    ys = np.linspace(*surface.y_range, n)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    return np.round(grid, 2)


def race_table(result: RaceResult) -> list[dict[str, object]]:
    """One row per optimizer: final loss, distance to the minimum (None on the saddle), status."""
    rows = []
    minimum = result.surface.minimum
    for path in result.paths:
        end = path.xy[-1]
        distance = None if minimum is None else float(np.hypot(*(end - np.asarray(minimum))))
        if path.diverged_at is not None:
            status = f"diverged at step {path.diverged_at}"
        else:
            status = f"ran {len(path.xy) - 1} steps"
        rows.append(
            {
                "optimizer": path.label,
                "final loss": path.final_loss,
                "distance to minimum": distance,
                "end (x, y)": f"({end[0]:.3g}, {end[1]:.3g})",
                "status": status,
            }
        )
    return rows
