"""A watchdog that ends the local Ray a server started when the server dies, however it dies.

`serve --engine ray` without --address starts Ray inside its own process (ray.init): a GCS, a
raylet, a dashboard, and the raylet's agents and workers. Stopped by SIGINT/SIGTERM, the server
shuts them down; SIGKILLed (or crashed), it cannot, and Ray's DashboardAgent and RuntimeEnvAgent
outlive it, reparented to init, for a minute or more (measured here: still there 77 s later).

So before it starts Ray the server starts this watchdog as a subprocess in a session of its own
(a Ctrl+C in the terminal does not reach it), holding the write end of its stdin pipe. The
watchdog reads until end of file, which comes when the server's process ends, by any signal;
then it finds the Ray session the server started (its temp folder, named after the server's
pid: session_dir) and ends every process still of that session (session_processes: its path
on the command line or one of its files open), the server itself
excepted (on a normal stop it closes the pipe after ray.shutdown and waits for the watchdog,
then exits 0): SIGTERM, then SIGKILL to whatever is left after GRACE_S, until none is left or
GIVE_UP_S has passed.

    watch_ray_session(pid) -> Popen     # in the server, before ray.init; keep it referenced
    python maaslab/scale/ray_watchdog.py PID [GRACE_S]   # the watchdog (stdin: the pipe)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

# Only the standard library here: the watchdog runs as a script (by its path), without
# importing maaslab's package and torch with it (1.4 s and its memory, per server start).

# After SIGTERM, a Ray process has this long before SIGKILL (its server is gone: there is
# nothing left for a slow, orderly exit to save).
GRACE_S = 1.0
GIVE_UP_S = 30.0  # the watchdog stops looking for the session's processes after this
POLL_S = 0.2  # how often it looks again


def ray_temp_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder Ray keeps its sessions in, chosen as Ray chooses it (RAY_TMPDIR, TMPDIR)."""
    env = os.environ if env is None else env
    if "RAY_TMPDIR" in env:
        return Path(env["RAY_TMPDIR"])
    base = env.get("TMPDIR") if sys.platform.startswith("linux") else None
    return Path(base or "/tmp") / "ray"


def session_dir(pid: int, env: Mapping[str, str] | None = None) -> Path | None:
    """The Ray session a driver process `pid` started (its newest one), or None (not yet)."""
    found = list(ray_temp_dir(env).glob(f"session_*_{pid}"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def session_processes(session: Path) -> list[int]:
    """Process ids of whatever still belongs to Ray session `session`: its path on the command
    line (gcs_server, raylet, dashboard), or one of its files open (workers, replicas and
    agents, whose command line Ray rewrites to `ray::...`, write its logs). Linux (/proc)."""
    mark = str(session)
    found = []
    for proc in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode("utf-8", "replace")
            ours = mark in cmdline or any(_points_into(fd, mark) for fd in (proc / "fd").iterdir())
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if ours:
            found.append(int(proc.name))
    return sorted(found)


def _points_into(fd: Path, mark: str) -> bool:
    try:
        return os.readlink(fd).startswith(mark)
    except OSError:  # closed meanwhile
        return False


def watch_ray_session(
    pid: int | None = None,
    grace_s: float = GRACE_S,
    head: int | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen:
    """Start the watchdog of process `pid` (default: this one), which must hold the returned
    Popen (its stdin pipe) for as long as it lives; closing that pipe also sets it off.

    head : the process that started the Ray session, when it is not `pid` itself: a
        `ray start --head` node (LocalCluster), which the watchdog ends with its session.
    env : the environment the session was started with (where Ray keeps it: RAY_TMPDIR).
    """
    args = [str(pid or os.getpid()), f"{grace_s:g}", *([str(head)] if head else [])]
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdin=subprocess.PIPE,  # not inherited by Ray's processes: only our end keeps it open
        stdout=subprocess.DEVNULL,
        env=None if env is None else dict(env),
        start_new_session=True,
    )


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # gone, or not ours
            os.kill(pid, sig)


def end_session(
    session: Path,
    spare: int,
    grace_s: float = GRACE_S,
    give_up_s: float = GIVE_UP_S,
    head: int | None = None,
) -> int:
    """End every process of Ray session `session` (and `head`, the node that started it, if
    any) but `spare` (the server, which has the session's files open too, and stops on its
    own) and this one: SIGTERM, then SIGKILL after `grace_s`; the number signalled. Keeps
    looking until none is left or `give_up_s` passed."""
    signalled: dict[int, float] = {}  # pid -> when it got SIGTERM
    deadline = time.monotonic() + give_up_s
    while time.monotonic() < deadline:
        found = session_processes(session) + ([head] if head and _running(head) else [])
        left = [p for p in found if p not in (spare, os.getpid())]
        if not left:
            break
        now = time.monotonic()
        _signal_all([p for p in left if p not in signalled], signal.SIGTERM)
        for pid in left:
            signalled.setdefault(pid, now)
        _signal_all([p for p in left if now - signalled[p] > grace_s], signal.SIGKILL)
        time.sleep(POLL_S)
    return len(signalled)


def _running(pid: int) -> bool:
    # Alive and not a zombie (one that only waits for its parent to read its status).
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(argv: list[str]) -> int:
    """Wait for stdin's end of file, then end the Ray session process argv[0] started
    (argv[1]: the grace before SIGKILL, in seconds; argv[2]: the head node that started the
    session instead, if any)."""
    pid, grace_s = int(argv[0]), float(argv[1]) if len(argv) > 1 else GRACE_S
    head = int(argv[2]) if len(argv) > 2 else None
    while sys.stdin.buffer.read(65536):  # nothing is written: this returns b"" at the end
        pass
    session = session_dir(head or pid)
    if session is not None:
        end_session(session, spare=pid, grace_s=grace_s, head=head)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
