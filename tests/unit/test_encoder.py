"""The pretrained MiniLM encoder: loads offline from the wheel, matches sentence-transformers."""

import numpy as np
import pytest
import torch

from maaslab import MaaslabError
from maaslab.models.encoder import SentenceEncoder, mean_pool, nearest, resolve_source
from maaslab.paths import minilm_folder

SENTENCES = [
    "The battery lasts all day and the screen is bright.",
    "A cat sleeps on the warm windowsill.",
    "This phone's battery life is excellent.",
    "Kittens like to nap in the sun.",
]


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder("minilm", device="cpu")


def test_matches_sentence_transformers_on_the_same_folder(encoder):
    """Oracle: our AutoModel + mean pooling gives sentence-transformers' embeddings."""
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(minilm_folder()), device="cpu")
    theirs = reference.encode(SENTENCES, normalize_embeddings=True)
    ours = encoder.encode(SENTENCES).embeddings
    assert ours.shape == (4, 384) == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_similar_sentences_are_nearest(encoder):
    emb = encoder.encode(SENTENCES).embeddings
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    order, scores = nearest(emb[[0, 1]], emb, k=2)
    assert order[:, 0].tolist() == [0, 1]  # each sentence is closest to itself
    assert order[:, 1].tolist() == [2, 3]  # then to the one about the same thing
    assert np.all(scores[:, 0] > scores[:, 1])


def test_long_text_is_truncated_and_said_so(encoder):
    out = encoder.encode(["short", "word " * 5000])
    assert out.truncated == (False, True) and out.embeddings.shape == (2, 384)


def test_rows_come_back_in_the_callers_order_whatever_the_batches(encoder):
    # Texts are batched by length; each row and flag must still belong to its own text.
    texts = ["word " * 5000, "a cat sat", "the model server answers many users at once", "ok"]
    together = encoder.encode(texts, batch_size=2)
    alone = np.concatenate([encoder.encode([t]).embeddings for t in texts])
    assert together.truncated == (True, False, False, False)
    np.testing.assert_allclose(together.embeddings, alone, atol=1e-5)
    assert np.abs(together.embeddings - alone).max() < 1e-5 < np.abs(alone[1] - alone[3]).max()


@pytest.mark.parametrize("bad", [[], [""], ["ok", "   "], "a string", [3]])
def test_bad_input_is_refused(encoder, bad):
    with pytest.raises(MaaslabError):
        encoder.encode(bad)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 2.0]]


def test_sources(tmp_path):
    assert resolve_source("minilm") == str(minilm_folder())
    assert resolve_source(minilm_folder()) == str(minilm_folder())
    with pytest.raises(MaaslabError, match=r"no config\.json"):
        resolve_source(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(MaaslabError, match=r"no \.safetensors"):
        resolve_source(tmp_path)
    with pytest.raises(MaaslabError, match="hub ids need a connection"):
        resolve_source("sentence-transformers/all-MiniLM-L6-v2")  # the suite runs offline
    with pytest.raises(MaaslabError, match="no model folder"):
        resolve_source("does-not-exist")
