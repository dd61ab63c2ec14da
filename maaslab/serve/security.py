"""Who may call the server: loopback by default, keys for anything wider.

TorchServe's ShellTorch CVEs came from a management API reachable from the network that
registered models from URLs. Here: the default bind is 127.0.0.1; another interface is refused
unless the server has keys (an --api-key-env key, or a --keys file: maaslab.serve.access checks
them, in constant time), and loading takes only a model's name inside the repository
(maaslab.serve.service_api).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping

from maaslab.errors import MaaslabError

# Probes (Kubernetes liveness/readiness) must work without credentials; they reveal nothing.
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
MIN_KEY_CHARS = 16  # shorter keys are guessable; refuse them rather than pretend


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; any other name or address is the network."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_api_key(
    host: str, api_key_env: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The API key the server will demand, or None on loopback without one.

    Raises MaaslabError (the CLI exits with code 2) when a non-loopback bind has no key, or
    when the named variable is missing, empty or too short.
    """
    env = os.environ if environ is None else environ
    if api_key_env is None:
        if not is_loopback(host):
            raise MaaslabError(
                f"refusing to listen on {host} without an API key: give the tenants' keys with "
                "--keys FILE (python -m maaslab keys classroom makes one), or one key in an "
                "environment variable with --api-key-env VAR (or keep the default --host "
                "127.0.0.1)"
            )
        return None
    key = env.get(api_key_env, "").strip()
    if not key:
        raise MaaslabError(
            f"--api-key-env names {api_key_env}, but that environment variable is not set or empty"
        )
    if len(key) < MIN_KEY_CHARS:
        raise MaaslabError(
            f"the API key in {api_key_env} is too short: use at least {MIN_KEY_CHARS} characters"
        )
    return key
