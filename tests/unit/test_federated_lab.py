"""The Federated page's backend: its datasets, its config's checks, and the live job."""

import numpy as np
import pytest

from maaslab.errors import MaaslabError
from maaslab.federated.datasets import federated_dataset, review_features_dataset
from maaslab.federated.lab import FederatedJob, LabConfig, build_federation
from maaslab.models.encoder import SentenceEncoder
from maaslab.reviews import load_reviews


def test_review_features_are_minilm_embeddings_with_the_corpus_split():
    data = review_features_dataset(seed=0)
    train, test = load_reviews("train"), load_reviews("test")
    assert data.n_features == 384 and data.class_names == ("negative", "positive")
    assert len(data.y_train) + len(data.y_val) == len(train) and len(data.y_test) == len(test)
    # the test rows are the corpus's test reviews, embedded and scaled by sqrt(384)
    first = SentenceEncoder("minilm", device="cpu").encode([test.texts[0]]).embeddings[0]
    np.testing.assert_allclose(data.X_test[0], first * np.sqrt(384), atol=1e-4)
    assert data.y_test[0] == test.labels[0]
    # seeded: the same seed, the same validation rows; another seed, others
    again, other = review_features_dataset(seed=0), review_features_dataset(seed=1)
    np.testing.assert_array_equal(again.X_val, data.X_val)
    assert not np.array_equal(other.X_val, data.X_val)


def test_unknown_dataset_and_bad_settings_are_refused_with_what_to_do():
    with pytest.raises(MaaslabError, match="choose one of"):
        federated_dataset("mnist")
    with pytest.raises(MaaslabError, match="n_clients must be between 2 and 20"):
        LabConfig(n_clients=50)
    with pytest.raises(MaaslabError, match="alpha must be a positive number"):
        LabConfig(alpha=0.0)
    with pytest.raises(MaaslabError, match="clients_per_round must be between 1 and n_clients=5"):
        LabConfig(clients_per_round=6)
    with pytest.raises(MaaslabError, match="algorithm='fedprox'"):
        LabConfig(mu=0.1)


def test_the_same_settings_build_the_same_federation():
    a, b = build_federation(LabConfig(seed=3)), build_federation(LabConfig(seed=3))
    for x, y in zip(a.partition.indices, b.partition.indices, strict=True):
        np.testing.assert_array_equal(x, y)
    for (_, p), (_, q) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert p.equal(q)
    c = build_federation(LabConfig(seed=4))
    assert not all(
        len(x) == len(y) and np.array_equal(x, y)
        for x, y in zip(a.partition.indices, c.partition.indices, strict=True)
    )


def test_a_job_publishes_rounds_and_stops_when_cancelled():
    job = FederatedJob(build_federation(LabConfig(rounds=50, n_clients=3))).start()
    job.cancel()
    assert job.join(60)
    assert job.error is None and job.result.stopped_early
    assert job.live is job.result and len(job.result.rounds) < 51
