"""The service routes from the caller's side: usage, rollouts, the repository (one small client
for the Serve page's Service view, notebook 16 and the tests), and the classroom demo's files.

    demo = prepare_demo(workdir, students=3)        # keys (hashed) + handout + repository v1
    server = ServerProcess(ServeConfig(models=(), repository=str(demo.root),
                                       keys_file=str(demo.keys_file))).start()
    teacher = ServiceClient(server.url, demo.keys["teacher"])
    demo.publish_challenger()                       # digits-cnn copied in as version 2
    teacher.load("digits")                          # arrives as the challenger, 0 % traffic
    teacher.set_traffic("digits", canary_percent=10, shadow=True)
    teacher.promote("digits"); teacher.rollback("digits")

Every refusal comes back as a MaaslabError holding the server's own message.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from maaslab.errors import MaaslabError
from maaslab.serve.repository import DEMO_MODEL, init_demo_repository, publish
from maaslab.serve.tenants import Limits, write_classroom
from maaslab.zoo import shipped_folder

CHALLENGER_SOURCE = "digits-cnn"  # the demo's version 2 (version 1 is digits-mlp)


class ServiceClient:
    """Calls the service routes of one server with one key (teacher or student)."""

    def __init__(self, url: str, key: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            reply = self._http.request(method, path, json=body)
        except httpx.HTTPError as err:
            raise MaaslabError(f"cannot reach the server at {self.url}: {err}") from None
        if reply.status_code >= 400:
            try:
                message = reply.json()["error"]
                message = message["message"] if isinstance(message, dict) else message
            except (ValueError, KeyError, TypeError):
                message = reply.text[:200]
            raise MaaslabError(f"{method} {path}: {reply.status_code} {message}")
        return reply.json()

    def usage(self) -> dict[str, Any]:
        """This key's tenant: role, limits and usage."""
        return self._call("GET", "/usage")

    def tenants(self) -> list[dict[str, Any]]:
        """Every tenant's role, limits and usage (admin key)."""
        return self._call("GET", "/usage/tenants")["tenants"]

    def rollout(self, model: str) -> dict[str, Any]:
        """A model's versions, champion, challenger, canary share and shadow agreement."""
        return self._call("GET", f"/v2/models/{model}/rollout")

    def set_traffic(
        self,
        model: str,
        *,
        challenger: str | None = None,
        canary_percent: float | None = None,
        shadow: bool | None = None,
    ) -> dict[str, Any]:
        """Set what is given (admin key); the rollout's new state."""
        body = {
            k: v
            for k, v in {
                "challenger": challenger,
                "canary_percent": canary_percent,
                "shadow": shadow,
            }.items()
            if v is not None
        }
        return self._call("POST", f"/v2/models/{model}/rollout", body)

    def promote(self, model: str) -> dict[str, Any]:
        """The challenger becomes champion (admin key)."""
        return self._call("POST", f"/v2/models/{model}/promote")

    def rollback(self, model: str) -> dict[str, Any]:
        """The previous champion returns (admin key)."""
        return self._call("POST", f"/v2/models/{model}/rollback")

    def index(self) -> list[dict[str, str]]:
        """The repository's models and versions with their state (admin key)."""
        return self._call("POST", "/v2/repository/index", {})

    def load(self, model: str) -> dict[str, Any]:
        """Load the versions of `model` in the repository not loaded yet (admin key)."""
        return self._call("POST", f"/v2/repository/models/{model}/load", {})

    def unload(self, model: str, version: str | None = None) -> dict[str, Any]:
        """Unload the model, or one version of it (admin key)."""
        body = {"parameters": {"version": version}} if version is not None else {}
        return self._call("POST", f"/v2/repository/models/{model}/unload", body)


@dataclass(frozen=True)
class ServiceDemo:
    """The classroom demo's files: a keys file, the handout of plain keys, a repository."""

    keys_file: Path  # hashed keys only: what the server reads
    handout: Path  # name,role,key per line: what the teacher hands out
    root: Path  # the model repository (digits version 1 at first)
    keys: dict[str, str]  # tenant name -> plain key, read back from the handout

    @property
    def students(self) -> list[str]:
        """The students' tenant names."""
        return [name for name in self.keys if name != "teacher"]

    def publish_challenger(self) -> str:
        """Copy digits-cnn into the repository as the next version of digits; the version."""
        return publish(self.root, DEMO_MODEL, shipped_folder(CHALLENGER_SOURCE))


def prepare_demo(
    workdir: str | Path, students: int = 3, limits: Limits | None = None
) -> ServiceDemo:
    """Write the classroom demo into `workdir` (which must be new or empty): N student keys and
    a teacher key (python -m maaslab keys classroom does the same), and a repository holding
    digits version 1."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        raise MaaslabError(f"{workdir} is not empty: give a new or empty folder for the demo")
    keys_file, handout = workdir / "keys.json", workdir / "students.csv"
    kwargs = {"limits": limits} if limits is not None else {}
    write_classroom(keys_file, handout, students, **kwargs)
    root = init_demo_repository(workdir / "repository", versions=1).root
    with handout.open(newline="", encoding="utf-8") as f:
        keys = {row["name"]: row["key"] for row in csv.DictReader(f)}
    return ServiceDemo(keys_file, handout, root, keys)
