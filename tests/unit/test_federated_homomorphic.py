import numpy as np
import pytest
import tenseal as ts
import torch

from maaslab import MaaslabError
from maaslab.federated import weighted_average
from maaslab.federated.aggregation import aggregate, aggregate_vectors
from maaslab.federated.homomorphic import (
    CKKSConfig,
    chunks_needed,
    decrypt_sum,
    encrypt_update,
    encrypted_sum,
    make_keys,
    sum_ciphertexts,
)
from maaslab.models import build_model

# The stated precision at the default parameters (scale 2^40): CKKS's noise is about 1e-8
# absolute on a sum of a few vectors, so 1e-6 absolute and 1e-9 relative hold with margin.
ATOL, RTOL = 1e-6, 1e-9


@pytest.fixture(scope="module")
def keys():
    return make_keys()


def _updates(k=4, size=5000, scale=300.0, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, scale, size) for _ in range(k)]


def test_decrypted_sum_equals_the_plain_sum_within_ckks_precision(keys):
    xs = _updates()  # 5000 numbers: two ciphertexts of 4096 slots, the second part full
    result = encrypted_sum(xs, keys)
    truth = np.sum(xs, axis=0)
    assert result.total.shape == truth.shape
    np.testing.assert_allclose(result.total, truth, rtol=RTOL, atol=ATOL)
    assert len(result.ciphertexts) == 4
    assert all(len(c) == chunks_needed(5000) == 2 for c in result.ciphertexts)
    sent = [sum(len(b) for b in cs) for cs in result.ciphertexts]
    assert result.bytes_per_client == np.mean(sent)
    assert result.bytes_per_client > 2 * 200_000  # two ciphertexts of ~235 KB, full or not
    clients, server = len(keys.client_context), len(keys.server_context)
    assert result.setup_bytes == 4 * clients + server
    assert server < 200 < 100_000 < clients  # parameters alone vs parameters + public key
    assert min(result.encrypt_seconds, result.sum_seconds, result.decrypt_seconds) > 0


def test_the_server_adds_but_cannot_decrypt_and_a_client_cannot_decrypt_either(keys):
    server = ts.context_from(keys.server_context)
    client = ts.context_from(keys.client_context)
    assert not server.is_private() and not client.is_private()
    x = np.arange(10.0)
    summed = sum_ciphertexts(server, [encrypt_update(client, x, 4096)] * 3)
    on_server = ts.ckks_vector_from(server, summed[0])
    with pytest.raises(ValueError, match="secret_key"):
        on_server.decrypt()
    with pytest.raises(ValueError, match="secret_key"):
        ts.ckks_vector_from(client, summed[0]).decrypt()
    with pytest.raises(ValueError, match="doesn't support encryption"):
        ts.ckks_vector(server, x)  # no public key either: the server cannot forge an update
    np.testing.assert_allclose(decrypt_sum(keys.secret, summed), 3 * x, atol=ATOL)


def test_the_server_refuses_a_context_that_holds_the_secret_key(keys):
    with pytest.raises(MaaslabError, match="server_context"):
        sum_ciphertexts(keys.secret, [[b""]])


def test_ckks_aggregate_matches_weighted_average(keys):
    states = []
    for s in range(3):
        torch.manual_seed(s)
        model = build_model("mlp", in_features=64, hidden=(16,), out_features=10)
        states.append({n: t.detach().clone() for n, t in model.state_dict().items()})
    weights = [300, 412, 100]
    reference = weighted_average(states, weights)
    result = aggregate(states, weights, "ckks", keys=keys)
    assert result.method == "ckks" and result.error_bound is None
    assert result.total_weight == pytest.approx(812, abs=ATOL)
    for name, ref in reference.items():
        torch.testing.assert_close(result.average[name], ref, rtol=0, atol=ATOL)
    # what the server saw is ciphertext bytes, each client's its own
    assert all(s.dtype == np.uint8 for s in result.seen)
    assert np.mean([s.size for s in result.seen]) == result.bytes_per_client
    assert not np.array_equal(result.seen[0][:1000], result.seen[1][:1000])
    assert result.setup_seconds == keys.seconds


def test_fresh_keys_when_none_are_given_and_each_encryption_is_randomised():
    xs = _updates(k=2, size=10)
    a = aggregate_vectors(xs, [1, 2], "ckks")
    b = aggregate_vectors(xs, [1, 2], "ckks")
    assert a.setup_seconds > 0 and a.setup_bytes > 0
    assert not np.array_equal(a.seen[0], b.seen[0])  # new keys, new noise: new ciphertexts
    np.testing.assert_allclose(a.vector, b.vector, rtol=RTOL, atol=ATOL)


def test_bad_parameters_are_refused_with_what_to_do():
    with pytest.raises(MaaslabError, match="poly_modulus_degree must be one of"):
        CKKSConfig(poly_modulus_degree=5000)
    with pytest.raises(MaaslabError, match="allows at most 218: drop or shrink a prime"):
        CKKSConfig(coeff_mod_bit_sizes=(60, 60, 60, 60))
    with pytest.raises(MaaslabError, match="at least two primes of 20 to 60 bits"):
        CKKSConfig(coeff_mod_bit_sizes=(61, 40))
    with pytest.raises(MaaslabError, match="at least two primes"):
        CKKSConfig(coeff_mod_bit_sizes=(60,))
    with pytest.raises(MaaslabError, match="scale_bits must be between 20"):
        CKKSConfig(scale_bits=10)
    with pytest.raises(MaaslabError, match="scale_bits must be between 20 and 56"):
        CKKSConfig(coeff_mod_bit_sizes=(60, 60), scale_bits=58)


def test_a_sum_beyond_what_decrypts_is_refused():
    small = make_keys(
        CKKSConfig(poly_modulus_degree=2048, coeff_mod_bit_sizes=(30, 24), scale_bits=24)
    )
    assert small.config.capacity == 2.0**4
    with pytest.raises(MaaslabError, match="lower scale_bits or add a prime"):
        encrypted_sum([np.full(4, 10.0), np.full(4, 10.0)], small)
    with pytest.raises(MaaslabError, match="lower scale_bits or add a prime"):
        encrypted_sum([np.array([np.nan])], small)
    result = encrypted_sum([np.full(4, 3.0), np.full(4, -2.0)], small)
    np.testing.assert_allclose(result.total, np.ones(4), atol=1e-3)
