"""Tenants of a model server: who holds which key, what each may spend, what each used.

A class shares one server: the teacher is an admin, each student a user with limits. The keys
file holds only SHA-256 hashes of the keys, never a key, so a copied file lets nobody in:

    {"format": "maaslab-keys/1",
     "tenants": [
       {"name": "teacher", "role": "admin", "key_sha256": "9f86d08...(64 hex)",
        "requests_per_s": null, "burst": null, "tokens_per_min": null, "daily_requests": null},
       {"name": "student-01", "role": "user", "key_sha256": "60303ae...(64 hex)",
        "requests_per_s": 20, "burst": 40, "tokens_per_min": 20000, "daily_requests": 5000}]}

`python -m maaslab keys classroom` writes such a file and a handout CSV with the plain keys;
`python -m maaslab keys add FILE NAME` adds one tenant and prints its key once. A request says
`Authorization: Bearer KEY`; `KeyTable.authenticate` finds its tenant. maaslab.serve.quotas
applies the limits (`Admission.admit`: daily quota, then request rate, then tokens per minute; a
refusal charges nothing and says when to retry) and meters requests, tokens and compute per
tenant (`Usage`). null = no limit.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import math
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

from maaslab.errors import MaaslabError

FORMAT = "maaslab-keys/1"
ROLES = ("admin", "user")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: "$" allows a "\n"
SHA256_RE = re.compile(r"[0-9a-f]{64}")
PLAIN_KEY_FIELDS = ("key", "api_key", "token")  # what a hand-edited file calls a plain key
ADD_HINT = "make a key with `python -m maaslab keys add FILE NAME`"


def hash_key(key: str) -> str:
    """Hex SHA-256 of a key's UTF-8 bytes: what the keys file stores."""
    # A fast hash is right here: keys are 256-bit random tokens, so no dictionary guessing can
    # find one, and the server hashes on every request. Slow hashes (bcrypt, scrypt) exist for
    # low-entropy passwords, where each guess must be made expensive.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key: "mls_" and 32 random bytes in URL-safe base64."""
    # The prefix lets secret scanners and people recognise a leaked MaaS Lab key.
    return "mls_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Limits:
    """What one tenant may spend; None means no limit."""

    requests_per_s: float | None = None  # token-bucket refill rate, requests per second
    burst: int | None = None  # bucket size; None -> max(1, ceil(requests_per_s))
    tokens_per_min: float | None = None  # model tokens per minute (prompt + answer)
    daily_requests: int | None = None  # requests per UTC day, reset at 00:00 UTC

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            integer = f.name in ("burst", "daily_requests")
            ok = value is None or (
                not isinstance(value, bool)
                and isinstance(value, int if integer else (int, float))
                and math.isfinite(value)
                and value > 0
            )
            if not ok:
                kind = "a positive whole number" if integer else "a positive number"
                raise MaaslabError(f"{f.name} must be {kind} or null (no limit), got {value!r}")
        if self.burst is not None and self.requests_per_s is None:
            raise MaaslabError("burst needs requests_per_s: set both, or neither")

    @property
    def bucket_size(self) -> int | None:
        """Requests a tenant may send at once: burst, or the rate rounded up (at least 1)."""
        if self.requests_per_s is None:
            return None
        return self.burst or max(1, math.ceil(self.requests_per_s))


STUDENT_LIMITS = Limits(requests_per_s=20, burst=40, tokens_per_min=20_000, daily_requests=5_000)


@dataclass(frozen=True)
class Tenant:
    """One holder of a key: a name, a role and limits."""

    name: str  # shown in metrics and logs; ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$
    role: str  # "admin" (the teacher, who manages the server) or "user"
    key_sha256: str  # hash_key(key): 64 lowercase hex characters, never the key itself
    limits: Limits = field(default_factory=Limits)  # what this tenant may spend

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            raise MaaslabError(
                f"tenant name {self.name!r} is not allowed: use 1-64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit"
            )
        if self.role not in ROLES:
            raise MaaslabError(
                f"tenant {self.name!r}: role must be 'admin' or 'user', got {self.role!r}"
            )
        if not isinstance(self.key_sha256, str) or not SHA256_RE.fullmatch(self.key_sha256):
            raise MaaslabError(
                f"tenant {self.name!r}: key_sha256 must be 64 lowercase hex characters (the "
                f"SHA-256 of the key); plain-text keys are refused: {ADD_HINT}"
            )

    @property
    def is_admin(self) -> bool:
        """True for the admin role."""
        return self.role == "admin"


def _tenant_from(entry: object, where: str) -> Tenant:
    # Check for a plain key before anything else, so that is the message a hand edit gets.
    if not isinstance(entry, dict):
        raise MaaslabError(f"{where}: each tenant must be a JSON object, got {entry!r}")
    name = entry.get("name")
    plain = [k for k in PLAIN_KEY_FIELDS if k in entry]
    if plain:
        raise MaaslabError(
            f"{where}: tenant {name!r} has a {plain[0]!r} field; plain-text keys are refused, "
            f"the file holds only key_sha256: {ADD_HINT}"
        )
    known = {"name", "role", "key_sha256", *(f.name for f in fields(Limits))}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise MaaslabError(
            f"{where}: tenant {name!r} has unknown fields {unknown}; allowed: {sorted(known)}"
        )
    if "name" not in entry or "key_sha256" not in entry:
        raise MaaslabError(f"{where}: every tenant needs a name and a key_sha256: {ADD_HINT}")
    try:
        limits = Limits(**{f.name: entry.get(f.name) for f in fields(Limits)})
    except MaaslabError as err:
        raise MaaslabError(f"{where}: tenant {name!r}: {err}") from None
    try:
        return Tenant(name, entry.get("role", "user"), entry["key_sha256"], limits)
    except MaaslabError as err:
        raise MaaslabError(f"{where}: {err}") from None


def _write_private(path: Path, text: str) -> None:
    # A temp file in the same folder and os.replace: readers see the old file or the new one,
    # never half of one. mkstemp creates it 0o600, so a key is never readable by others.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class KeyTable:
    """The tenants of a server and the hashes of their keys."""

    def __init__(self, tenants: Iterable[Tenant] = ()) -> None:
        self.tenants: tuple[Tenant, ...] = tuple(tenants)
        for attr, what in (("name", "named"), ("key_sha256", "holding the key hash")):
            seen: set[str] = set()
            for t in self.tenants:
                value = getattr(t, attr)
                if value in seen:
                    raise MaaslabError(
                        f"two tenants {what} {value!r}: each tenant needs its own name and key"
                    )
                seen.add(value)

    @property
    def names(self) -> tuple[str, ...]:
        """Tenant names in file order."""
        return tuple(t.name for t in self.tenants)

    def get(self, name: str) -> Tenant | None:
        """The tenant called `name`, or None."""
        return next((t for t in self.tenants if t.name == name), None)

    @classmethod
    def load(cls, path: str | Path) -> KeyTable:
        """Read and check a keys file; MaaslabError says what is wrong and how to fix it."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise MaaslabError(
                f"cannot read keys file {path} ({err.strerror or err}): write one with "
                "`python -m maaslab keys classroom` or `python -m maaslab keys add FILE NAME`"
            ) from None
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise MaaslabError(f"{path} is not JSON ({err}): fix or rewrite the file") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise MaaslabError(f'{path}: expected "format": "{FORMAT}", got {got!r}')
        unknown = sorted(set(doc) - {"format", "tenants"})
        if unknown or not isinstance(doc.get("tenants"), list):
            raise MaaslabError(
                f'{path}: expected only "format" and a "tenants" list (unknown: {unknown})'
            )
        tenants = [_tenant_from(entry, str(path)) for entry in doc["tenants"]]
        if not tenants:
            # A server with no tenants would refuse everyone, the teacher included.
            raise MaaslabError(f"{path} holds no tenants: {ADD_HINT}")
        try:
            return cls(tenants)
        except MaaslabError as err:
            raise MaaslabError(f"{path}: {err}") from None

    def save(self, path: str | Path) -> None:
        """Write the keys file atomically, mode 0o600 (hashes only)."""
        doc = {
            "format": FORMAT,
            "tenants": [
                {"name": t.name, "role": t.role, "key_sha256": t.key_sha256}
                | {f.name: getattr(t.limits, f.name) for f in fields(Limits)}
                for t in self.tenants
            ],
        }
        _write_private(Path(path), json.dumps(doc, indent=2) + "\n")

    def authenticate(self, authorization: str | None) -> Tenant | None:
        """The tenant whose key an `Authorization: Bearer KEY` header carries, or None."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        digest = hash_key(token)
        found = None
        # Compare with every entry, no early exit: the time taken does not tell an attacker
        # whether, or where in the table, a key matched.
        for t in self.tenants:
            if hmac.compare_digest(digest, t.key_sha256) and found is None:
                found = t
        return found


def classroom(
    students: int, *, teacher: str = "teacher", limits: Limits = STUDENT_LIMITS
) -> tuple[KeyTable, dict[str, str]]:
    """One admin without limits and `students` limited users; returns the table and name -> key."""
    if isinstance(students, bool) or not isinstance(students, int) or not 1 <= students <= 9999:
        raise MaaslabError(f"students must be a whole number from 1 to 9999, got {students!r}")
    width = max(2, len(str(students)))  # student-01 ... so names sort in class order
    roster = [(teacher, "admin", Limits())] + [
        (f"student-{i:0{width}d}", "user", limits) for i in range(1, students + 1)
    ]
    keys = {name: new_key() for name, _, _ in roster}
    table = KeyTable(Tenant(name, role, hash_key(keys[name]), lim) for name, role, lim in roster)
    return table, keys


def write_classroom(
    keys_path: str | Path,
    handout_path: str | Path,
    students: int,
    *,
    limits: Limits = STUDENT_LIMITS,
    force: bool = False,
) -> KeyTable:
    """Write a classroom's keys file (hashes) and handout CSV (name,role,key), both 0o600."""
    keys_path, handout_path = Path(keys_path), Path(handout_path)
    if keys_path.resolve() == handout_path.resolve():
        raise MaaslabError(
            f"the handout and the keys file are both {keys_path}: the handout holds plain keys "
            "for people, the keys file only hashes for the server; give two paths"
        )
    for path in (keys_path, handout_path):
        if path.exists() and not force:
            raise MaaslabError(
                f"{path} already exists: pass --force to replace it (its keys stop working)"
            )
    table, keys = classroom(students, limits=limits)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "role", "key"])
    writer.writerows([t.name, t.role, keys[t.name]] for t in table.tenants)
    # The handout first: if the second write fails, no server file holds hashes of lost keys.
    _write_private(handout_path, out.getvalue())
    table.save(keys_path)
    return table
