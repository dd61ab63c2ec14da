"""Homomorphic aggregation with CKKS (TenSEAL): the server adds updates it cannot read.

CKKS (Cheon, Kim, Kim, Song, 2017) encrypts a vector of real numbers into a ciphertext, and the
sum of two ciphertexts decrypts to the sum of the vectors. So each client encrypts its
example-weighted update, the server adds the ciphertexts without ever holding the secret key,
and only the key holder can decrypt the sum. Three parties, three contexts (make_keys):

- the key holder keeps the secret key (a trusted party, or the clients themselves when they
  share one key, as frameworks such as NVIDIA FLARE do);
- each client gets the parameters and the public key: enough to encrypt, not to decrypt;
- the server gets the parameters alone (95 bytes): enough to add ciphertexts, nothing else.
  TenSEAL raises if the server's context is asked to decrypt (or encrypt).

CKKS is approximate: a value is encoded as round(x * scale) and encryption adds small noise, so
the decrypted sum differs from the true sum by a few times 1e-8 at the default scale 2^40
(measured: 2e-8 on a sum of five vectors of size ~1e3), whatever the sum's size -- far below
the float32 resolution of the weights. A ciphertext holds poly_modulus_degree / 2 numbers (its
slots), so an update of P numbers travels as ceil(P / slots) ciphertexts, each ~230 KB at the
defaults however full: about 57 bytes per number against 4 for plain float32 weights.

Parameters (CKKSConfig), the choices and why:
- poly_modulus_degree N = 8192: 4096 slots a ciphertext. Security fixes how large the
  coefficient modulus may be for each N (128-bit security, the homomorphic encryption
  standard's table that SEAL enforces): 8192 allows 218 bits.
- coeff_mod_bit_sizes = (60, 40, 60): the primes of the coefficient modulus. The last one is the
  special prime used for key switching; the others (100 bits) bound the values: with the scale
  2^40 a sum must stay below 2^(100 - 40 - 2) = 2^58. Summing needs no multiplication, hence no
  rescaling and no further 40-bit primes (TenSEAL's tutorials use (60, 40, 40, 60) for one
  multiplication; each extra prime adds ~100 KB to every ciphertext).
- scale_bits = 40: the global scale 2^40, the fixed-point precision of the encoding.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tenseal as ts

from maaslab.errors import MaaslabError

# The largest coefficient modulus (bits) with 128-bit security for each polynomial degree
# (the homomorphic encryption standard's table, which Microsoft SEAL enforces).
MAX_MODULUS_BITS = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@dataclass(frozen=True)
class CKKSConfig:
    """The CKKS parameters: ciphertext size, security and precision (see the module docstring)."""

    poly_modulus_degree: int = 8192  # N: a ciphertext holds N / 2 numbers; larger is slower
    # Bits of each prime of the coefficient modulus; the last is the key-switching prime, the
    # others bound the values (their total minus scale_bits). Sum <= MAX_MODULUS_BITS[N].
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 60)
    scale_bits: int = 40  # values are encoded as round(x * 2^scale_bits): the precision

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeff_mod_bit_sizes", tuple(self.coeff_mod_bit_sizes))
        n, bits = self.poly_modulus_degree, self.coeff_mod_bit_sizes
        if n not in MAX_MODULUS_BITS:
            raise MaaslabError(
                f"poly_modulus_degree must be one of {sorted(MAX_MODULUS_BITS)}, got {n}"
            )
        if len(bits) < 2 or not all(isinstance(b, int) and 20 <= b <= 60 for b in bits):
            raise MaaslabError(
                f"coeff_mod_bit_sizes needs at least two primes of 20 to 60 bits (the values' "
                f"primes, then the key-switching prime), got {bits}"
            )
        if sum(bits) > MAX_MODULUS_BITS[n]:
            raise MaaslabError(
                f"coeff_mod_bit_sizes {bits} total {sum(bits)} bits, but 128-bit security at "
                f"poly_modulus_degree={n} allows at most {MAX_MODULUS_BITS[n]}: drop or shrink "
                "a prime, or double poly_modulus_degree"
            )
        if not 20 <= self.scale_bits <= self.value_bits - 4:
            raise MaaslabError(
                f"scale_bits must be between 20 and {self.value_bits - 4}, got "
                f"{self.scale_bits}: a coarser scale loses the weights' digits, and the "
                f"values' primes hold {self.value_bits} bits, of which a sum needs a few "
                "above the scale"
            )

    @property
    def slots(self) -> int:
        """Numbers one ciphertext holds: poly_modulus_degree / 2."""
        return self.poly_modulus_degree // 2

    @property
    def value_bits(self) -> int:
        """Bits of the modulus the values live in: every prime but the key-switching one."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def capacity(self) -> float:
        """The largest |sum| that decrypts correctly, with a factor 4 of margin."""
        return 2.0 ** (self.value_bits - self.scale_bits - 2)


@dataclass
class CKKSKeys:
    """One federation's keys: the key holder's context and what clients and server receive."""

    config: CKKSConfig
    secret: ts.Context  # the key holder's: decrypts; never leaves it
    client_context: bytes  # parameters + public key, serialized: encrypts, cannot decrypt
    server_context: bytes  # parameters only, serialized: adds ciphertexts, nothing else
    seconds: float  # key generation and serialization


def make_keys(cfg: CKKSConfig = CKKSConfig()) -> CKKSKeys:
    """A fresh key pair; the clients' context (public key) and the server's (no key), serialized."""
    started = time.perf_counter()
    secret = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=cfg.poly_modulus_degree,
        coeff_mod_bit_sizes=list(cfg.coeff_mod_bit_sizes),
    )
    secret.global_scale = 2.0**cfg.scale_bits
    # Adding needs neither relinearization nor Galois (rotation) keys: none is sent.
    no_keys = {"save_secret_key": False, "save_galois_keys": False, "save_relin_keys": False}
    client = secret.serialize(save_public_key=True, **no_keys)
    server = secret.serialize(save_public_key=False, **no_keys)
    return CKKSKeys(cfg, secret, client, server, time.perf_counter() - started)


def encrypt_update(context: ts.Context, x: np.ndarray, slots: int) -> list[bytes]:
    """A client's vector as serialized CKKS ciphertexts of `slots` numbers each (last shorter)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    return [ts.ckks_vector(context, x[i : i + slots]).serialize() for i in range(0, x.size, slots)]


def chunks_needed(size: int, cfg: CKKSConfig = CKKSConfig()) -> int:
    """Ciphertexts one update of `size` numbers takes: ceil(size / slots)."""
    return math.ceil(size / cfg.slots)


def sum_ciphertexts(server: ts.Context, updates: Sequence[Sequence[bytes]]) -> list[bytes]:
    """The server's job: add the clients' ciphertexts, chunk by chunk, without the secret key."""
    if server.is_private():
        raise MaaslabError(
            "the server's context holds the secret key: give the server the parameters-only "
            "context (CKKSKeys.server_context), so that it can add but never decrypt"
        )
    if len({len(u) for u in updates}) != 1:
        raise MaaslabError(
            f"every client must send as many ciphertexts, got {[len(u) for u in updates]}"
        )
    summed = []
    for chunks in zip(*updates, strict=True):
        acc = ts.ckks_vector_from(server, chunks[0])
        for chunk in chunks[1:]:
            acc += ts.ckks_vector_from(server, chunk)
        summed.append(acc.serialize())
    return summed


def decrypt_sum(secret: ts.Context, chunks: Sequence[bytes]) -> np.ndarray:
    """The key holder's job: decrypt the summed ciphertexts into one float64 vector."""
    return np.concatenate([np.array(ts.ckks_vector_from(secret, c).decrypt()) for c in chunks])


@dataclass(frozen=True)
class EncryptedSum:
    """One round of CKKS aggregation: the ciphertexts the server saw, the sum, the cost."""

    ciphertexts: tuple[tuple[bytes, ...], ...]  # each client's serialized ciphertexts, as sent
    total: np.ndarray  # the decrypted sum (float64), approximate to CKKS precision
    bytes_per_client: float  # mean bytes of one client's ciphertexts (compression varies them)
    setup_bytes: int  # one-time: the client context to every client, the server's to the server
    encrypt_seconds: float  # all clients: encrypting and serializing
    sum_seconds: float  # the server: deserializing, adding, serializing the sum
    decrypt_seconds: float  # the key holder: deserializing and decrypting the sum
    setup_seconds: float  # one-time: key generation


def encrypted_sum(vectors: Sequence[np.ndarray], keys: CKKSKeys | None = None) -> EncryptedSum:
    """Sum vectors under CKKS: the clients encrypt, the server adds, the key holder decrypts.

    Parameters
    ----------
    vectors : one float vector per client, all the same length (FedAvg's weighted updates).
    keys : from make_keys, made once per federation; None makes fresh ones with CKKSConfig().
    """
    keys = make_keys() if keys is None else keys
    xs = [np.asarray(v, dtype=np.float64).ravel() for v in vectors]
    if not xs or len({x.size for x in xs}) != 1 or xs[0].size == 0:
        raise MaaslabError(f"need non-empty updates of one length, got {[x.size for x in xs]}")
    reach = sum(float(np.max(np.abs(x))) for x in xs)
    if not reach < keys.config.capacity:  # also refuses NaN and infinity
        raise MaaslabError(
            f"the sum of these updates can reach {reach:g}, beyond the +-"
            f"{keys.config.capacity:g} that CKKSConfig{keys.config.coeff_mod_bit_sizes} at "
            f"scale 2^{keys.config.scale_bits} decrypts: lower scale_bits or add a prime"
        )
    client = ts.context_from(keys.client_context)  # as each client receives it
    started = time.perf_counter()
    sent = tuple(tuple(encrypt_update(client, x, keys.config.slots)) for x in xs)
    summing = time.perf_counter()
    summed = sum_ciphertexts(ts.context_from(keys.server_context), sent)
    decrypting = time.perf_counter()
    total = decrypt_sum(keys.secret, summed)[: xs[0].size]
    done = time.perf_counter()
    setup = len(keys.client_context) * len(xs) + len(keys.server_context)
    return EncryptedSum(
        ciphertexts=sent,
        total=total,
        bytes_per_client=sum(len(c) for cs in sent for c in cs) / len(sent),
        setup_bytes=setup,
        encrypt_seconds=summing - started,
        sum_seconds=decrypting - summing,
        decrypt_seconds=done - decrypting,
        setup_seconds=keys.seconds,
    )
