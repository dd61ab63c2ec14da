"""Figures and table rows of the service view, from the JSON the server returns."""

from maaslab.plots.service import (
    limits_text,
    rollout_figure,
    rollout_title,
    tenant_rows,
    tenant_usage,
)

NO_LIMITS = {"requests_per_s": None, "burst": None, "tokens_per_min": None, "daily_requests": None}
STUDENT = {"requests_per_s": 20, "burst": 40, "tokens_per_min": 20000, "daily_requests": 5000}


def tenant(name, role, limits, requests, compute=0.0, **refused):
    """One entry of GET /usage/tenants."""
    return {
        "tenant": name,
        "role": role,
        "limits": limits,
        "usage": {
            "requests": requests,
            "input_tokens": 0,
            "output_tokens": 0,
            "compute_seconds": compute,
            "refused": {"daily": 0, "rate": 0, "tokens": 0, **refused},
        },
    }


TENANTS = [
    tenant("teacher", "admin", NO_LIMITS, 3),
    tenant("student-01", "user", STUDENT, 120, 0.39412, rate=2470),
    tenant("student-02", "user", STUDENT, 80, 0.2, daily=5, tokens=1),
]


def rollout(**changes):
    """GET /v2/models/digits/rollout after version 2 arrived."""
    state = {
        "name": "digits",
        "versions": ["1", "2"],
        "champion": "1",
        "challenger": "2",
        "canary_percent": 30.0,
        "shadow": True,
        "history": [],
        "requests": {"1": 70, "2": 30},
        "shadow_stats": {"compared": 40, "agreed": 38, "skipped": 2, "agreement": 0.95},
    }
    return {**state, **changes}


def test_tenant_rows_carry_usage_refusals_and_limits():
    rows = tenant_rows(TENANTS)
    assert [r["tenant"] for r in rows] == ["teacher", "student-01", "student-02"]
    teacher, first, second = rows
    assert teacher["limits"] == "no limit" and teacher["role"] == "admin"
    assert first["answered"] == 120 and first["429 rate"] == 2470 and first["429 daily"] == 0
    assert first["compute (s)"] == 0.394
    assert first["limits"] == "20/s (burst 40) · 5000/day · 20000 tok/min"
    assert (second["429 daily"], second["429 tokens"]) == (5, 1)


def test_tenant_usage_puts_answers_and_refusals_by_reason_side_by_side():
    fig = tenant_usage(TENANTS)
    by_name = {trace.name: trace for trace in fig.data}
    assert list(by_name) == ["answered", "429 rate", "429 daily", "429 tokens"]
    assert list(by_name["answered"].y) == [3, 120, 80]
    assert list(by_name["429 rate"].y) == [0, 2470, 0]
    assert list(by_name["429 daily"].y) == [0, 0, 5]
    assert by_name["answered"].xaxis == "x" and by_name["429 rate"].xaxis == "x2"
    assert fig.layout.barmode == "stack"


def test_rollout_figure_labels_versions_and_counts_shadow_copies():
    fig = rollout_figure(rollout())
    versions, shadow = fig.data
    assert list(versions.x) == ["v1 (champion)", "v2 (challenger)"]
    assert list(versions.y) == [70, 30]
    assert versions.marker.color[0] != versions.marker.color[1]
    assert list(shadow.x) == ["agreed", "disagreed", "skipped"]
    assert list(shadow.y) == [38, 2, 2]
    titles = [a.text for a in fig.layout.annotations]
    assert "Shadow agreement 95.0% of 40" in titles
    assert fig.layout.title.text == (
        "digits: champion v1, challenger v2 gets 30 % of the traffic, shadow on"
    )


def test_a_rollout_with_one_version_and_no_comparisons():
    state = rollout(
        versions=["1"],
        challenger=None,
        canary_percent=0.0,
        shadow=False,
        requests={"1": 5},
        shadow_stats={"compared": 0, "agreed": 0, "skipped": 0, "agreement": None},
    )
    fig = rollout_figure(state)
    assert list(fig.data[0].x) == ["v1 (champion)"]
    assert "Shadow agreement: no comparison yet" in [a.text for a in fig.layout.annotations]
    assert rollout_title(state) == "digits: champion v1, no challenger"


def test_after_a_promote_the_old_champion_is_a_plain_version():
    state = rollout(champion="2", challenger=None, history=["1"], canary_percent=0.0)
    assert list(rollout_figure(state).data[0].x) == ["v1", "v2 (champion)"]


def test_limits_text_names_only_the_limits_set():
    assert limits_text({**NO_LIMITS, "requests_per_s": 2.5}) == "2.5/s"
    assert limits_text({**NO_LIMITS, "daily_requests": 100}) == "100/day"
