"""The Ray watchdog (maaslab.scale.ray_watchdog) without Ray: a parent process starts it, then a
"Ray process" of its session (a file of the session folder open, as Ray's workers and agents
have); SIGKILLing the parent ends that process, even one that ignores SIGTERM. The same with
a real `serve --engine ray` server: tests/server/test_ray_serve.py."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maaslab.scale import ray_watchdog
from maaslab.scale.ray_watchdog import session_processes

GRACE_S = 0.5  # the watchdog's grace before SIGKILL here (1 s in the server)
DEADLINE_S = GRACE_S + 15.0  # SIGTERM, the grace, SIGKILL, on a loaded machine
PARENT = """
import os, subprocess, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])  # the module alone, without maaslab's package (and torch)
from ray_watchdog import watch_ray_session
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
head = None  # with argv[3] == "head": a node of its own started the session (LocalCluster)
if sys.argv[3] == "head":
    head = subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True).pid
name = f"session_2026-01-01_00-00-00_000000_{head or os.getpid()}"
session = Path(os.environ["RAY_TMPDIR"]) / name
session.mkdir(parents=True)
dog = watch_ray_session(grace_s=float(sys.argv[1]), head=head)
with (session / "worker.log").open("w") as log:
    child = subprocess.Popen([sys.executable, "-c", stubborn], stdout=log, start_new_session=True)
driver_log = (session / "driver.log").open("w")  # the server has session files open too
print(child.pid, dog.pid, session, head or child.pid, flush=True)
sys.stdin.readline()  # a normal stop when the test says so
dog.stdin.close()
dog.wait(60)
print("stopped", flush=True)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone, only not reaped yet
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped between the two looks
        return False


def start_parent(tmp_path, head: bool = False) -> subprocess.Popen:
    env = {**os.environ, "RAY_TMPDIR": str(tmp_path)}
    module_dir = str(Path(ray_watchdog.__file__).parent)
    return subprocess.Popen(
        [sys.executable, "-c", PARENT, str(GRACE_S), module_dir, "head" if head else "-"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_stopping_parent_is_spared_and_its_session_ended(tmp_path):
    parent = start_parent(tmp_path)
    try:
        child = int(parent.stdout.readline().split()[0])
        parent.stdin.write("stop\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == "stopped\n"  # the watchdog waited for, not killed
        assert not alive(child) and parent.wait(10) == 0
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


@pytest.mark.parametrize("head", [False, True], ids=["server", "local-cluster-head"])
def test_a_sigkilled_parent_takes_its_session_with_it(tmp_path, head):
    # server: the parent started the session itself (serve --engine ray); local-cluster-head:
    # a node in a session of its own did (LocalCluster's `ray start --head`), and dies too.
    parent = start_parent(tmp_path, head)
    try:
        child, dog, session, node = parent.stdout.readline().split()
        child, dog, node = int(child), int(dog), int(node)
        deadline = time.monotonic() + 10
        while not session_processes(tmp_path / session.rsplit("/", 1)[1]):
            assert time.monotonic() < deadline, "the session's process did not start"
            time.sleep(0.1)
        time.sleep(0.5)  # its SIGTERM handler is set
        assert alive(child) and alive(dog) and alive(node)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        killed = time.monotonic()
        while alive(child) or alive(dog) or alive(node):
            assert time.monotonic() - killed < DEADLINE_S, (alive(child), alive(dog), alive(node))
            time.sleep(0.1)
        took = time.monotonic() - killed
        assert took >= GRACE_S * 0.9  # it ignored SIGTERM: SIGKILL came after the grace
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
