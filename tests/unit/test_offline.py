"""MaaS Lab sends nothing anywhere: the libraries that would report usage are told not to."""

import os
import subprocess
import sys


def test_importing_maaslab_turns_onnx_runtimes_telemetry_off_and_keeps_an_explicit_choice():
    # ONNX Runtime 1.32 reports usage events to Microsoft from a background thread unless
    # ORT_DISABLE_TELEMETRY is set before its import (a proxy trap caught them in
    # tests/unit/test_federated_flower.py when this was not set).
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    script = "import maaslab, os; print(os.environ.get('ORT_DISABLE_TELEMETRY'))"
    run = lambda e: subprocess.run(  # noqa: E731
        [sys.executable, "-c", script], env=e, capture_output=True, text=True, timeout=60
    )
    assert run(env).stdout.strip() == "1"
    assert run({**env, "ORT_DISABLE_TELEMETRY": "0"}).stdout.strip() == "0"
