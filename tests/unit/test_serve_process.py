"""What the Serve page says about a server: its settings, a server that exited, a stop."""

import subprocess
import sys

from maaslab.serve.config import ServeConfig
from maaslab.serve.process import ServerProcess


def test_the_settings_in_words():
    assert ServeConfig().describe() == "batching on (up to 32 rows, 5 ms wait) · queue 256"
    off = ServeConfig(batching=False, max_queue=10)
    assert off.describe() == "batching off · queue 10"
    assert (
        ServeConfig(max_batch_size=8, max_delay_ms=2.5)
        .describe()
        .startswith("batching on (up to 8 rows, 2.5 ms wait)")
    )


def test_headline_exit_note_and_stop_note():
    server = ServerProcess(ServeConfig(models=("digits-cnn", "mini-gpt"), port=0))
    server.process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    server.process.wait()
    server.url = "http://127.0.0.1:9"
    line = server.headline()
    assert line.startswith("Serving **digits-cnn, mini-gpt** at `http://127.0.0.1:9` · pid ")
    assert f"pid {server.process.pid} · batching on" in line
    server._lines.extend(f"line {i}\n" for i in range(30))  # what the server printed
    note = server.exit_note(2)
    assert note == "The server exited on its own (code 3); its last output:\nline 28\nline 29\n"
    assert (
        ServerProcess.stop_note(0) == "Server stopped (SIGTERM; it drained and exited with code 0)."
    )
    assert ServerProcess.stop_note(-9) == "Server stopped (SIGTERM; it exited with code -9)."
