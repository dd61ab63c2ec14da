"""ModelTable: the models a server holds, by name and version, and where each request goes.

Every served name has a Rollout (maaslab.serve.rollout): its loaded versions, the `champion`
that answers requests naming no version, an optional `challenger`, the canary share of traffic
sent to the challenger and whether the champion's requests are also copied to it (shadow).
A --models item is version 1 of its name; a model repository (--repository ROOT, see
maaslab.serve.repository) gives each name its version folders.

Versions and rollouts — the policy, chosen so that nothing changes for users by accident:

- at start, each repository name's newest version is its champion (as Triton serves the latest
  version); the other versions are loaded and can be named in a request;
- a version loaded later (a new folder, then the repository `load` call) arrives as the
  challenger with 0 % of the traffic: an admin then sends it a canary share, shadow copies,
  promotes it or unloads it;
- promote and roll back only move the aliases; a request keeps the model it was routed to, so
  switching while requests are in flight drops none of them.

As a Mapping the table gives each name's champion, so the OpenAI routes and the explain
extension answer with the champion; OIP inference (HTTP and gRPC) goes through `route`, which
applies the split and counts requests per version.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from maaslab.errors import MaaslabError
from maaslab.serve.batching import Overloaded
from maaslab.serve.config import ServeConfig
from maaslab.serve.models import ServedModel, build_served
from maaslab.serve.repository import ModelRepository
from maaslab.serve.rollout import Rollout, outputs_agree

SHADOW_TENANT = "(shadow)"  # the queue shadow copies wait in: never ahead of a real tenant


class UnknownModel(MaaslabError):
    """A request names a model or version this server does not serve: answered with 404."""

    status = 404


class ModelTable(Mapping[str, ServedModel]):
    """Served name -> champion, with every version behind it and the traffic rules."""

    def __init__(self, models: Mapping[str, ServedModel] | None = None, seed: int | None = None):
        self.rollouts: dict[str, Rollout[ServedModel]] = {}
        # The canary split draws from its own generator: seeded in tests, so a split is exact.
        self.rng = random.Random(seed)
        self._shadows: set[asyncio.Task] = set()
        self._loading = asyncio.Lock()  # one repository load or unload at a time
        self.on_added: Callable[[ServedModel], None] | None = None  # metrics for a new version
        for model in (models or {}).values():
            self.add(model)

    # --- the Mapping: names and champions ----------------------------------------------------
    def __getitem__(self, name: str) -> ServedModel:
        rollout = self.rollouts[name]
        return rollout.versions[rollout.champion]

    def __iter__(self) -> Iterator[str]:
        return iter(self.rollouts)

    def __len__(self) -> int:
        return len(self.rollouts)

    # --- versions ----------------------------------------------------------------------------
    def add(self, model: ServedModel) -> None:
        """A loaded version under its name (the first of a name becomes its champion)."""
        rollout = self.rollouts.get(model.name)
        if rollout is None:
            self.rollouts[model.name] = Rollout(model.name, {model.version: model}, model.version)
        else:
            rollout.add(model.version, model)

    def every(self) -> list[ServedModel]:
        """Every loaded version of every name (what has queues and threads to start and stop)."""
        return [m for r in self.rollouts.values() for m in r.versions.values()]

    def rollout(self, name: str) -> Rollout[ServedModel]:
        """The name's rollout, or UnknownModel naming the models there are."""
        if name not in self.rollouts:
            raise UnknownModel(
                f"unknown model {name!r}: this server has {', '.join(self.rollouts) or 'no models'}"
            )
        return self.rollouts[name]

    def pick(self, name: str, version: str | None = None) -> ServedModel:
        """The model a request naming `name` (and `version`: a number or an alias) means;
        no version: the champion. Nothing is counted (metadata, readiness)."""
        rollout = self.rollout(name)
        if version is None:
            return self[name]
        return self._resolve(rollout, version)

    def route(self, name: str, version: str | None = None) -> ServedModel:
        """Where an inference request goes: the version or alias it names, else the canary
        split's draw; counted in the rollout's requests per version."""
        rollout = self.rollout(name)
        model = self._resolve(rollout, version)
        rollout.count(model.version)
        return model

    def _resolve(self, rollout: Rollout[ServedModel], version: str | None) -> ServedModel:
        return rollout.resolve(version, self.rng.random())[1]  # UnknownVersion: 404

    # --- shadow traffic ----------------------------------------------------------------------
    def shadow(self, model: ServedModel, payload: Any, rows: int, answer: dict[str, Any]) -> None:
        """Copy a request the champion answered to the challenger when shadowing is on; the
        copy's answer is only compared with `answer` (agreement recorded), never returned."""
        rollout = self.rollouts.get(model.name)
        target = rollout.shadow_target(model.version) if rollout is not None else None
        if target is None:
            return
        challenger = target[1]
        if challenger.batcher is None or challenger.batcher.full(SHADOW_TENANT):
            rollout.record_shadow(None)  # the challenger is busy: skip rather than queue up
            return
        task = asyncio.get_running_loop().create_task(
            self._compare(rollout, challenger, payload, rows, answer)
        )
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _compare(
        self,
        rollout: Rollout[ServedModel],
        challenger: ServedModel,
        payload: Any,
        rows: int,
        answer: dict[str, Any],
    ) -> None:
        try:
            copy = await challenger.infer(payload, rows, None, SHADOW_TENANT)
        except (Overloaded, MaaslabError, RuntimeError):
            rollout.record_shadow(None)
            return
        rollout.record_shadow(outputs_agree(answer, copy))

    async def settle(self) -> None:
        """Wait for the shadow copies still running (at shutdown, before the batchers close)."""
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)


def _build(
    name: str,
    folders: Mapping[str, Any],
    config: ServeConfig,
    executor: ThreadPoolExecutor | None,
) -> list[ServedModel]:
    from maaslab.device import get_device

    device = get_device(config.device)
    return [
        build_served(name, path, config, device, executor, version=v) for v, path in folders.items()
    ]


def load_repository(
    table: ModelTable,
    repository: ModelRepository,
    config: ServeConfig,
    executor: ThreadPoolExecutor | None = None,
) -> list[str]:
    """Load every model of the repository into the table at start (newest version champion);
    the names loaded. A name already served (a --models item) is refused."""
    names = repository.names()
    for name in names:
        if name in table:
            raise MaaslabError(
                f"{name!r} is both a --models item and a model in the repository "
                f"{repository.root}: serve it from one place"
            )
        models = _build(name, dict(reversed(repository.versions(name).items())), config, executor)
        for model in models:  # newest first: the first one added is the champion
            table.add(model)
    return names


async def load_model(
    table: ModelTable,
    repository: ModelRepository,
    name: str,
    config: ServeConfig,
    executor: ThreadPoolExecutor | None = None,
) -> list[str]:
    """The repository extension's load: the versions of `name` on disk that are not loaded yet
    (compute threads load them while the server keeps answering); the versions loaded.

    A name not served yet gets its newest version as champion; new versions of a served name
    arrive as its challenger (the newest of them) with 0 % of the traffic.
    """
    async with table._loading:
        folders = repository.versions(name)  # refuses bad names, escapes and missing folders
        rollout = table.rollouts.get(name)
        new = {v: p for v, p in folders.items() if rollout is None or v not in rollout.versions}
        if not new:
            return []
        loop = asyncio.get_running_loop()
        ordered = dict(reversed(new.items()))  # newest first
        models = await loop.run_in_executor(None, _build, name, ordered, config, executor)
        for model in models:
            table.add(model)
            if model.batcher is not None:
                model.batcher.start()
            if model.service is not None:
                model.service.start()
            if table.on_added is not None:
                table.on_added(model)
        if rollout is not None:
            rollout.set_traffic(challenger=models[0].version, canary_percent=0.0, shadow=False)
        return [m.version for m in models]


async def unload_model(table: ModelTable, name: str, version: str | None = None) -> list[str]:
    """The repository extension's unload: the whole model (all its versions), or one version
    that is not the champion. New requests get 404 at once; those already queued are answered
    before the version's queue closes. The versions unloaded."""
    async with table._loading:
        rollout = table.rollout(name)
        if version is None:
            del table.rollouts[name]
            gone = list(rollout.versions.values())
        else:
            gone = [rollout.remove(version)]  # refuses the champion
        await table.settle()
        for model in gone:
            if model.batcher is not None:
                await model.batcher.close()
            if model.service is not None:
                await model.service.close()
        return [m.version for m in gone]
