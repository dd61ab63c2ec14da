"""The server on Ray Serve (maaslab.scale): the same routes and numbers as the single-process
server, through tritonclient (HTTP and gRPC) and the openai client; mini-llama's deployment
streams the single-process engine's tokens, and a stream cut midway frees its sequence in the
replica; a replica killed under load is replaced and every request is answered 200 or a clear
503, none hangs; a server SIGKILLed leaves no process of its Ray behind.

One server for the whole module, `python -m maaslab serve --engine ray --replicas 2` as a
subprocess: digits-cnn and mini-llama on two replicas each, mini-gpt answered by the ingress.
The tests see it as a user does: over HTTP and gRPC, and the Ray dashboard's state API for the
replicas (maaslab.scale.ray_status). Under MAASLAB_FAST=1 (the suite) the server starts its own
local Ray, and the module ends by SIGKILLing it; otherwise it joins a head and a worker node
(`ray start --block` on loopback, two CPUs each) and the digits-cnn replicas must land on
different nodes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from maaslab.errors import MaaslabError
from maaslab.serve.config import (
    ScaleConfig,
    ServeConfig,
    add_serve_arguments,
    config_from_args,
    scale_from_args,
)

PROMPT = "The function "
KILL_DEADLINE_S = 90.0  # the killed replica must be replaced within this
LOAD_AFTER_KILL_S = 3.0  # the load goes on this long after the kill
CLIENT_TIMEOUT_S = 30.0  # a request unanswered after this counts as hung
START_TIMEOUT_S = 300.0  # the server's ready line, on a loaded 2-core machine
ORPHAN_DEADLINE_S = 45.0  # a SIGKILLed server's Ray processes must be gone within this
MODELS = ("digits-cnn", "mini-gpt", "mini-llama")


def parse(*argv: str) -> tuple[ServeConfig, ScaleConfig]:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(list(argv))
    config = config_from_args(args)
    return config, scale_from_args(args, config)


def test_engine_flags_are_checked():
    config, scale = parse("--engine", "ray", "--autoscale", "1,3", "--models", "digits-cnn")
    assert scale == ScaleConfig("ray", None, (1, 3), None) and config.models == ("digits-cnn",)
    assert parse()[1] == ScaleConfig()  # the process engine by default
    with pytest.raises(MaaslabError, match="--replicas needs --engine ray"):
        parse("--replicas", "2")
    with pytest.raises(MaaslabError, match="either --replicas N"):
        parse("--engine", "ray", "--replicas", "2", "--autoscale", "1,2")
    with pytest.raises(MaaslabError, match="1 <= MIN <= MAX"):
        parse("--engine", "ray", "--autoscale", "3,1")
    with pytest.raises(MaaslabError, match="--repository is served by --engine process"):
        parse("--engine", "ray", "--repository", "/srv/models")
    with pytest.raises(SystemExit):  # argparse: "takes MIN,MAX replicas as two whole numbers"
        parse("--engine", "ray", "--autoscale", "two")


def test_app_builder_args_are_checked():
    from maaslab.scale.ray_serve import RayServeArgs

    args = RayServeArgs.from_dict({"models": "digits-cnn,mini-gpt", "autoscale": [1, 2]})
    assert args.models == ("digits-cnn", "mini-gpt") and args.autoscale == (1, 2)
    config = args.serve_config()
    assert config.max_batch_size == 32 and config.max_delay_ms == 5.0
    # A config file's args (the names maaslab.scale.export_ray writes) build the app without
    # a cluster: the ingress and one deployment per tensor model and per language model
    # (mini-gpt, a character model with no engine, stays in the ingress), with the replicas
    # and batching asked for.
    from maaslab.scale.ray_llm import LLMReplica
    from maaslab.scale.ray_serve import ModelReplica, app_builder

    app = app_builder(
        {
            "models": ["digits-cnn", "mini-gpt", "mini-llama"],
            "replicas": 2,
            "autoscale": None,
            "max_batch_size": 8,
            "batch_timeout_ms": 2,
        }
    )
    ingress = app._bound_deployment  # Ray Serve keeps the bound graph here
    served, handles = ingress.init_args
    assert ingress.name == "ingress" and set(handles) == {"digits-cnn", "mini-llama"}
    assert (served.max_batch_size, served.max_delay_ms) == (8, 2)
    for name, replica in (("digits-cnn", ModelReplica), ("mini-llama", LLMReplica)):
        deployment = handles[name]._bound_deployment
        assert deployment.num_replicas == 2 and deployment.func_or_class is replica
    scaled = app_builder({"models": ["digits-cnn"], "autoscale": [1, 3]})
    auto = scaled._bound_deployment.init_args[1]["digits-cnn"]._bound_deployment
    autoscaling = auto._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 3)
    with pytest.raises(MaaslabError, match="does not take batch_size"):
        RayServeArgs.from_dict({"batch_size": 8})
    with pytest.raises(MaaslabError, match="--autoscale MIN,MAX"):
        RayServeArgs.from_dict({"autoscale": [0, 2]})


@dataclass
class RayServer:
    """The module's `serve --engine ray` process, and how to reach it and its Ray."""

    url: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    process: subprocess.Popen
    dashboard: str  # the Ray dashboard, http://HOST:PORT
    token: str | None  # Ray's token for the dashboard
    session: Path | None  # the Ray session the server started (None: it joined a cluster)
    two_nodes: bool
    killed: tuple | None = None  # (the replica killed, time.perf_counter() then), once done

    def status(self):
        """The replicas and nodes now (ray_status.ClusterStatus)."""
        from maaslab.scale import ray_status

        return ray_status.cluster_status(self.dashboard, self.token)

    def replicas(self, deployment: str) -> list:
        """The replicas of `deployment` Ray knows of (dead ones too)."""
        return [r for r in self.status().replicas if r.deployment == deployment]


def start_ray_server(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str, str]:
    """`python -m maaslab serve --engine ray ARGS` and its ready line's HTTP URL and gRPC
    address (the process is killed if no ready line comes within START_TIMEOUT_S)."""
    cmd = [sys.executable, "-m", "maaslab", "serve", "--engine", "ray", *args]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not any(" on http://" in line for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait(30)
            raise RuntimeError("the Ray server did not start:\n" + "".join(lines))
        time.sleep(0.2)
    ready = next(line for line in lines if " on http://" in line)
    return proc, ready.split(" on ", 1)[1].split()[0], ready.split(" gRPC at ")[1].split()[0]


@pytest.fixture(scope="module")
def ray_server():
    """The module's Ray server (module notes); stopped (or already SIGKILLed) at the end."""
    from maaslab.runtime import fast_mode
    from maaslab.scale import ray_status
    from maaslab.scale.ray_cluster import LocalCluster

    two_nodes = not fast_mode()
    cluster = LocalCluster(node_cpus=(2, 2)).__enter__() if two_nodes else None
    args = ["--models", ",".join(MODELS), "--replicas", "2", "--port", "0", "--grpc-port", "0"]
    args += ["--device", "cpu", "--request-timeout-s", "20"]
    env = {}
    if cluster is not None:
        args += ["--address", cluster.address]
        env = cluster.env
    started = time.perf_counter()
    proc, url, grpc = start_ray_server(args, env)
    try:
        print(f"\nRay server ready in {time.perf_counter() - started:.1f} s")
        if cluster is not None:
            dashboard, session = cluster.dashboard_url, None
        else:
            session = ray_status.session_dir(proc.pid)
            assert session is not None
            dashboard = ray_status.dashboard_url(session)
        token = ray_status.auth_token({**os.environ, **env})
        yield RayServer(url, grpc, proc, dashboard, token, session, two_nodes)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        if cluster is not None:
            cluster.stop()


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Eight test digits on the 0..16 pixel scale."""
    return load_digits().data[-8:].astype(np.float32)


@pytest.fixture(scope="module")
def process_server(start_server):
    """The single-process server with the same models (in-process, shared weights)."""
    return start_server(models=("digits-cnn", "mini-llama"))


@pytest.fixture(scope="module")
def process_answer(process_server, digits) -> np.ndarray:
    """What the single-process server answers for the same digits (tritonclient, binary)."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(process_server.url.removeprefix("http://"))
    pixels = triton.InferInput("pixels", list(digits.shape), "FP32")
    pixels.set_data_from_numpy(digits, binary_data=True)
    return client.infer("digits-cnn", [pixels]).as_numpy("probabilities")


def openai_client(url: str):
    """The official openai client on a server's /v1."""
    from openai import OpenAI

    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_tritonclient_http_gets_the_single_process_numbers(ray_server, digits, process_answer):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(ray_server.url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("digits-cnn")
    meta = client.get_model_metadata("digits-cnn")
    assert meta["inputs"][0] == {"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}
    pixels = triton.InferInput("pixels", list(digits.shape), "FP32")
    pixels.set_data_from_numpy(digits, binary_data=True)
    got = client.infer("digits-cnn", [pixels]).as_numpy("probabilities")
    np.testing.assert_allclose(got, process_answer, atol=1e-6)


def test_tritonclient_grpc_gets_the_same_numbers(ray_server, digits, process_answer):
    import tritonclient.grpc as triton_grpc

    client = triton_grpc.InferenceServerClient(ray_server.grpc)
    pixels = triton_grpc.InferInput("pixels", list(digits.shape), "FP32")
    pixels.set_data_from_numpy(digits)
    got = client.infer("digits-cnn", [pixels]).as_numpy("probabilities")
    np.testing.assert_allclose(got, process_answer, atol=1e-6)


def test_a_bad_request_gets_the_same_400(ray_server):
    body = {"inputs": [{"name": "pixels", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    answer = httpx.post(f"{ray_server.url}/v2/models/digits-cnn/infer", json=body)
    assert answer.status_code == 400 and "shape [N, 64]" in answer.json()["error"]


def test_openai_client_gets_the_in_process_completion(ray_server, shared_wrappers):
    gpt = shared_wrappers.get_or_load(("mini-gpt",))["mini-gpt"]
    client = openai_client(ray_server.url)
    out = client.completions.create(model="mini-gpt", prompt=PROMPT, max_tokens=20, seed=7)
    assert out.choices[0].text == gpt.complete(PROMPT, 20, seed=7).text
    assert sorted(m.id for m in client.models.list()) == sorted(MODELS)


def test_replicas_run_on_both_nodes_of_a_two_node_cluster(ray_server):
    if not ray_server.two_nodes:
        pytest.skip("one Ray node under MAASLAB_FAST=1 (a second node costs 20-50 s here)")
    status = ray_server.status()
    placed = [r for r in status.replicas if r.deployment == "digits-cnn"]
    assert len(status.nodes) == 2 and {r.node_id for r in placed} == {
        n.node_id for n in status.nodes
    }
    print("\n" + "\n".join(str(r) for r in status.replicas))


def test_a_replica_killed_under_load_costs_no_request(ray_server, digits):
    # Four clients; one of the two digits-cnn replicas SIGKILLed after 1 s; the load goes on
    # for LOAD_AFTER_KILL_S more. Its replacement is checked later in the module (while the
    # language-model tests run): test_the_killed_replica_is_replaced.
    from maaslab.scale.ray_status import kill_one_replica

    before = ray_server.replicas("digits-cnn")
    assert [p.state for p in before] == ["ALIVE", "ALIVE"] and all(p.pid for p in before)
    url = f"{ray_server.url}/v2/models/digits-cnn/infer"
    body = {
        "inputs": [{"name": "pixels", "shape": [2, 64], "datatype": "FP32", "data": []}],
    }
    body["inputs"][0]["data"] = digits[:2].ravel().tolist()
    counts: Counter = Counter()
    refusals: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:
            while not stop.is_set():
                try:
                    answer = client.post(url, json=body)
                except httpx.TimeoutException:
                    counts["hung"] += 1
                    continue
                counts[answer.status_code] += 1
                if answer.status_code == 503:
                    refusals.append(answer.json()["error"])

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    served_before = counts[200]
    killed = kill_one_replica(ray_server.status(), "digits-cnn")
    ray_server.killed = (killed, time.perf_counter())
    time.sleep(LOAD_AFTER_KILL_S)
    stop.set()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_S + 5)
    print(f"\nkilled {killed.replica} (pid {killed.pid}) under 4 clients: {counts}")
    assert not any(t.is_alive() for t in threads)
    assert set(counts) <= {200, 503}, counts  # no 500, no hung request
    assert served_before > 0 and counts[200] > served_before  # served before and after
    assert all("replica" in r or "overloaded" in r for r in refusals), refusals[:3]


def both(ray_server, process_server, call):
    """call(client) on the Ray server and on the single-process server."""
    return call(openai_client(ray_server.url)), call(openai_client(process_server.url))


def streamed(chunks) -> tuple[list[str], list[str | None], object]:
    """A stream's text per choice (n), its finish reasons, and its usage chunk's usage."""
    texts, reasons, usage, count = {}, {}, None, 0
    for chunk in chunks:
        count += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            piece = c.text if hasattr(c, "text") else (c.delta.content or "")
            texts[c.index] = texts.get(c.index, "") + piece
            reasons[c.index] = c.finish_reason or reasons.get(c.index)
    assert count > 3  # token by token, not one chunk
    return [texts[i] for i in sorted(texts)], [reasons[i] for i in sorted(reasons)], usage


def test_language_model_answers_as_the_single_process_server(ray_server, process_server):
    # Greedy and seeded completions and chats, whole and streamed, n=2 and usage: the same
    # tokens from mini-llama's replicas as from the single-process server's engine.
    greedy = {"model": "mini-llama", "max_tokens": 24, "temperature": 0}
    ray_out, here = both(
        ray_server, process_server, lambda c: c.completions.create(prompt=PROMPT, **greedy)
    )
    assert ray_out.choices[0].text == here.choices[0].text and ray_out.choices[0].text
    assert ray_out.usage == here.usage and ray_out.usage.completion_tokens == 24
    stream = {"stream": True, "stream_options": {"include_usage": True}}
    ray_s, here_s = both(
        ray_server,
        process_server,
        lambda c: streamed(c.completions.create(prompt=PROMPT, **greedy, **stream)),
    )
    assert ray_s == here_s and ray_s[0] == [here.choices[0].text]
    messages = [{"role": "user", "content": "What does len do?"}]
    ray_chat, here_chat = both(
        ray_server,
        process_server,
        lambda c: c.chat.completions.create(messages=messages, **greedy),
    )
    assert ray_chat.choices[0].message.content == here_chat.choices[0].message.content
    assert ray_chat.usage == here_chat.usage
    ray_cs, here_cs = both(
        ray_server,
        process_server,
        lambda c: streamed(c.chat.completions.create(messages=messages, **greedy, **stream)),
    )
    assert ray_cs == here_cs and ray_cs[0] == [here_chat.choices[0].message.content]
    seeded = {"model": "mini-llama", "max_tokens": 16, "temperature": 0.9, "seed": 5, "n": 2}
    ray_n, here_n = both(
        ray_server, process_server, lambda c: c.completions.create(prompt=PROMPT, **seeded)
    )
    assert [c.text for c in ray_n.choices] == [c.text for c in here_n.choices]
    assert ray_n.choices[0].text != ray_n.choices[1].text  # seed 5 and seed 6
    assert ray_n.usage == here_n.usage and ray_n.usage.completion_tokens == 32
    ray_ns, here_ns = both(
        ray_server,
        process_server,
        lambda c: streamed(c.completions.create(prompt=PROMPT, **seeded, **stream)),
    )
    assert ray_ns == here_ns and ray_ns[0] == [c.text for c in here_n.choices]


def test_language_model_refusals_are_the_single_process_ones(ray_server, process_server):
    import openai

    def refusal(client, **body):
        with pytest.raises(openai.APIStatusError) as err:
            client.completions.create(model="mini-llama", **body)
        return err.value.status_code, err.value.body

    for body in (
        {"prompt": "word " * 600, "max_tokens": 8},  # past the context: the engine's 400
        {"prompt": [[1, 2, 10**6]], "max_tokens": 8},  # a token id it does not have
    ):
        got, want = both(ray_server, process_server, lambda c, b=body: refusal(c, **b))
        assert got == want and got[0] == 400, (got, want)


def engine_numbers(url: str) -> dict[str, float]:
    """mini-llama's engine numbers on a server's /metrics (a replica's, on Ray)."""
    from maaslab.serve.metrics import ENGINE_NUMBERS

    names = {name for name, *_ in ENGINE_NUMBERS}
    found = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("maaslab_llm_") and 'model="mini-llama"' in line:
            name = line.split("{", 1)[0].removeprefix("maaslab_llm_").removesuffix("_total")
            if name in names:
                found[name] = float(line.rsplit(" ", 1)[1])
    return found


# A 400-token stream (ignore_eos: never shorter), for the tests that cut one short.
LONG_STREAM = {
    "model": "mini-llama",
    "prompt": PROMPT,
    "max_tokens": 400,
    "temperature": 0,
    "ignore_eos": True,
    "stream": True,
}


def test_a_stream_cut_midway_frees_its_sequence_in_the_replica(ray_server):
    # A long stream read for a few chunks, then dropped: the replica aborts its sequence. The
    # ingress's /metrics shows a replica's engine numbers (polled every second; with two
    # replicas, one at a time): the replica that ran it reports it aborted, none running.
    assert engine_numbers(ray_server.url).get("aborted") == 0
    started = time.perf_counter()
    with httpx.stream(
        "POST", f"{ray_server.url}/v1/completions", json=LONG_STREAM, timeout=60
    ) as r:
        assert r.status_code == 200
        events = 0
        for line in r.iter_lines():
            events += line.startswith("data: {")
            if events == 3:
                break
    first_chunks_s = time.perf_counter() - started
    deadline = time.monotonic() + 30
    while True:
        numbers = engine_numbers(ray_server.url)
        if numbers.get("aborted", 0) >= 1 and numbers["running_sequences"] == 0:
            break
        assert time.monotonic() < deadline, f"the cut stream's sequence still runs: {numbers}"
        time.sleep(0.5)
    assert numbers["kv_blocks_used"] == 0, numbers  # its KV blocks are free again
    # Tokens came as sampled: far fewer than 400 before the cut (a whole answer is 400).
    assert numbers["generated_tokens"] < 400, numbers
    print(f"\nthree chunks after {first_chunks_s:.2f} s; the replica then said {numbers}")


def test_killed_language_model_replicas_end_a_stream_at_once(ray_server):
    # Both mini-llama replicas SIGKILLed while a long stream runs on one: the stream ends at
    # once with an error event naming ReplicaLost (its 200 was sent already) and no [DONE],
    # not hung. (A whole answer gets 503 with Retry-After: tests/unit/test_ray_remote.py; a
    # request sent now would wait for Ray's new replicas, 10-20 s here.)
    lines: list[str] = []
    with httpx.stream(
        "POST", f"{ray_server.url}/v1/completions", json=LONG_STREAM, timeout=CLIENT_TIMEOUT_S
    ) as r:
        stream = r.iter_lines()
        while sum(line.startswith("data: {") for line in lines) < 2:
            lines.append(next(stream))
        killed = ray_server.status().running("mini-llama")
        for replica in killed:  # local processes (a LocalCluster's or the server's own Ray)
            os.kill(replica.pid, signal.SIGKILL)
        killed_at = time.perf_counter()
        lines += [line for line in stream if line]  # to its end (a hang: httpx times out)
    print(f"\nthe stream ended {time.perf_counter() - killed_at:.2f} s after the kill")
    assert len(killed) == 2
    assert "data: [DONE]" not in lines and "ReplicaLost" in lines[-1], lines[-3:]
    assert '"code": 503' in lines[-1] and "bug in the server" not in lines[-1], lines[-1]


def test_the_killed_replica_is_replaced(ray_server, digits):
    if ray_server.killed is None:
        pytest.skip("test_a_replica_killed_under_load_costs_no_request did not run")
    killed, killed_at = ray_server.killed
    deadline = killed_at + KILL_DEADLINE_S
    while True:
        now = ray_server.replicas("digits-cnn")
        alive = {p.replica for p in now if p.state == "ALIVE"}
        if len(alive) == 2 and killed.replica not in alive:
            break
        assert time.perf_counter() < deadline, f"the killed replica was not replaced: {now}"
        time.sleep(0.5)
    print(f"\n{killed.replica} replaced {time.perf_counter() - killed_at:.1f} s after its kill")
    assert [p.state for p in now if p.replica == killed.replica] == ["DEAD"]
    body = {"inputs": [{"name": "pixels", "shape": [2, 64], "datatype": "FP32", "data": []}]}
    body["inputs"][0]["data"] = digits[:2].ravel().tolist()
    with httpx.Client(timeout=CLIENT_TIMEOUT_S) as client:  # answered after the replacement
        statuses = [client.post(f"{ray_server.url}/v2/models/digits-cnn/infer", json=body)]
        statuses += [client.post(f"{ray_server.url}/v2/models/digits-cnn/infer", json=body)]
    assert [a.status_code for a in statuses] == [200, 200]


def test_a_sigkilled_server_leaves_no_ray_process(ray_server):
    # The module's last test: the server dies without a word, and its watchdog ends the local
    # Ray it started (maaslab.scale.ray_watchdog), agents included.
    from maaslab.scale.ray_status import session_processes

    if ray_server.session is None:
        pytest.skip("the server joined a LocalCluster: that Ray is not the server's to end")
    assert session_processes(ray_server.session)  # Ray runs now
    ray_server.process.send_signal(signal.SIGKILL)
    ray_server.process.wait(10)
    killed = time.monotonic()
    while session_processes(ray_server.session):
        left = session_processes(ray_server.session)
        assert time.monotonic() - killed < ORPHAN_DEADLINE_S, f"still running: {left}"
        time.sleep(0.5)
    print(f"\nno process of {ray_server.session.name} left {time.monotonic() - killed:.1f} s on")
