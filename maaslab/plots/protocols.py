"""The protocol lab's figure (maaslab.serve.protocols): bytes on the wire and latency."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.plots._style import SERIES_COLORS, layout
from maaslab.serve.protocols import PROTOCOLS, ProtocolReport


def protocol_figure(report: ProtocolReport) -> go.Figure:
    """Bytes on the wire (left, log-log) and p50 latency (right) against rows, a line per protocol.

    Parameters
    ----------
    report : compare_protocols' result; bytes are request + response bodies (solid: request,
        dotted: response), without HTTP headers or HTTP/2 framing.
    """
    titles = ("bytes on the wire (solid request, dotted response)", "latency p50 (ms, whole call)")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    for i, protocol in enumerate(PROTOCOLS):
        records = sorted(
            (r for r in report.records if r.protocol == protocol), key=lambda r: r.rows
        )
        if not records:
            continue
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        rows = [r.rows for r in records]
        for part, dash in (("request", "solid"), ("response", "dot")):
            fig.add_scatter(
                x=rows,
                y=[getattr(r, f"{part}_bytes") for r in records],
                mode="lines+markers",
                name=protocol if part == "request" else f"{protocol} response",
                line={"color": color, "dash": dash},
                legendgroup=protocol,
                showlegend=part == "request",
                row=1,
                col=1,
                hovertemplate=f"{protocol} {part}, %{{x}} rows: %{{y:,}} bytes<extra></extra>",
            )
        fig.add_scatter(
            x=rows,
            y=[r.p50_ms for r in records],
            mode="lines+markers",
            name=f"{protocol} p50",
            line={"color": color},
            legendgroup=protocol,
            showlegend=False,
            customdata=[r.p90_ms for r in records],
            row=1,
            col=2,
            hovertemplate=(
                f"{protocol}, %{{x}} rows: p50 %{{y:.1f}} ms, p90 %{{customdata:.1f}} ms"
                "<extra></extra>"
            ),
        )
    for col in (1, 2):
        fig.update_xaxes(title_text="rows per request", type="log", row=1, col=col)
    fig.update_yaxes(title_text="bytes", type="log", row=1, col=1)
    fig.update_yaxes(title_text="ms", rangemode="tozero", row=1, col=2)
    same = "bit-identical" if all(report.identical.values()) else "NOT identical"
    fig.update_layout(
        **layout(400),
        title=f"{report.model}: the same tensor three ways (outputs {same}, "
        f"{report.repeats} calls per point)",
    )
    return fig
