"""Versions of one served model: a champion, a challenger, and how traffic is split between them.

A rollout is how a new version meets real requests without betting everything on it:

- **canary**: a share of the requests that name no version goes to the challenger;
- **shadow**: requests answered by the champion are also sent to the challenger, whose answer is
  thrown away and only compared (`outputs_agree`), so users never see it;
- **promote** makes the challenger the champion; **rollback** undoes a promote.

A request may also name a version ("2") or an alias ("champion", "challenger") and bypass the
split. `Rollout` is generic over what it holds for each version: the server stores its
ServedModel objects, the tests store strings.

All methods are called from the server's one asyncio event loop and none of them awaits, so each
runs whole between two requests: no locks are needed, and a promote or rollback is atomic as
seen by requests. A request in flight keeps the object it resolved (the caller holds it), so a
promote, rollback or remove never drops a request that already started.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import EllipsisType
from typing import Any, Generic, TypeVar

import numpy as np

from maaslab.errors import MaaslabError

T = TypeVar("T")
ALIASES = ("champion", "challenger")
# Two embeddings "agree" when they point the same way; a quantized or distilled encoder changes
# the last digits of every component, never the direction by more than a few degrees.
EMBEDDING_MIN_COSINE = 0.99


class UnknownVersion(MaaslabError):
    """A request names a version or alias this model does not have: answered with 404."""

    status = 404


def _by_number(version: str) -> tuple[int, str]:
    # Versions from a repository are integers (2 before 10); anything else sorts after them.
    return (int(version), "") if version.isdigit() else (1 << 62, version)


@dataclass
class Rollout(Generic[T]):
    """One model's loaded versions, its aliases, its traffic split and what they served."""

    name: str  # the served model's name, used in messages
    versions: dict[str, T] = field(default_factory=dict)  # version -> served object
    champion: str = ""  # answers requests that name no version; "" until a version is added
    challenger: str | None = None  # the version under trial, None when nothing is tried
    canary_percent: float = 0.0  # share (0..100) of unnamed requests sent to the challenger
    shadow: bool = False  # copy the champion's requests to the challenger, compare, discard
    history: list[str] = field(default_factory=list)  # earlier champions, last one on top
    requests: dict[str, int] = field(default_factory=dict)  # requests answered per version
    shadow_compared: int = 0  # shadow answers compared with the champion's
    shadow_agreed: int = 0  # ... of which agreed (outputs_agree)
    shadow_skipped: int = 0  # shadow copies not compared: challenger busy or failed

    def __post_init__(self) -> None:
        if self.versions and not self.champion:
            raise MaaslabError(f"model {self.name!r}: name the champion among its versions")
        if self.champion and self.champion not in self.versions:
            raise self._unknown(self.champion)
        for version in self.history:
            if version not in self.versions:
                raise self._unknown(version)
        self.set_traffic(
            challenger=self.challenger, canary_percent=self.canary_percent, shadow=self.shadow
        )

    def _known(self) -> str:
        return ", ".join(sorted(self.versions, key=_by_number)) or "none"

    def _unknown(self, version: str) -> UnknownVersion:
        return UnknownVersion(
            f"model {self.name!r} has no version {version!r}: choose one of {self._known()} "
            f"or an alias ({', '.join(ALIASES)})"
        )

    def resolve(self, selector: str | None, draw: float) -> tuple[str, T]:
        """The version (and its object) that answers a request; does not count it.

        `selector` None takes the split: the challenger when one is set and draw * 100 <
        canary_percent, else the champion. `draw` is in [0, 1), from the caller's RNG.
        """
        if not 0.0 <= draw < 1.0:
            raise ValueError(f"draw must lie in [0, 1), got {draw}")
        if not self.champion:
            raise UnknownVersion(f"model {self.name!r} has no versions loaded")
        if selector is None:
            split = self.challenger is not None and draw * 100 < self.canary_percent
            version = self.challenger if split else self.champion
        elif selector == "champion":
            version = self.champion
        elif selector == "challenger":
            if self.challenger is None:
                raise UnknownVersion(
                    f"model {self.name!r} has no challenger: ask for the champion or a version "
                    f"({self._known()})"
                )
            version = self.challenger
        elif selector in self.versions:
            version = selector
        else:
            raise self._unknown(selector)
        return version, self.versions[version]

    def count(self, version: str) -> None:
        """Count one request answered by `version` (ignored if it was removed since)."""
        if version in self.versions:
            self.requests[version] = self.requests.get(version, 0) + 1

    def add(self, version: str, served: T) -> None:
        """Load a new version; the first one becomes the champion."""
        if not isinstance(version, str) or not version or version in ALIASES:
            raise MaaslabError(
                f"refusing version {version!r} for {self.name!r}: use a number such as 1 or 2 "
                f"({', '.join(ALIASES)} are aliases)"
            )
        if version in self.versions:
            raise MaaslabError(
                f"model {self.name!r} already has version {version}: unload it first or give "
                "the new one another number"
            )
        self.versions[version] = served
        if not self.champion:
            self.champion = version

    def set_traffic(
        self,
        *,
        challenger: str | EllipsisType | None = ...,
        canary_percent: float | None = None,
        shadow: bool | None = None,
    ) -> None:
        """Change the challenger, the canary share or shadowing; `...` / None keep a setting.

        Clearing the challenger (challenger=None) also sets the canary to 0 and shadow off
        unless they are given. Everything is checked before anything changes.
        """
        new = self.challenger if challenger is ... else challenger
        clearing = challenger is None
        canary = float(canary_percent) if canary_percent is not None else self.canary_percent
        canary = 0.0 if clearing and canary_percent is None else canary
        mirror = bool(shadow) if shadow is not None else self.shadow
        mirror = False if clearing and shadow is None else mirror
        if new is not None:
            if new not in self.versions:
                raise self._unknown(new)
            if new == self.champion:
                raise MaaslabError(
                    f"version {new} is already the champion of {self.name!r}: choose another "
                    f"loaded version ({self._known()}) as challenger"
                )
        if not math.isfinite(canary) or not 0.0 <= canary <= 100.0:
            raise MaaslabError(f"canary_percent must lie in 0..100, got {canary_percent}")
        if new is None and (canary > 0 or mirror):
            raise MaaslabError(
                f"a canary share or shadow traffic for {self.name!r} needs a challenger: set "
                "challenger to a loaded version other than the champion"
            )
        self.challenger, self.canary_percent, self.shadow = new, canary, mirror

    def _clear_traffic(self) -> None:
        self.challenger, self.canary_percent, self.shadow = None, 0.0, False

    def promote(self) -> str:
        """Make the challenger the champion (the old one goes on the history); return it."""
        if self.challenger is None:
            raise MaaslabError(
                f"model {self.name!r} has no challenger to promote: set one with set_traffic"
            )
        self.history.append(self.champion)
        self.champion = self.challenger
        self._clear_traffic()
        return self.champion

    def rollback(self) -> str:
        """Undo the last promote: the previous champion returns, the demoted version becomes
        the challenger with no traffic (so it can still be examined); return the champion."""
        if not self.history:
            raise MaaslabError(
                f"model {self.name!r} has no earlier champion to roll back to: rollback undoes "
                "a promote, and none is left"
            )
        demoted = self.champion
        self.champion = self.history.pop()
        self._clear_traffic()
        self.challenger = demoted
        return self.champion

    def remove(self, version: str) -> T:
        """Unload one version that is not the champion; return its object to close it."""
        if version not in self.versions:
            raise self._unknown(version)
        if version == self.champion:
            raise MaaslabError(
                f"version {version} is the champion of {self.name!r}: promote another version "
                "first, or unload the whole model"
            )
        if version == self.challenger:
            self._clear_traffic()
        served = self.versions.pop(version)
        self.requests.pop(version, None)
        self.history = _tidy(self.history, version, self.champion)
        return served

    def shadow_target(self, served_version: str) -> tuple[str, T] | None:
        """The challenger to copy a request to: only with shadow on and the champion answering."""
        if not self.shadow or self.challenger is None or served_version != self.champion:
            return None
        return self.challenger, self.versions[self.challenger]

    def record_shadow(self, agreed: bool | None) -> None:
        """Record one shadow comparison; None means skipped (challenger busy or failed)."""
        if agreed is None:
            self.shadow_skipped += 1
            return
        self.shadow_compared += 1
        self.shadow_agreed += int(bool(agreed))

    def state(self) -> dict[str, Any]:
        """Everything above as JSON-ready values (versions sorted numerically)."""
        compared = self.shadow_compared
        return {
            "name": self.name,
            "versions": sorted(self.versions, key=_by_number),
            "champion": self.champion,
            "challenger": self.challenger,
            "canary_percent": self.canary_percent,
            "shadow": self.shadow,
            "history": list(self.history),
            "requests": {v: self.requests.get(v, 0) for v in sorted(self.versions, key=_by_number)},
            "shadow_stats": {
                "compared": compared,
                "agreed": self.shadow_agreed,
                "skipped": self.shadow_skipped,
                "agreement": self.shadow_agreed / compared if compared else None,
            },
        }


def _tidy(history: list[str], removed: str, champion: str) -> list[str]:
    """History without `removed`; neighbours that became equal merge, and a top equal to the
    champion goes, so a rollback always changes the champion."""
    tidy: list[str] = []
    for version in history:
        if version != removed and (not tidy or tidy[-1] != version):
            tidy.append(version)
    while tidy and tidy[-1] == champion:
        tidy.pop()
    return tidy


def outputs_agree(main: dict[str, Any], shadow: dict[str, Any]) -> bool:
    """Do two answers to the same request agree? Compared on the outputs both have.

    The comparison is what a user of each output would notice, not bit equality: a challenger
    is usually another architecture or a compressed copy, whose numbers always differ a little.
    "probabilities": the same class (argmax over the last axis) in every row; "embedding":
    cosine similarity >= 0.99 in every row; "label": equal lists; any other output:
    np.allclose (equal if not numeric). No common output, or another shape, is disagreement.
    """
    common = [key for key in main if key in shadow]
    if not common:
        return False
    return all(_output_agrees(key, main[key], shadow[key]) for key in common)


def _output_agrees(key: str, a: Any, b: Any) -> bool:
    if key == "label":
        return [str(x) for x in np.ravel(a)] == [str(x) for x in np.ravel(b)]
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        return False
    if key == "probabilities":
        return bool(np.array_equal(x.argmax(-1), y.argmax(-1)))
    if key == "embedding":
        x, y = np.atleast_2d(x.astype(np.float64)), np.atleast_2d(y.astype(np.float64))
        norms = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1)
        cosine = (x * y).sum(-1) / np.maximum(norms, 1e-12)
        return bool(np.all(cosine >= EMBEDDING_MIN_COSINE))
    if x.dtype.kind in "biuf" and y.dtype.kind in "biuf":
        return bool(np.allclose(x, y))
    return bool(np.array_equal(x, y))
