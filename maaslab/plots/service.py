"""Figures and tables of a shared model service: what each tenant was answered and refused, and
how a model's traffic splits between its champion and challenger (with the shadow comparisons).

Both read the JSON the server returns (GET /usage/tenants and GET /v2/models/{name}/rollout,
maaslab.serve.service_client), so a page and a notebook draw the same picture from one call.
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.plots._style import SERIES_COLORS, TEST_COLOR, TRAIN_COLOR, layout

ANSWERED_COLOR = "#16a34a"
REFUSED_COLORS = {"rate": "#dc2626", "daily": "#9333ea", "tokens": "#ca8a04"}  # 429 by reason
OTHER_VERSION_COLOR = "#94a3b8"  # a loaded version that is neither champion nor challenger


def limits_text(limits: dict[str, Any]) -> str:
    """A tenant's limits in a few words: "20/s (burst 40) · 5000/day · 20000 tok/min"."""
    parts = []
    if limits.get("requests_per_s") is not None:
        burst = limits.get("burst")
        parts.append(f"{limits['requests_per_s']:g}/s" + (f" (burst {burst:g})" if burst else ""))
    if limits.get("daily_requests") is not None:
        parts.append(f"{limits['daily_requests']:g}/day")
    if limits.get("tokens_per_min") is not None:
        parts.append(f"{limits['tokens_per_min']:g} tok/min")
    return " · ".join(parts) or "no limit"


def tenant_rows(tenants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per tenant for a table: requests answered, 429s by reason, compute, limits.

    Parameters
    ----------
    tenants : GET /usage/tenants' "tenants" list (ServiceClient.tenants()).
    """
    rows = []
    for t in tenants:
        usage = t["usage"]
        refused = usage["refused"]
        rows.append(
            {
                "tenant": t["tenant"],
                "role": t["role"],
                "answered": usage["requests"],
                "429 rate": refused.get("rate", 0),
                "429 daily": refused.get("daily", 0),
                "429 tokens": refused.get("tokens", 0),
                "compute (s)": round(usage["compute_seconds"], 3),
                "limits": limits_text(t["limits"]),
            }
        )
    return rows


def tenant_usage(tenants: list[dict[str, Any]]) -> go.Figure:
    """Requests answered per tenant (left) and requests refused with 429, stacked by the limit
    that refused them (right): two scales, since a flood's refusals dwarf everyone's answers.

    Parameters
    ----------
    tenants : GET /usage/tenants' "tenants" list (ServiceClient.tenants()).
    """
    names = [t["tenant"] for t in tenants]
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.12,
        subplot_titles=("Answered (requests)", "Refused with 429, by limit"),
    )
    fig.add_bar(
        x=names,
        y=[t["usage"]["requests"] for t in tenants],
        name="answered",
        marker_color=ANSWERED_COLOR,
        row=1,
        col=1,
    )
    for reason, color in REFUSED_COLORS.items():
        fig.add_bar(
            x=names,
            y=[t["usage"]["refused"].get(reason, 0) for t in tenants],
            name=f"429 {reason}",
            marker_color=color,
            row=1,
            col=2,
        )
    fig.update_layout(**layout(340), barmode="stack")
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    return fig


def _version_label(state: dict[str, Any], version: str) -> str:
    role = {state["champion"]: "champion", state.get("challenger"): "challenger"}.get(version)
    return f"v{version} ({role})" if role else f"v{version}"


def _version_color(state: dict[str, Any], version: str) -> str:
    if version == state["champion"]:
        return TRAIN_COLOR
    if version == state.get("challenger"):
        return TEST_COLOR
    return OTHER_VERSION_COLOR


def rollout_title(state: dict[str, Any]) -> str:
    """The rollout in one line: champion, challenger with its canary share and shadowing."""
    line = f"{state['name']}: champion v{state['champion']}"
    if state.get("challenger") is None:
        return line + ", no challenger"
    shadow = ", shadow on" if state["shadow"] else ""
    return line + (
        f", challenger v{state['challenger']} gets {state['canary_percent']:g} % of the "
        f"traffic{shadow}"
    )


def rollout_figure(state: dict[str, Any]) -> go.Figure:
    """Requests answered per version (left) and the shadow comparisons (right): how many copies
    the challenger answered alike, differently, or skipped, with the agreement in the title.

    Parameters
    ----------
    state : GET /v2/models/{name}/rollout (ServiceClient.rollout(name)).
    """
    stats = state["shadow_stats"]
    agreement = stats.get("agreement")
    shadow_title = (
        f"Shadow agreement {agreement:.1%} of {stats['compared']:,}"
        if agreement is not None
        else "Shadow agreement: no comparison yet"
    )
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.15,
        subplot_titles=("Requests answered per version", shadow_title),
    )
    versions = list(state["versions"])
    fig.add_bar(
        x=[_version_label(state, v) for v in versions],
        y=[state["requests"].get(v, 0) for v in versions],
        marker_color=[_version_color(state, v) for v in versions],
        name="answered",
        showlegend=False,
        row=1,
        col=1,
    )
    counts = {
        "agreed": stats["agreed"],
        "disagreed": stats["compared"] - stats["agreed"],
        "skipped": stats["skipped"],
    }
    fig.add_bar(
        x=list(counts),
        y=list(counts.values()),
        marker_color=[ANSWERED_COLOR, REFUSED_COLORS["rate"], SERIES_COLORS[6]],
        name="shadow copies",
        showlegend=False,
        row=1,
        col=2,
    )
    fig.update_layout(**layout(340), title=rollout_title(state))
    fig.update_layout(margin={"t": 95})  # the title above the two subplot titles
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    return fig
