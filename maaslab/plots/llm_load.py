"""The streams of a language-model load test (maaslab.serve.llm_load): one row per request, from
the moment it was sent to its last token, with its first token marked. A long grey lead-in is a
request that queued (a high TTFT); sparse ticks on its bar are a slow stream (a high TPOT).
"""

from __future__ import annotations

import plotly.graph_objects as go

from maaslab.llm.measure import Timing
from maaslab.plots._style import TRAIN_COLOR, layout

WAIT_COLOR = "#cbd5e1"  # sent, no token yet
MISSED_COLOR = "#dc2626"  # a stream that missed the SLO
FIRST_COLOR = "#111827"
TICKS_SHOWN = 4000  # a tick per token up to this many tokens in all (beyond, only the bars)
ROW_PX, MAX_ROWS_PX = 22, 900  # pixels per request, and at most for all of them


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms"


def request_streams(timings: list[Timing], slo: tuple[float, float] | None = None) -> go.Figure:
    """Each request over time: waiting for its first token (grey), then streaming to its last.

    Parameters
    ----------
    timings : one per request (LLMLoadResult.timings); those without a token are left out. Rows
        are in the order the requests were sent, the first on top.
    slo : (TTFT limit, TPOT limit) in seconds: a stream that missed either is drawn red (None:
        every stream alike).
    """
    done = sorted((t for t in timings if t.token_times), key=lambda t: t.sent)
    t0 = done[0].sent if done else 0.0
    rows = [f"#{i}" for i in range(len(done))]
    plot_px = min(MAX_ROWS_PX, ROW_PX * max(len(done), 4))
    width = max(2.0, min(10.0, 0.5 * plot_px / max(len(done), 1)))  # bars thinner when crowded

    def met(t: Timing) -> bool:
        return slo is None or (t.ttft <= slo[0] and t.tpot <= slo[1])

    def segments(pairs: list[tuple[float, float, str]]) -> tuple[list, list]:
        # One trace for many bars: (start, end, row) pairs joined by None gaps.
        x, y = [], []
        for start, end, row in pairs:
            x += [start - t0, end - t0, None]
            y += [row, row, None]
        return x, y

    fig = go.Figure()
    wait = segments([(t.sent, t.token_times[0], row) for t, row in zip(done, rows, strict=True)])
    fig.add_scatter(
        x=wait[0],
        y=wait[1],
        mode="lines",
        name="waiting for the first token",
        line={"color": WAIT_COLOR, "width": width},
        hoverinfo="skip",
    )
    kinds = [("streaming", TRAIN_COLOR, True)]
    if slo is not None:
        kinds = [
            ("streaming, met the SLO", TRAIN_COLOR, True),
            ("streaming, missed the SLO", MISSED_COLOR, False),
        ]
    for name, color, good in kinds:
        pairs = [
            (t.token_times[0], t.token_times[-1], row)
            for t, row in zip(done, rows, strict=True)
            if met(t) == good
        ]
        if pairs:
            x, y = segments(pairs)
            line = {"color": color, "width": width}
            fig.add_scatter(x=x, y=y, mode="lines", name=name, line=line, hoverinfo="skip")
    if sum(len(t.token_times) for t in done) <= TICKS_SHOWN and width >= 6:
        fig.add_scatter(
            x=[s - t0 for t in done for s in t.token_times[1:]],
            y=[row for t, row in zip(done, rows, strict=True) for _ in t.token_times[1:]],
            mode="markers",
            name="a token",
            marker={
                "symbol": "line-ns",
                "size": width,
                "line": {"width": 1, "color": "rgba(255, 255, 255, 0.8)"},
            },
            hoverinfo="skip",
            showlegend=False,
        )
    hover = [
        f"request {row}: sent at {t.sent - t0:.2f} s<br>first token after {_ms(t.ttft)} · "
        f"{t.output_tokens} tokens · TPOT {_ms(t.tpot)}<br>last token after {_ms(t.e2e)}"
        for t, row in zip(done, rows, strict=True)
    ]
    fig.add_scatter(
        x=[t.token_times[0] - t0 for t in done],
        y=rows,
        mode="markers",
        name="first token",
        marker={"symbol": "diamond", "size": max(6.0, width + 2), "color": FIRST_COLOR},
        customdata=hover,
        hovertemplate="%{customdata}<extra></extra>",
    )
    limits = f" · SLO: TTFT ≤ {_ms(slo[0])}, TPOT ≤ {_ms(slo[1])}" if slo else ""
    fig.update_layout(
        **layout(height=plot_px + 190),
        title=f"Each request's stream ({len(done)} requests{limits})",
    )
    # Below the axis title whatever the height (the shared legend sits at a fixed -0.2).
    fig.update_layout(legend={"y": -75 / plot_px})
    fig.update_xaxes(title_text="seconds since the first request was sent", rangemode="tozero")
    fig.update_yaxes(
        title_text="request (in the order sent)",
        type="category",
        categoryorder="array",
        categoryarray=rows,
        autorange="reversed",
        showgrid=False,
    )
    return fig
