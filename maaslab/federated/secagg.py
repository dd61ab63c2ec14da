"""Secure aggregation with pairwise masks: the server learns the sum of the updates, not one.

Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning" (CCS 2017),
in its simplest form. Every pair of clients i < j agrees on a secret seed s_ij that the server
does not know. Each client stretches its seeds into masks with a pseudo-random generator (PRG)
and sends

    y_i = x_i + sum_{j > i} PRG(s_ij) - sum_{j < i} PRG(s_ji)

Each mask is added by one client of its pair and subtracted by the other, so in the server's sum
every mask meets its negative and

    sum_i y_i = sum_i x_i.

One y_i alone is x_i plus a uniformly random vector: it says nothing about x_i.

For FedAvg a client's x_i is its example-weighted update [n_i * w_i, n_i] (the flattened weights
times its example count, and the count itself as a last coordinate), so the server divides the
first part of the sum by the last coordinate and gets FedAvg's average without learning any
client's weights or count (aggregation.aggregate_vectors does this).

Floating point. Masks that cancel must cancel exactly, and float additions round: a float mask
large enough to hide x_i would swallow x_i's low digits. So, as in the paper, the arithmetic is
in the integer ring Z_(2^ring_bits): a client first rounds x_i to fixed point,
round(x_i * 2^frac_bits), then adds masks modulo 2^ring_bits (numpy's uint64 wraps around by
itself at 2^64). In the ring the masks cancel exactly; the only error is each client's rounding,
at most 2^-(frac_bits + 1) per coordinate, so the decoded sum is within
n_clients * 2^-(frac_bits + 1) (+ float64's own rounding of the result) of the true sum
(quantization_bound). The ring holds sums of magnitude below 2^(ring_bits - 1 - frac_bits): the
defaults (64, 32) hold +-2^31 with a resolution of 2^-32.

What this simulation simplifies, and what a real deployment does instead:
- Key agreement: here s_ij is derived from (seed, round, i, j). A real client publishes a
  Diffie-Hellman public key through the server (X25519, say); i and j each combine their own
  secret key with the other's public key into the same shared secret, which the server, seeing
  only public keys, cannot compute. Seeds are fresh every round: a mask reused in two rounds
  cancels in the difference of a client's two masked updates and leaks the difference of its
  true ones, so `round_` is part of every derivation.
- PRG: numpy's PCG64 is fast and uniform, not cryptographic; a real one is AES-CTR or ChaCha20.
- Dropped clients are out of scope: if client j sends nothing, the masks it shares with the
  others do not cancel and the sum is garbage. Bonawitz et al. recover them with Shamir secret
  shares of every client's key (and a second, self mask so that a late update cannot then be
  unmasked alone); here every sampled client answers.
- One client alone has no pair: its "masked" update is its update, and the sum the server
  learns is that update. Secure aggregation hides a client among the others.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maaslab.errors import MaaslabError


@dataclass(frozen=True)
class SecAggConfig:
    """The fixed-point ring the masked updates live in."""

    # Masks and sums are integers modulo 2^ring_bits; 64 is numpy uint64's own wrap-around.
    # Fewer bits send fewer bytes per coordinate but hold smaller sums.
    ring_bits: int = 64
    # Fixed point: x is sent as round(x * 2^frac_bits), a resolution of 2^-frac_bits. With
    # ring_bits=64 the default 32 leaves 31 bits for the integer part: sums within +-2^31.
    frac_bits: int = 32

    def __post_init__(self) -> None:
        if not 8 <= self.ring_bits <= 64:
            raise MaaslabError(
                f"ring_bits must be between 8 and 64 (a uint64 holds the ring), "
                f"got {self.ring_bits}"
            )
        if not 0 <= self.frac_bits <= self.ring_bits - 2:
            raise MaaslabError(
                f"frac_bits must be between 0 and ring_bits - 2 = {self.ring_bits - 2} (one bit "
                f"is the sign, at least one the integer part), got {self.frac_bits}"
            )

    @property
    def modulus_mask(self) -> np.uint64:
        """2^ring_bits - 1: `& modulus_mask` reduces a uint64 modulo 2^ring_bits."""
        return np.uint64((1 << self.ring_bits) - 1)

    @property
    def capacity(self) -> float:
        """The largest |sum| the ring holds: 2^(ring_bits - 1 - frac_bits)."""
        return 2.0 ** (self.ring_bits - 1 - self.frac_bits)


def quantize(x: np.ndarray, cfg: SecAggConfig = SecAggConfig()) -> np.ndarray:
    """round(x * 2^frac_bits) as a ring element (uint64, two's complement for negatives)."""
    scaled = np.rint(np.asarray(x, dtype=np.float64) * 2.0**cfg.frac_bits)
    if not np.all(np.abs(scaled) < 2.0 ** (cfg.ring_bits - 1)):
        raise MaaslabError(
            f"a value beyond +-{cfg.capacity:g} (or not finite) does not fit the ring of "
            f"SecAggConfig(ring_bits={cfg.ring_bits}, frac_bits={cfg.frac_bits}): lower "
            "frac_bits or raise ring_bits"
        )
    return scaled.astype(np.int64).astype(np.uint64) & cfg.modulus_mask


def dequantize(q: np.ndarray, cfg: SecAggConfig = SecAggConfig()) -> np.ndarray:
    """A ring element read back as a signed fixed-point number (float64)."""
    q = np.asarray(q, dtype=np.uint64)
    # The top half of the ring holds the negatives: set the bits above ring_bits (sign
    # extension), and the uint64 reads as the int64 it stands for.
    negative = q >= np.uint64(1 << (cfg.ring_bits - 1))
    signed = np.where(negative, q | ~cfg.modulus_mask, q).view(np.int64)
    return signed.astype(np.float64) / 2.0**cfg.frac_bits


def pair_seed(seed: int, round_: int, i: int, j: int) -> np.random.SeedSequence:
    """The secret clients i and j share in round `round_` (simulated key agreement; symmetric)."""
    if i == j:
        raise MaaslabError(f"a pair needs two different clients, got {i} twice")
    return np.random.SeedSequence([seed, round_, min(i, j), max(i, j)])


def pair_mask(
    i: int, j: int, size: int, *, seed: int, round_: int, cfg: SecAggConfig = SecAggConfig()
) -> np.ndarray:
    """The mask client i adds for its pair with j: +PRG(s_ij) if i < j, else -PRG(s_ij)."""
    prg = np.random.PCG64(pair_seed(seed, round_, i, j))
    stream = prg.random_raw(size).astype(np.uint64) & cfg.modulus_mask  # uniform on the ring
    return stream if i < j else (-stream) & cfg.modulus_mask


def mask_update(
    q: np.ndarray,
    client: int,
    clients: Sequence[int],
    *,
    seed: int,
    round_: int,
    cfg: SecAggConfig = SecAggConfig(),
) -> np.ndarray:
    """What `client` sends: its quantized update plus its masks with every other client."""
    masked = np.array(q, dtype=np.uint64)
    for other in clients:
        if other != client:
            masked += pair_mask(client, other, masked.size, seed=seed, round_=round_, cfg=cfg)
    return masked & cfg.modulus_mask


def ring_sum(vectors: Sequence[np.ndarray], cfg: SecAggConfig = SecAggConfig()) -> np.ndarray:
    """The server's whole job: add the masked vectors modulo 2^ring_bits."""
    total = np.zeros_like(vectors[0], dtype=np.uint64)
    for v in vectors:
        total += v  # uint64 arrays wrap around at 2^64 silently
    return total & cfg.modulus_mask


def quantization_bound(n_clients: int, cfg: SecAggConfig = SecAggConfig()) -> float:
    """Max |decoded sum - true sum| per coordinate from rounding: n_clients * 2^-(frac_bits+1)."""
    return n_clients * 2.0 ** -(cfg.frac_bits + 1)


@dataclass(frozen=True)
class SecureSum:
    """One round of secure aggregation: what the server saw, the sum it decoded, the cost."""

    masked: tuple[np.ndarray, ...]  # each client's masked ring vector (uint64), as sent
    total: np.ndarray  # the decoded sum of the clients' vectors (float64)
    # Max |total - exact sum| per coordinate: the rounding bound plus float64's rounding of total.
    error_bound: float
    bytes_per_client: int  # one masked vector packed at ring_bits bits per coordinate
    mask_seconds: float  # all clients: quantizing and masking
    sum_seconds: float  # the server adding the masked vectors
    decode_seconds: float  # reading the ring sum back as floats


def secure_sum(
    vectors: Sequence[np.ndarray],
    clients: Sequence[int] | None = None,
    *,
    seed: int = 0,
    round_: int = 0,
    cfg: SecAggConfig = SecAggConfig(),
) -> SecureSum:
    """Sum the clients' vectors so that the server sees only masked ones.

    Parameters
    ----------
    vectors : one float vector per client, all the same length (FedAvg's weighted updates).
    clients : the clients' ids (distinct), which name the pairs; default 0, 1, ..., K-1.
    seed, round_ : where the pair seeds come from (the simulated key agreement).
    cfg : the fixed-point ring.
    """
    ids = list(range(len(vectors))) if clients is None else [int(c) for c in clients]
    if not vectors or len(ids) != len(vectors) or len(set(ids)) != len(ids):
        raise MaaslabError(
            f"secure aggregation needs one distinct client id per vector, got {len(vectors)} "
            f"vectors and ids {ids}"
        )
    xs = [np.asarray(v, dtype=np.float64).ravel() for v in vectors]
    if len({x.size for x in xs}) != 1:
        raise MaaslabError(f"every update must have the same length, got {[x.size for x in xs]}")
    # The sum must fit the ring, or it wraps around silently. A real deployment has the clients
    # clip to a bound agreed beforehand; this simulation sees all vectors, so it checks them.
    reach = sum(float(np.max(np.abs(x), initial=0.0)) for x in xs)
    if reach >= cfg.capacity:
        raise MaaslabError(
            f"the sum of these {len(xs)} updates can reach {reach:g} but the ring holds only "
            f"+-{cfg.capacity:g}: lower SecAggConfig.frac_bits or raise ring_bits"
        )
    started = time.perf_counter()
    masked = tuple(
        mask_update(quantize(x, cfg), c, ids, seed=seed, round_=round_, cfg=cfg)
        for x, c in zip(xs, ids, strict=True)
    )
    summed = time.perf_counter()
    ring = ring_sum(masked, cfg)
    decoding = time.perf_counter()
    total = dequantize(ring, cfg)
    done = time.perf_counter()
    float_rounding = float(np.max(np.abs(total), initial=0.0)) * 2.0**-53
    return SecureSum(
        masked=masked,
        total=total,
        error_bound=quantization_bound(len(xs), cfg) + float_rounding,
        bytes_per_client=-(-xs[0].size * cfg.ring_bits // 8),
        mask_seconds=summed - started,
        sum_seconds=decoding - summed,
        decode_seconds=done - decoding,
    )
