"""The Federated page through AppTest: the label mix follows alpha, a run streams its rounds, the
page's numbers are the backend's for the same settings, and a bad setting gets a message."""

import numpy as np
from streamlit.testing.v1 import AppTest

from maaslab.federated.fedavg import run_federated
from maaslab.federated.lab import FederatedJob, LabConfig, build_federation


def _run_to_end(at: AppTest, timeout: float = 90) -> FederatedJob:
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception, [e.stack_trace for e in at.exception]
    job = at.session_state["federated.job"]
    assert job.join(timeout), "the federation did not end"
    at.run()
    assert not at.exception, [e.stack_trace for e in at.exception]
    return job


def _mix_counts(at: AppTest) -> str:
    return next(c.proto.spec for c in at.get("plotly_chart") if "Who holds what" in c.proto.spec)


def test_alpha_redraws_who_holds_what(open_page, page_text):
    at = open_page("federated")
    assert "press **Run**" in page_text(at)
    skewed = _mix_counts(at)
    assert "Dirichlet alpha = 0.3" in skewed
    at.select_slider(key="federated.alpha_stop").set_value("IID").run()
    assert not at.exception
    iid = _mix_counts(at)
    assert "(IID)" in iid and iid != skewed


def test_a_run_streams_rounds_and_matches_the_backend(open_page, page_text):
    at = open_page("federated")
    at.slider(key="federated.rounds").set_value(3)
    at.slider(key="federated.n_clients").set_value(3).run()
    job = _run_to_end(at)
    text = page_text(at)
    assert "Status: done" in text and "round 3/3" in text and "test accuracy" in text
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Validation accuracy per round" in c for c in charts)
    assert any("Client drift per round" in c for c in charts)
    # the page's run is the backend's run for the same settings
    f = build_federation(LabConfig(rounds=3, n_clients=3))
    expected = run_federated(f.model, f.data, f.partition, f.config)
    np.testing.assert_allclose(
        job.result.column("val_accuracy"), expected.column("val_accuracy"), atol=1e-12
    )
    assert job.result.test_accuracy == expected.test_accuracy
    assert f"{expected.test_accuracy:.3f}" in text


def test_stop_ends_a_run_early(open_page, page_text):
    at = open_page("federated")
    at.slider(key="federated.rounds").set_value(50).run()
    next(b for b in at.button if b.label == "Run").click().run()
    job = at.session_state["federated.job"]
    next(b for b in at.button if b.label == "Stop").click().run()
    assert job.join(60)
    at.run()
    assert not at.exception
    assert job.result.stopped_early and len(job.result.rounds) < 51


def test_fedprox_mu_and_an_impossible_split_get_messages(open_page, page_text):
    at = open_page("federated")
    assert at.select_slider(key="federated.mu").disabled  # FedAvg has no mu
    at.radio(key="federated.algorithm").set_value("fedprox").run()
    assert not at.select_slider(key="federated.mu").disabled
    # 20 clients with alpha 0.05 on the 2-class reviews leave clients empty: refused, explained
    at.selectbox(key="federated.dataset").set_value("reviews-minilm")
    at.slider(key="federated.n_clients").set_value(20)
    at.select_slider(key="federated.alpha_stop").set_value("0.05").run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "raise alpha" in errors
    assert next(b for b in at.button if b.label == "Run").disabled


def test_dp_and_masked_aggregation_show_epsilon_and_what_the_server_sees(open_page, page_text):
    at = open_page("federated")
    at.slider(key="federated.rounds").set_value(2)
    at.slider(key="federated.n_clients").set_value(3)
    at.toggle(key="federated.dp").set_value(True)
    at.radio(key="federated.aggregation").set_value("masked").run()
    job = _run_to_end(at)
    text = page_text(at)
    assert f"epsilon {job.result.epsilon:.2f} at delta 1e-05" in text
    assert job.aggregation.method == "masked"
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("update + pairwise masks" in c for c in charts)
    # the page's run is the backend's: the same settings give the same epsilon and accuracy
    f = build_federation(LabConfig(rounds=2, n_clients=3, dp=True, aggregation="masked"))
    expected = run_federated(f.model, f.data, f.partition, f.config)
    assert job.result.epsilon == expected.epsilon
    assert job.result.test_accuracy == expected.test_accuracy


def test_the_trade_off_is_measured_and_drawn(open_page, page_text):
    at = open_page("federated")
    next(b for b in at.button if b.label == "Measure the trade-off").click().run()
    assert not at.exception
    task = at.session_state["federated.tradeoff_task"]
    assert task.join(120), "the trade-off did not end"
    at.run()
    assert not at.exception, [e.stack_trace for e in at.exception]
    result = at.session_state["federated.tradeoff"]
    assert len(result.points) == 5  # the plain run and four noise levels
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Privacy against utility" in c for c in charts)


def test_clients_per_round_samples_that_many_each_round(open_page, page_text):
    at = open_page("federated")
    at.slider(key="federated.rounds").set_value(3)
    at.slider(key="federated.n_clients").set_value(4).run()
    at.select_slider(key="federated.per_round").set_value("2").run()
    job = _run_to_end(at)
    assert [len(r.clients) for r in job.result.rounds] == [0, 2, 2, 2]
    # fewer clients than the sample: the choice falls back to all, no error
    at.select_slider(key="federated.per_round").set_value("3").run()
    at.slider(key="federated.n_clients").set_value(2).run()
    assert not at.exception and at.select_slider(key="federated.per_round").value == "all"
