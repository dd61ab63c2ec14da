"""The server on Ray Serve (maaslab.scale): the same routes and numbers as the single-process
server, through tritonclient (HTTP and gRPC) and the openai client; a replica killed under load
is replaced and every request is answered 200 or a clear 503, none hangs.

One Serve app for the whole module: digits-cnn on two replicas (one CPU each) and mini-gpt,
answered by the ingress. Under MAASLAB_FAST=1 (the suite) the cluster is one Ray node with 2 CPUs
(`ray start --block` on loopback); otherwise a head and a worker node with one CPU each, and the
two replicas must land on different nodes (Ray's state API says where).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter

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
CLIENT_TIMEOUT_S = 30.0  # a request unanswered after this counts as hung


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
    # a cluster: the ingress and one deployment per tensor model (mini-gpt stays in the
    # ingress), with the replicas and batching asked for.
    from maaslab.scale.ray_serve import app_builder

    app = app_builder(
        {
            "models": ["digits-cnn", "mini-gpt"],
            "replicas": 2,
            "autoscale": None,
            "max_batch_size": 8,
            "batch_timeout_ms": 2,
        }
    )
    ingress = app._bound_deployment  # Ray Serve keeps the bound graph here
    served, handles = ingress.init_args
    assert ingress.name == "ingress" and set(handles) == {"digits-cnn"}
    assert (served.max_batch_size, served.max_delay_ms) == (8, 2)
    assert handles["digits-cnn"]._bound_deployment.num_replicas == 2
    scaled = app_builder({"models": ["digits-cnn"], "autoscale": [1, 3]})
    auto = scaled._bound_deployment.init_args[1]["digits-cnn"]._bound_deployment
    autoscaling = auto._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 3)
    with pytest.raises(MaaslabError, match="does not take batch_size"):
        RayServeArgs.from_dict({"batch_size": 8})
    with pytest.raises(MaaslabError, match="--autoscale MIN,MAX"):
        RayServeArgs.from_dict({"autoscale": [0, 2]})


@pytest.fixture(scope="module")
def ray_server():
    """The Ray cluster and the Serve app on it; the nodes are stopped at the end."""
    from maaslab.scale.ray_cluster import LocalCluster, deploy, free_port

    config = ServeConfig(
        models=("digits-cnn", "mini-gpt"),
        port=free_port(),
        grpc_port=free_port(),
        device="cpu",
        request_timeout_s=20,
    )
    started = time.perf_counter()
    from maaslab.runtime import fast_mode

    with LocalCluster(node_cpus=(2,) if fast_mode() else (1, 1)) as cluster:
        up = time.perf_counter()
        deploy(config, ScaleConfig("ray", replicas=2))
        ready = time.perf_counter()
        print(f"\nRay node up in {up - started:.1f} s, app running {ready - up:.1f} s later")
        yield cluster, config  # stopping the node stops Serve's actors with it


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """Eight test digits on the 0..16 pixel scale."""
    return load_digits().data[-8:].astype(np.float32)


@pytest.fixture(scope="module")
def process_answer(start_server, digits) -> np.ndarray:
    """What the single-process server answers for the same digits (tritonclient, binary)."""
    import tritonclient.http as triton

    server = start_server(models=("digits-cnn",))
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    pixels = triton.InferInput("pixels", list(digits.shape), "FP32")
    pixels.set_data_from_numpy(digits, binary_data=True)
    return client.infer("digits-cnn", [pixels]).as_numpy("probabilities")


def test_tritonclient_http_gets_the_single_process_numbers(ray_server, digits, process_answer):
    import tritonclient.http as triton

    _, config = ray_server
    client = triton.InferenceServerClient(f"127.0.0.1:{config.port}")
    assert client.is_server_ready() and client.is_model_ready("digits-cnn")
    meta = client.get_model_metadata("digits-cnn")
    assert meta["inputs"][0] == {"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}
    pixels = triton.InferInput("pixels", list(digits.shape), "FP32")
    pixels.set_data_from_numpy(digits, binary_data=True)
    got = client.infer("digits-cnn", [pixels]).as_numpy("probabilities")
    np.testing.assert_allclose(got, process_answer, atol=1e-6)


def test_tritonclient_grpc_gets_the_same_numbers(ray_server, digits, process_answer):
    import tritonclient.grpc as triton_grpc

    _, config = ray_server
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{config.grpc_port}")
    pixels = triton_grpc.InferInput("pixels", list(digits.shape), "FP32")
    pixels.set_data_from_numpy(digits)
    got = client.infer("digits-cnn", [pixels]).as_numpy("probabilities")
    np.testing.assert_allclose(got, process_answer, atol=1e-6)


def test_a_bad_request_gets_the_same_400(ray_server):
    _, config = ray_server
    body = {"inputs": [{"name": "pixels", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    answer = httpx.post(f"http://127.0.0.1:{config.port}/v2/models/digits-cnn/infer", json=body)
    assert answer.status_code == 400 and "shape [N, 64]" in answer.json()["error"]


def test_openai_client_gets_the_in_process_completion(ray_server, shared_wrappers):
    from openai import OpenAI

    _, config = ray_server
    gpt = shared_wrappers.get_or_load(("mini-gpt",))["mini-gpt"]
    client = OpenAI(
        base_url=f"http://127.0.0.1:{config.port}/v1", api_key="unused", max_retries=0, timeout=60
    )
    out = client.completions.create(model="mini-gpt", prompt=PROMPT, max_tokens=20, seed=7)
    assert out.choices[0].text == gpt.complete(PROMPT, 20, seed=7).text
    assert sorted(m.id for m in client.models.list()) == ["digits-cnn", "mini-gpt"]


def test_replicas_run_on_both_nodes_of_a_two_node_cluster(ray_server):
    from maaslab.scale.ray_cluster import replica_placement

    cluster, _ = ray_server
    if len(cluster.node_cpus) < 2:
        pytest.skip("one Ray node under MAASLAB_FAST=1 (a second node costs 20-50 s here)")
    placed = [p for p in replica_placement() if p.deployment == "digits-cnn"]
    import ray

    nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2 and {p.node_id for p in placed} == set(nodes)
    print("\n" + "\n".join(str(p) for p in replica_placement()))


def test_replicas_are_placed_and_a_killed_one_is_replaced_under_load(ray_server, digits):
    from maaslab.scale.ray_cluster import kill_replica, replica_placement

    _, config = ray_server
    before = [p for p in replica_placement() if p.deployment == "digits-cnn"]
    assert [p.state for p in before] == ["ALIVE", "ALIVE"] and all(p.pid for p in before)
    url = f"http://127.0.0.1:{config.port}/v2/models/digits-cnn/infer"
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
    killed = kill_replica("digits-cnn")
    killed_at = time.perf_counter()
    deadline = killed_at + KILL_DEADLINE_S
    while True:
        now = [p for p in replica_placement() if p.deployment == "digits-cnn"]
        alive = {p.replica for p in now if p.state == "ALIVE"}
        if len(alive) == 2 and killed.replica not in alive:
            break
        assert time.perf_counter() < deadline, f"the killed replica was not replaced: {now}"
        time.sleep(0.5)
    replaced_s = time.perf_counter() - killed_at
    time.sleep(1.0)  # some load on the new replica too
    stop.set()
    for thread in threads:
        thread.join(CLIENT_TIMEOUT_S + 5)
    print(f"\nkilled {killed.replica} (pid {killed.pid}); replaced in {replaced_s:.1f} s; {counts}")
    assert not any(t.is_alive() for t in threads)
    assert set(counts) <= {200, 503}, counts  # no 500, no hung request
    assert served_before > 0 and counts[200] > served_before  # served before and after
    assert all("replica" in r or "overloaded" in r for r in refusals), refusals[:3]
    dead = [p for p in replica_placement() if p.replica == killed.replica]
    assert [p.state for p in dead] == ["DEAD"]


class _Response:
    """A DeploymentResponse stand-in: awaiting it gives `outcome` (raised if an exception)."""

    def __init__(self, outcome: object) -> None:
        self.outcome, self.cancelled = outcome, False

    def __await__(self):
        if False:  # a generator: await works on it
            yield
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class _Handle:
    """A DeploymentHandle stand-in: handle.infer.remote(...) hands out the next outcome."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes, self.calls = list(outcomes), 0
        self.infer = self

    def remote(self, *args: object) -> _Response:
        self.calls += 1
        return _Response(self.outcomes.pop(0))


def test_remote_queue_retries_a_dead_replica_then_answers_503():
    import asyncio

    from ray.exceptions import ActorDiedError, RayTaskError

    from maaslab.scale.ray_serve import RemoteQueue, ReplicaLost
    from maaslab.serve.batching import Overloaded

    answer = {"probabilities": np.zeros((1, 10))}
    queue = RemoteQueue("digits-cnn", _Handle(ActorDiedError(), answer))
    assert asyncio.run(queue.submit("x", 1, 5.0)) is answer  # the retry went through
    assert queue.lost == 1 and queue.in_flight == 0
    queue = RemoteQueue("digits-cnn", _Handle(ActorDiedError(), ActorDiedError()))
    with pytest.raises(ReplicaLost, match=r"stopped .*retry after 1 s") as lost:
        asyncio.run(queue.submit("x", 1, 5.0))
    assert isinstance(lost.value, Overloaded) and queue.handle.calls == 2  # answered 503
    # The replica's own refusal (its full queue) comes back as itself, not as a Ray error.
    full = RayTaskError("infer", "traceback", Overloaded("digits-cnn"))
    with pytest.raises(Overloaded, match="overloaded"):
        asyncio.run(RemoteQueue("digits-cnn", _Handle(full)).submit("x", 1, 5.0))
