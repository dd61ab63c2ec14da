"""Figures of lesson 15's Engine view, drawn from a maaslab.llm.trace.TraceData: the scheduler's
timeline (one row per request, one column per step), the KV block map of one step, time to first
token and inter-token latency, and the numbers of a run.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from maaslab.llm.measure import Timing
from maaslab.llm.trace import PHASES, BlockMap, Cell, TraceData
from maaslab.plots._style import SERIES_COLORS, TEST_COLOR, TRAIN_COLOR, layout

# One colour per phase; "several" is a decode step that brought more than one token (a draft's
# guesses accepted).
PHASE_COLORS = {
    "waiting": "#fbbf24",
    "prefill": TRAIN_COLOR,
    "decode": "#4ade80",
    "several": "#15803d",
    "preempted": "#dc2626",
    "finished": "#e5e7eb",
}
CODES = (*PHASES, "several")  # heatmap value i is CODES[i]
LEGEND = {
    "waiting": "waiting",
    "prefill": "prefill",
    "decode": "decode (1 token)",
    "several": "decode, several tokens (draft accepted)",
    "preempted": "preempted",
    "finished": "finished",
}
# Blocks: a colour per owning request (cycled), and two for free blocks.
# Pastel, so that the request ids written on them read well.
OWNER_COLORS = (
    "#8dd3c7",
    "#fb8072",
    "#80b1d3",
    "#fdb462",
    "#b3de69",
    "#fccde5",
    "#bc80bd",
    "#ffed6f",
    "#ccebc5",
)
FREE_COLOR = "#ffffff"
CACHED_COLOR = "#94a3b8"  # free, but still holds a prefix a later prompt can take back
SHARED_LINE = "#111827"
STEPS_SHOWN = 400  # the timeline draws at most this many of the latest steps


def _code(cell: Cell) -> int:
    phase = "several" if cell.phase == "decode" and cell.produced > 1 else cell.phase
    return CODES.index(phase)


def _hover(req_id: int, step: int, cell: Cell) -> str:
    head = f"request {req_id} · step {step}<br>"
    if cell.phase == "prefill":
        text = f"prefill: {cell.tokens} prompt tokens computed"
        if cell.cached:
            text += f" ({cell.cached} found in the prefix cache)"
        return head + text + (", then it sampled a token" if cell.produced else "")
    if cell.phase == "decode":
        extra = f" ({cell.produced - 1} guesses accepted)" if cell.produced > 1 else ""
        return head + f"decode: {cell.produced} token{'s' * (cell.produced != 1)}{extra}"
    if cell.phase == "waiting":
        return head + "waiting: in the queue, or no room in this step's token budget"
    if cell.phase == "preempted":
        return head + "preempted: its blocks were taken back; it will recompute"
    return head + "finished"


def _discrete(colors: list[str]) -> list[list]:
    # A colorscale that gives value i (of len(colors), with zmin 0 and zmax len - 1) one colour.
    n, scale = len(colors), []
    for i, color in enumerate(colors):
        scale += [[i / n, color], [(i + 1) / n, color]]
    return scale


def scheduler_timeline(data: TraceData, budget: int | None = None) -> go.Figure:
    """What the scheduler did at every step: tokens computed (top) and each request's phase.

    Parameters
    ----------
    data : a Trace's snapshot.
    budget : max_batched_tokens, drawn as a line over the tokens per step (None: no line).
    """
    steps = data.steps[-STEPS_SHOWN:]
    ids = sorted({i for rec in steps for i in rec.cells} | set(data.requests))
    x = [rec.step for rec in steps]
    z = np.full((len(ids), len(steps)), np.nan)
    text = np.full((len(ids), len(steps)), "", dtype=object)
    prefill, decode = np.zeros(len(steps)), np.zeros(len(steps))
    for j, rec in enumerate(steps):
        for i, req_id in enumerate(ids):
            cell = data.cell(rec, req_id)
            if cell is None:
                continue
            z[i, j] = _code(cell)
            text[i, j] = _hover(req_id, rec.step, cell)
            if cell.phase == "prefill":
                prefill[j] += cell.tokens
            elif cell.phase == "decode":
                decode[j] += cell.tokens
    # Pixel sizes: the tokens panel keeps its height, the phases get a row per request.
    top, bottom, gap = 120, max(100, 20 * len(ids)), 60
    height = top + bottom + gap + 160  # and the titles, the axis and the legend below
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        row_heights=[top, bottom],
        vertical_spacing=gap / (height - 95),
        subplot_titles=("Tokens computed per step", "Each request at each step"),
    )
    for name, values, color in (
        ("prefill tokens", prefill, TRAIN_COLOR),
        ("decode tokens", decode, PHASE_COLORS["decode"]),
    ):
        fig.add_bar(
            x=x,
            y=values,
            name=name,
            marker={"color": color, "line": {"width": 0}},
            showlegend=False,  # the phases' legend below names the same colours
            hovertemplate=f"step %{{x}}: %{{y:.0f}} {name}<extra></extra>",
            row=1,
            col=1,
        )
    if budget is not None and steps:
        fig.add_hline(
            y=budget,
            line={"color": "#64748b", "dash": "dot"},
            annotation_text=f"budget {budget}",
            annotation_position="top left",
            row=1,
            col=1,
        )
        fig.update_yaxes(range=[0, budget * 1.25], row=1, col=1)
    fig.add_heatmap(
        z=z,
        x=x,
        y=[f"#{i}" for i in ids],
        text=text,
        hovertemplate="%{text}<extra></extra>",
        colorscale=_discrete([PHASE_COLORS[c] for c in CODES]),
        zmin=-0.5,
        zmax=len(CODES) - 0.5,
        showscale=False,
        xgap=1 if len(steps) <= 150 else 0,
        ygap=1,
        row=2,
        col=1,
    )
    seen = {CODES[int(c)] for c in np.unique(z[~np.isnan(z)])}
    for phase in CODES:  # a legend entry per phase present (a heatmap has none of its own)
        if phase in seen:
            fig.add_scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=LEGEND[phase],
                marker={"symbol": "square", "size": 12, "color": PHASE_COLORS[phase]},
                row=2,
                col=1,
            )
    fig.update_layout(**layout(height=height), barmode="stack", bargap=0)
    # Below the axis title, whatever the height; in the order of PHASES (stacked bars would
    # reverse it).
    fig.update_layout(legend={"y": -70 / (height - 95), "traceorder": "normal"})
    fig.update_yaxes(title_text="tokens", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="request", autorange="reversed", row=2, col=1)
    fig.update_xaxes(title_text="engine step", row=2, col=1)
    return fig


def _grid(num_blocks: int) -> int:
    # Columns of the block grid: 16 for a large pool, fewer for a small one.
    return 16 if num_blocks >= 64 else 8


def kv_block_map(blocks: BlockMap) -> go.Figure:
    """The KV pool after one step: a square per block, coloured by the request holding it.

    Blocks shared by several requests (a common prefix, computed once) are outlined and say how
    many hold them; free blocks are white, free blocks that still hold a prefix are grey.
    """
    cols = _grid(blocks.num_blocks)
    rows = -(-blocks.num_blocks // cols)
    colors = [FREE_COLOR, CACHED_COLOR, *OWNER_COLORS]
    z = np.full((rows, cols), np.nan)
    label = np.full((rows, cols), "", dtype=object)
    hover = np.full((rows, cols), "", dtype=object)
    for b in range(blocks.num_blocks):
        r, c = divmod(b, cols)
        owners = blocks.owners.get(b)
        if owners:
            z[r, c] = 2 + owners[0] % len(OWNER_COLORS)
            shared = len(owners) > 1
            label[r, c] = f"×{len(owners)}" if shared else str(owners[0])
            who = ", ".join(map(str, owners))
            kind = " (a shared prefix, computed once)" if shared else ""
            hover[r, c] = f"block {b}<br>held by request{'s' * shared} {who}{kind}"
        elif b in blocks.cached_free:
            z[r, c] = 1
            hover[r, c] = (
                f"block {b}<br>free, still holds a prefix: a matching prompt takes it back"
            )
        else:
            z[r, c] = 0
            hover[r, c] = f"block {b}<br>free"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            text=label,
            texttemplate="%{text}",
            textfont={"size": 11, "color": "#111827"},
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            colorscale=_discrete(colors),
            zmin=-0.5,
            zmax=len(colors) - 0.5,
            showscale=False,
            xgap=3,
            ygap=3,
        )
    )
    for b in sorted(blocks.shared):
        r, c = divmod(b, cols)
        fig.add_shape(
            type="rect",
            x0=c - 0.5,
            x1=c + 0.5,
            y0=r - 0.5,
            y1=r + 0.5,
            line={"color": SHARED_LINE, "width": 3},
        )
    legend = [
        ("one request's (its id)", OWNER_COLORS[0]),
        ("shared (×requests)", OWNER_COLORS[1]),
        ("free", FREE_COLOR),
        ("free, prefix kept", CACHED_COLOR),
    ]
    for name, color in legend:
        line = {
            "color": SHARED_LINE if "shared" in name else "#94a3b8",
            "width": 2 if "shared" in name else 1,
        }
        fig.add_scatter(
            x=[None],
            y=[None],
            mode="markers",
            name=name,
            marker={"symbol": "square", "size": 14, "color": color, "line": line},
        )
    used = len(blocks.owners)
    fig.update_layout(
        **layout(height=140 + 34 * rows),
        title=(
            f"KV blocks after step {blocks.step}<br><sup>{used} of {blocks.num_blocks} in use · "
            f"{len(blocks.shared)} shared · {len(blocks.cached_free)} free with a cached prefix"
            "</sup>"
        ),
        plot_bgcolor="#f1f5f9",
    )
    fig.update_xaxes(
        showticklabels=False,
        showgrid=False,
        zeroline=False,
        range=[-0.5, cols - 0.5],
        constrain="domain",  # the plot area shrinks to the grid
    )
    fig.update_yaxes(
        showticklabels=False, showgrid=False, zeroline=False, autorange="reversed", scaleanchor="x"
    )
    return fig


def ttft_itl(timings: list[Timing], ids: list[int] | None = None) -> go.Figure:
    """Time to first token per request (left) and the spread of inter-token latencies (right).

    Parameters
    ----------
    timings : one per request that got a token (TraceData.timings()).
    ids : the requests' ids, for the bars' labels (None: 0, 1, ...).
    """
    ids = list(range(len(timings))) if ids is None else ids
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.55, 0.45],
        horizontal_spacing=0.14,
        subplot_titles=("Time to first token (ms), per request", "Gaps between tokens (ms)"),
    )
    ttft = [t.ttft * 1e3 for t in timings]
    itl = [g * 1e3 for t in timings for g in t.itls]
    fig.add_bar(
        x=[f"#{i}" for i in ids],
        y=ttft,
        name="TTFT",
        marker_color=TRAIN_COLOR,
        hovertemplate="request %{x}: first token after %{y:.1f} ms<extra></extra>",
        row=1,
        col=1,
    )
    fig.add_histogram(
        x=itl,
        name="ITL",
        marker_color=TEST_COLOR,
        nbinsx=40,
        hovertemplate="%{x} ms: %{y} gaps<extra></extra>",
        row=1,
        col=2,
    )
    for values, col in ((ttft, 1), (itl, 2)):
        if values:
            p50, p99 = np.percentile(values, [50, 99])
            for q, v, dash in (("p50", p50, "dot"), ("p99", p99, "dash")):
                line = {"color": SERIES_COLORS[2] if q == "p50" else "#dc2626", "dash": dash}
                place = {"y": v} if col == 1 else {"x": v}
                add = fig.add_hline if col == 1 else fig.add_vline
                where = "top left" if q == "p50" else "top right"
                add(
                    **place,
                    line=line,
                    annotation_text=f"{q} {v:.1f} ms",
                    annotation_position=where,
                    row=1,
                    col=col,
                )
    fig.update_layout(**layout(height=340), showlegend=False, bargap=0.1)
    fig.update_yaxes(title_text="ms", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="gaps", row=1, col=2)
    fig.update_xaxes(title_text="request", type="category", row=1, col=1)
    fig.update_xaxes(title_text="ms", rangemode="nonnegative", row=1, col=2)
    return fig


def engine_tiles(data: TraceData) -> list[tuple[str, str, str | None]]:
    """The numbers of a run so far as (label, value, help): steps, batch, preemptions, cache."""
    s = data.stats
    if s is None:
        return [("Steps", "0", None)]
    b = s.blocks
    tiles = [
        ("Steps", f"{s.steps:,}", "model passes so far, each over the whole running batch"),
        ("Running / waiting", f"{s.running} / {s.waiting}", "sequences in the batch / queued"),
        ("Tokens out", f"{s.generated_tokens:,}", None),
        ("Preemptions", f"{s.preemptions:,}", "sequences that gave back their blocks to recompute"),
        (
            "KV blocks in use",
            f"{b.used} / {b.num_blocks}",
            f"{b.cached_free} free ones keep a prefix",
        ),
        (
            "Prefix-cache hits",
            f"{b.prefix_hits:,}",
            f"prompt blocks reused instead of computed: {b.hit_rate:.0%} of those looked up",
        ),
    ]
    if s.draft_checks:
        tiles.append(
            (
                "Guesses accepted",
                f"{s.acceptance_rate:.0%}",
                f"{s.tokens_per_check:.2f} tokens per target pass over a draft's guesses",
            )
        )
    return tiles
