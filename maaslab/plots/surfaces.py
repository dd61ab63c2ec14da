"""Figures of optimizer races on 2-D surfaces: the landscape, the animated race, the loss curves."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from maaslab.optimization.optim import OptimizerPath, RaceResult
from maaslab.optimization.surfaces import Surface
from maaslab.plots._style import SERIES_COLORS, layout

GRID = 100  # contour resolution per axis: smooth enough, light enough for a page
FLOOR = 1e-12  # log axes need positive values; losses this close to the minimum show as equal


def _legend_name(path: OptimizerPath) -> str:
    if path.diverged_at is None:
        return path.label
    return f"{path.label} · diverged at step {path.diverged_at}"


def _color(i: int) -> str:
    return SERIES_COLORS[i % len(SERIES_COLORS)]


def _grid(surface: Surface) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs = np.linspace(*surface.x_range, GRID)
    ys = np.linspace(*surface.y_range, GRID)
    xy = np.stack(np.meshgrid(xs, ys), axis=-1)  # (GRID, GRID, 2), rows follow y
    return xs, ys, surface.value(xy).astype(np.float32)


def surface_contour(surface: Surface) -> go.Figure:
    """The surface as filled contours, log-spaced so both the valley floor and walls show.

    Parameters
    ----------
    surface : one of `maaslab.optimization.optim.SURFACES`. Surfaces with a minimum are coloured by
        log10(f - f_min); the saddle, which has none, by f itself.
    """
    xs, ys, f = _grid(surface)
    if surface.minimum is None:
        z, bar = f, "f(x, y)"
    else:
        # Equal colour steps in log10(f - f_min) are log-spaced contour levels of f.
        z, bar = np.log10(np.maximum(f - surface.min_value, FLOOR)), "log10(f − f_min)"
    fig = go.Figure(
        go.Contour(
            x=xs,
            y=ys,
            z=z,
            customdata=f,
            colorscale="Viridis",
            ncontours=25,
            contours={"coloring": "heatmap"},
            line={"width": 0.5, "color": "rgba(255, 255, 255, 0.35)"},
            colorbar={"title": {"text": bar, "side": "right"}, "thickness": 12},
            hovertemplate="x %{x:.3f}, y %{y:.3f}<br>f %{customdata:.4g}<extra></extra>",
            name=surface.title,
            showlegend=False,
        )
    )
    if surface.minimum is not None:
        fig.add_scatter(
            x=[surface.minimum[0]],
            y=[surface.minimum[1]],
            mode="markers",
            name="minimum",
            marker={"symbol": "star", "size": 16, "color": "white", "line": {"width": 1}},
        )
    fig.update_layout(title=surface.title, xaxis_title="x", yaxis_title="y", **layout(height=480))
    fig.update_xaxes(range=list(surface.x_range), constrain="domain")
    fig.update_yaxes(range=list(surface.y_range))
    return fig


def _thin(n_points: int, max_points: int) -> np.ndarray:
    # Indices that keep a path under max_points while always keeping its first and last point.
    return np.unique(np.linspace(0, n_points - 1, min(n_points, max_points)).round().astype(int))


def _path_until(path: OptimizerPath, keep: np.ndarray, step: int) -> tuple:
    # The (thinned) path up to `step` (or its end, if it diverged earlier) and its current point.
    # float32 arrays travel as compact binary in the figure JSON: 60 frames stay light.
    last = min(step, len(path.xy) - 1)
    xy = path.xy[np.append(keep[keep < last], last)].astype(np.float32)
    return xy[:, 0], xy[:, 1], path.xy[last].astype(np.float32)


def race_contour(
    result: RaceResult, *, animate: bool = True, max_frames: int = 60, max_points: int = 400
) -> go.Figure:
    """The race drawn on the surface: one path per optimizer, animated with Play and a slider.

    Parameters
    ----------
    result : what `maaslab.optimization.optim.race` returned.
    animate : add frames, a Play/Pause button and a step slider (False: a still figure).
    max_frames : at most this many animation frames; steps are subsampled evenly.
    max_points : each drawn path is thinned to at most this many points, to keep figures light.
    """
    fig = surface_contour(result.surface)
    steps = result.config.steps
    keeps = [_thin(len(p.xy), max_points) for p in result.paths]
    first_path_trace = len(fig.data)
    for i, (path, keep) in enumerate(zip(result.paths, keeps, strict=True)):
        x, y, _ = _path_until(path, keep, steps)
        fig.add_scatter(
            x=x,
            y=y,
            mode="lines",
            name=_legend_name(path),
            legendgroup=path.label,
            line={"color": _color(i), "width": 2.5},
        )
    for i, (path, keep) in enumerate(zip(result.paths, keeps, strict=True)):
        _, _, now = _path_until(path, keep, steps)
        fig.add_scatter(
            x=[now[0]],
            y=[now[1]],
            mode="markers",
            name=path.label,
            legendgroup=path.label,
            showlegend=False,
            marker={"color": _color(i), "size": 11, "line": {"width": 1.5, "color": "white"}},
            hovertemplate=f"{path.label}<br>x %{{x:.4g}}, y %{{y:.4g}}",
        )
    start = result.paths[0].xy[0]
    fig.add_scatter(
        x=[start[0]],
        y=[start[1]],
        mode="markers",
        name="start",
        marker={
            "symbol": "circle",
            "size": 14,
            "color": "rgba(255, 255, 255, 0.5)",
            "line": {"width": 2.5, "color": "#111827"},
        },
    )
    fig.update_layout(title=f"{result.surface.title}: {steps} steps")
    if animate and steps > 0:
        _add_animation(fig, result, keeps, first_path_trace, max_frames)
    return fig


def _add_animation(fig, result, keeps, first, max_frames) -> None:
    n = len(result.paths)
    frame_steps = np.unique(np.linspace(0, result.config.steps, max(2, max_frames)).round())
    frames = []
    for step in frame_steps.astype(int):
        lines, dots = [], []
        for path, keep in zip(result.paths, keeps, strict=True):
            x, y, now = _path_until(path, keep, step)
            lines.append(go.Scatter(x=x, y=y))
            dots.append(go.Scatter(x=[now[0]], y=[now[1]]))
        frames.append(
            go.Frame(data=lines + dots, name=str(step), traces=list(range(first, first + 2 * n)))
        )
    fig.frames = frames
    # redraw=True: plotly.js hides a contour trace during a redraw-free animation
    # (plotly.js issue 4491), and the landscape is the point of this figure.
    still = {
        "mode": "immediate",
        "frame": {"duration": 0, "redraw": True},
        "transition": {"duration": 0},
    }
    play = {
        "frame": {"duration": 80, "redraw": True},
        "transition": {"duration": 0},
        "fromcurrent": False,
        "mode": "immediate",
    }
    buttons = [
        {"label": "▶ Play", "method": "animate", "args": [None, play]},
        {"label": "Pause", "method": "animate", "args": [[None], still]},
    ]
    # Plotly's usual animation layout: buttons at the bottom left, the slider beside them.
    fig.update_layout(
        updatemenus=[
            {
                "type": "buttons",
                "direction": "left",
                "buttons": buttons,
                "x": 0.12,
                "y": 0,
                "xanchor": "right",
                "yanchor": "top",
                "pad": {"t": 48, "r": 10},
                "showactive": False,
            }
        ],
        sliders=[
            {
                "active": len(frames) - 1,
                "x": 0.12,
                "len": 0.88,
                "y": 0,
                "yanchor": "top",
                "pad": {"t": 35},
                "currentvalue": {"prefix": "step "},
                "steps": [
                    {"label": f.name, "method": "animate", "args": [[f.name], still]}
                    for f in frames
                ],
            }
        ],
        legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
        title={"y": 0.98, "yanchor": "top"},
        margin={"t": 110, "b": 110},
        height=560,
    )


def race_loss(result: RaceResult) -> go.Figure:
    """Loss against step for every optimizer of the race, on a log axis when f has a minimum.

    Parameters
    ----------
    result : what `maaslab.optimization.optim.race` returned. With a minimum the curve is f − f_min
        (floored at 1e-12); on the saddle it is f itself, with the axis limited to the values
        f takes inside the plotting window, since f falls without bound.
    """
    surface = result.surface
    fig = go.Figure()
    for i, path in enumerate(result.paths):
        steps = np.arange(len(path.loss))
        y = (
            path.loss
            if surface.minimum is None
            else np.maximum(path.loss - surface.min_value, FLOOR)
        )
        fig.add_scatter(
            x=steps, y=y, mode="lines", name=_legend_name(path), line={"color": _color(i)}
        )
    fig.update_layout(title=f"Loss on {surface.title}", xaxis_title="step", **layout())
    if surface.minimum is None:
        f = _grid(surface)[2]
        fig.update_yaxes(title_text="f(x, y)", range=[float(f.min()), float(f.max())])
    else:
        # A diverging path would stretch the axis to 1e12 and flatten every other curve: the
        # axis stops a decade above the highest value the surface takes in its window.
        f = _grid(surface)[2]
        lows = [np.maximum(p.loss - surface.min_value, FLOOR).min() for p in result.paths]
        top = float(np.log10(max(float(f.max()) - surface.min_value, FLOOR))) + 1
        bottom = float(np.log10(min([*lows, 1.0]))) - 0.5
        fig.update_yaxes(
            title_text="f − f_min", type="log", exponentformat="power", range=[bottom, top]
        )
    return fig


def add_click_targets(fig: go.Figure, surface: Surface, points: np.ndarray) -> go.Figure:
    """Overlay invisible markers at `points` (N, 2): a contour cannot be clicked, markers can.

    A page that lets the learner click the map (to pick a start) reads the selected marker.
    """
    fig.add_scatter(
        x=points[:, 0],
        y=points[:, 1],
        customdata=surface.value(points),
        mode="markers",
        marker={"size": 14, "opacity": 0},
        showlegend=False,
        name="start here",
        hovertemplate="f(%{x}, %{y}) = %{customdata:.4g}<br>click: start here<extra></extra>",
    )
    return fig
