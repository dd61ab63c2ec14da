"""One interface for FedAvg's average, three ways for the server to compute it.

FedAvg's new global weights are sum_k n_k * w_k / sum_k n_k. Every client turns its weights into
an example-weighted update u_k = [n_k * w_k, n_k] (the flattened floating-point tensors times its
example count, then the count); the server needs only the sum of the u_k, whose last coordinate
is the total weight it divides by. How the server gets that sum is the method:

- "plain": the clients send u_k in the clear; the server sees every client's weights.
- "masked": secure aggregation with pairwise masks (secagg): the server sees masked vectors,
  each indistinguishable from noise, whose sum is the true sum.
- "ckks": homomorphic encryption (homomorphic): the server adds ciphertexts it cannot decrypt;
  the key holder decrypts the sum.

`aggregate` takes state_dicts and returns the averaged state_dict (integer buffers, such as a
BatchNorm's step counter, are not averaged: the first state's are kept, as in
fedavg.weighted_average); `aggregate_vectors` does the same on flat vectors. Both return an
`Aggregation`: the average, what the server saw from each client, and the cost in bytes and
seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from maaslab.errors import MaaslabError
from maaslab.federated.homomorphic import CKKSKeys, encrypted_sum
from maaslab.federated.secagg import SecAggConfig, dequantize, secure_sum

AGGREGATIONS = ("plain", "masked", "ckks")


@dataclass(frozen=True)
class Aggregation:
    """One round's average, what the server saw, and what it cost."""

    method: str  # "plain", "masked" or "ckks"
    vector: np.ndarray  # the averaged flat vector (float64): sum_k n_k x_k / sum_k n_k
    total_weight: float  # sum_k n_k, as the server decoded it from the sum's last coordinate
    # Each client's example-weighted update [n_k * x_k, n_k] (float64): kept for comparison,
    # the server receives these only under "plain".
    updates: tuple[np.ndarray, ...]
    # What reached the server from each client: "plain", the update itself; "masked", the
    # masked ring vector read as signed fixed-point numbers (aligned with `updates`); "ckks",
    # the serialized ciphertexts' bytes (uint8, not aligned with anything).
    seen: tuple[np.ndarray, ...]
    # Bytes one client uploads per round: plain, the vector at its own dtype plus a float64
    # count; masked, ring_bits per coordinate; ckks, the serialized ciphertexts (mean).
    bytes_per_client: float
    # One-time bytes before the first round: ckks's contexts (public key to each client,
    # parameters to the server). Masked: 0 here, as the key agreement is simulated (a real
    # one sends each client's 32-byte public key to the K-1 others every round).
    setup_bytes: int
    encode_seconds: float  # all clients: weighting, and quantizing + masking or encrypting
    aggregate_seconds: float  # the server's sum
    decode_seconds: float  # decoding or decrypting the sum, and dividing by the total weight
    setup_seconds: float  # one-time: ckks key generation; 0 otherwise
    # A proven max |vector - plain's vector| per coordinate, the error the method adds to
    # plain float64 averaging: 0 for plain, the fixed-point rounding bound for masked; None for
    # ckks, whose noise has no hard bound here (about 1e-8 absolute on the sum at the defaults).
    error_bound: float | None
    average: dict[str, torch.Tensor] | None = None  # the averaged state_dict (aggregate only)

    @property
    def seconds(self) -> float:
        """Per-round seconds: encode + aggregate + decode (setup excluded)."""
        return self.encode_seconds + self.aggregate_seconds + self.decode_seconds


def flatten_state(state: dict[str, torch.Tensor]) -> np.ndarray:
    """The floating-point tensors of a state_dict as one CPU vector, in the state's order."""
    floats = [t.detach().reshape(-1).cpu() for t in state.values() if t.is_floating_point()]
    if not floats:
        raise MaaslabError("this state_dict has no floating-point tensor to average")
    return torch.cat(floats).numpy()


def unflatten_state(vector: np.ndarray, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`vector` back into `like`'s floating tensors (shapes, dtypes, devices); the rest copied."""
    flat = torch.from_numpy(np.ascontiguousarray(vector, dtype=np.float64))
    held = sum(t.numel() for t in like.values() if t.is_floating_point())
    if held != flat.numel():
        raise MaaslabError(f"the vector has {flat.numel()} numbers, the state_dict holds {held}")
    out, at = {}, 0
    for name, t in like.items():
        if not t.is_floating_point():
            out[name] = t.clone()
            continue
        out[name] = flat[at : at + t.numel()].reshape(t.shape).to(t.dtype).to(t.device)
        at += t.numel()
    return out


def weighted_update(x: np.ndarray, weight: float) -> np.ndarray:
    """A client's example-weighted update [weight * x, weight] (float64)."""
    return np.append(float(weight) * np.asarray(x, dtype=np.float64).ravel(), float(weight))


def aggregate_vectors(
    vectors: Sequence[np.ndarray],
    weights: Sequence[float],
    method: str = "plain",
    *,
    clients: Sequence[int] | None = None,
    round_: int = 0,
    seed: int = 0,
    secagg: SecAggConfig | None = None,
    keys: CKKSKeys | None = None,
) -> Aggregation:
    """FedAvg's weighted average of flat vectors, computed by `method`; see Aggregation.

    Parameters
    ----------
    vectors : one flat float vector per client (its weights), all the same length.
    weights : the clients' example counts n_k (non-negative, positive sum).
    method : "plain", "masked" or "ckks".
    clients, round_, seed : the clients' ids (default 0..K-1), the round and the run's seed,
        from which the masks' pair seeds derive ("masked" only).
    secagg : the fixed-point ring of "masked" (None: SecAggConfig()).
    keys : the CKKS keys of "ckks" (homomorphic.make_keys, once per run); None makes fresh ones.
    """
    if method not in AGGREGATIONS:
        raise MaaslabError(
            f"unknown aggregation {method!r}: choose one of {', '.join(AGGREGATIONS)}"
        )
    if not vectors or len(vectors) != len(weights):
        raise MaaslabError(
            f"averaging needs one weight per update and at least one update, got "
            f"{len(vectors)} updates and {len(weights)} weights"
        )
    if not (sum(weights) > 0 and all(w >= 0 for w in weights)):
        raise MaaslabError(f"weights must be non-negative with a positive sum, got {weights}")
    sizes = {np.asarray(v).size for v in vectors}
    if len(sizes) != 1:
        raise MaaslabError(f"every update must have the same length, got sizes {sorted(sizes)}")
    started = time.perf_counter()
    updates = tuple(weighted_update(v, w) for v, w in zip(vectors, weights, strict=True))
    weighting = time.perf_counter() - started
    setup_bytes, setup_seconds = 0, 0.0
    if method == "plain":
        summing = time.perf_counter()
        total = np.zeros_like(updates[0])
        for u in updates:
            total += u
        encode, aggregate_s, decode = weighting, time.perf_counter() - summing, 0.0
        seen = updates
        first = np.asarray(vectors[0])
        bytes_per_client = first.size * first.itemsize + 8.0
        bound: float | None = 0.0
    elif method == "masked":
        ring = SecAggConfig() if secagg is None else secagg
        s = secure_sum(updates, clients, seed=seed, round_=round_, cfg=ring)
        total, seen = s.total, tuple(dequantize(m, ring) for m in s.masked)
        encode, aggregate_s, decode = weighting + s.mask_seconds, s.sum_seconds, s.decode_seconds
        bytes_per_client, bound = float(s.bytes_per_client), s.error_bound
    else:
        e = encrypted_sum(updates, keys)
        total = e.total
        seen = tuple(np.frombuffer(b"".join(cs), dtype=np.uint8) for cs in e.ciphertexts)
        encode, aggregate_s, decode = (
            weighting + e.encrypt_seconds,
            e.sum_seconds,
            e.decrypt_seconds,
        )
        bytes_per_client, bound = e.bytes_per_client, None
        setup_bytes, setup_seconds = e.setup_bytes, e.setup_seconds
    dividing = time.perf_counter()
    total_weight = float(total[-1])
    vector = total[:-1] / total_weight
    decode += time.perf_counter() - dividing
    if method == "masked":
        peak = max(float(np.max(np.abs(np.asarray(v, dtype=np.float64)))) for v in vectors)
        bound = _masked_bound(bound, total_weight, peak, len(vectors))
    return Aggregation(
        method=method,
        vector=vector,
        total_weight=total_weight,
        updates=updates,
        seen=seen,
        bytes_per_client=bytes_per_client,
        setup_bytes=setup_bytes,
        encode_seconds=encode,
        aggregate_seconds=aggregate_s,
        decode_seconds=decode,
        setup_seconds=setup_seconds,
        error_bound=bound,
    )


def aggregate(
    states: Sequence[dict[str, torch.Tensor]],
    weights: Sequence[float],
    method: str = "plain",
    *,
    clients: Sequence[int] | None = None,
    round_: int = 0,
    seed: int = 0,
    secagg: SecAggConfig | None = None,
    keys: CKKSKeys | None = None,
) -> Aggregation:
    """FedAvg's weighted average of state_dicts by `method`; `.average` is the new global state.

    With method="plain" the average equals fedavg.weighted_average's bit for bit. The other
    arguments are aggregate_vectors'.
    """
    if not states:
        raise MaaslabError("averaging needs at least one state_dict")
    result = aggregate_vectors(
        [flatten_state(s) for s in states],
        weights,
        method,
        clients=clients,
        round_=round_,
        seed=seed,
        secagg=secagg,
        keys=keys,
    )
    return replace(result, average=unflatten_state(result.vector, states[0]))


def _masked_bound(sum_bound: float, total_weight: float, peak: float, n: int) -> float:
    """Bound on |masked average - plain average| when the decoded sum is within `sum_bound`.

    The sum's numerator and its total weight each carry at most b, and
    (S + e) / (W + d) - S / W = (e - (S / W) d) / (W + d), so the average is off by at most
    b (1 + |avg|) / (W - b), |avg| <= peak = max |x_k|. Plain's own float64 sum and both
    divisions round too: (n + 2) * 2^-52 * peak covers them.
    """
    return sum_bound * (1.0 + peak) / (total_weight - sum_bound) + (n + 2) * 2.0**-52 * peak
