"""A watchdog that ends the local Ray a server started when the server dies, however it dies.

`serve --engine ray` without --address starts Ray inside its own process (ray.init): a GCS, a
raylet, a dashboard, and the raylet's agents and workers. Stopped by SIGINT/SIGTERM, the server
shuts them down; SIGKILLed (or crashed), it cannot, and Ray's DashboardAgent and RuntimeEnvAgent
outlive it, reparented to init, for a minute or more (measured here: still there 77 s later).

So before it starts Ray the server starts this watchdog as a subprocess in a session of its own
(a Ctrl+C in the terminal does not reach it), holding the write end of its stdin pipe. The
watchdog reads until end of file, which comes when the server's process ends, by any signal;
then it finds the Ray session the server started (its temp folder, named after the server's
pid: ray_status.session_dir) and ends every process still of that session (ray_status.
session_processes: its path on the command line or one of its files open), the server itself
excepted (on a normal stop it closes the pipe after ray.shutdown and waits for the watchdog,
then exits 0): SIGTERM, then SIGKILL to whatever is left after GRACE_S, until none is left or
GIVE_UP_S has passed.

    watch_ray_session(pid) -> Popen     # in the server, before ray.init; keep it referenced
    python -m maaslab.scale.ray_watchdog PID [GRACE_S]   # the watchdog (stdin: the pipe)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from maaslab.scale.ray_status import session_dir, session_processes

GRACE_S = 3.0  # after SIGTERM, a Ray process has this long before SIGKILL
GIVE_UP_S = 30.0  # the watchdog stops looking for the session's processes after this
POLL_S = 0.2  # how often it looks again


def watch_ray_session(pid: int | None = None, grace_s: float = GRACE_S) -> subprocess.Popen:
    """Start the watchdog of process `pid` (default: this one), which must hold the returned
    Popen (its stdin pipe) for as long as it lives; closing that pipe also sets it off."""
    return subprocess.Popen(
        [sys.executable, "-m", __name__, str(pid or os.getpid()), f"{grace_s:g}"],
        stdin=subprocess.PIPE,  # not inherited by Ray's processes: only our end keeps it open
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # gone, or not ours
            os.kill(pid, sig)


def end_session(
    session: Path, spare: int, grace_s: float = GRACE_S, give_up_s: float = GIVE_UP_S
) -> int:
    """End every process of Ray session `session` but `spare` (the server, which has the
    session's files open too, and stops on its own) and this one: SIGTERM, then SIGKILL after
    `grace_s`; the number signalled. Keeps looking until none is left or `give_up_s` passed."""
    signalled: dict[int, float] = {}  # pid -> when it got SIGTERM
    deadline = time.monotonic() + give_up_s
    while time.monotonic() < deadline:
        left = [p for p in session_processes(session) if p not in (spare, os.getpid())]
        if not left:
            break
        now = time.monotonic()
        _signal_all([p for p in left if p not in signalled], signal.SIGTERM)
        for pid in left:
            signalled.setdefault(pid, now)
        _signal_all([p for p in left if now - signalled[p] > grace_s], signal.SIGKILL)
        time.sleep(POLL_S)
    return len(signalled)


def main(argv: list[str]) -> int:
    """Wait for stdin's end of file, then end the Ray session process argv[0] started
    (argv[1]: the grace before SIGKILL, in seconds)."""
    pid, grace_s = int(argv[0]), float(argv[1]) if len(argv) > 1 else GRACE_S
    while sys.stdin.buffer.read(65536):  # nothing is written: this returns b"" at the end
        pass
    session = session_dir(pid)
    if session is not None:
        end_session(session, spare=pid, grace_s=grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
