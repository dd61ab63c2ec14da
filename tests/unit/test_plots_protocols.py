"""The protocol lab's figure, checked as data against a hand-made report."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest

from maaslab.plots.protocols import protocol_figure
from maaslab.serve.protocols import PROTOCOLS, ProtocolRecord, ProtocolReport

# (request bytes per row, response bytes per row, p50 ms at 1 row) of each protocol
SHAPES = {"REST-JSON": (300, 220, 5.0), "REST-binary": (260, 40, 4.0), "gRPC": (256, 40, 3.0)}


@pytest.fixture
def report() -> ProtocolReport:
    """Three protocols at 1, 32 and 1,024 rows, listed out of order."""
    records = [
        ProtocolRecord(p, n, 100 + q * n, 50 + s * n, 0.01 * n, 0.02 * n, t + n / 100, t + n / 50)
        for n in (32, 1, 1024)
        for p, (q, s, t) in SHAPES.items()
    ]
    return ProtocolReport(
        model="digits-cnn",
        rows=(1, 32, 1024),
        records=tuple(records),
        identical={1: True, 32: True, 1024: True},
        repeats=20,
    )


def by_name(fig: go.Figure, name: str):
    return next(t for t in fig.data if t.name == name)


def test_bytes_panel_is_log_log_with_a_request_and_a_response_line_per_protocol(report):
    fig = protocol_figure(report)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    for protocol, (q, s, _) in SHAPES.items():
        request = by_name(fig, protocol)
        assert request.xaxis == "x" and list(request.x) == [1, 32, 1024]  # sorted by rows
        assert list(request.y) == [100 + q * n for n in (1, 32, 1024)]
        response = by_name(fig, f"{protocol} response")
        assert list(response.y) == [50 + s * n for n in (1, 32, 1024)]
        assert response.line.dash == "dot" and response.line.color == request.line.color
    assert [t.name for t in fig.data if t.showlegend is not False] == list(PROTOCOLS)


def test_latency_panel_has_p50_per_protocol_with_p90_in_the_hover(report):
    fig = protocol_figure(report)
    grpc = by_name(fig, "gRPC p50")
    assert grpc.xaxis == "x2" and fig.layout.xaxis2.type == "log"
    assert list(grpc.y) == pytest.approx([3.01, 3.32, 13.24])
    assert list(grpc.customdata) == pytest.approx([3.02, 3.64, 23.48])
    assert "bit-identical" in fig.layout.title.text and "20 calls" in fig.layout.title.text


def test_a_report_with_differing_outputs_says_so(report):
    bad = ProtocolReport(
        report.model, report.rows, report.records, {1: True, 32: False, 1024: True}, 2
    )
    assert "NOT identical" in protocol_figure(bad).layout.title.text
