"""Flower beside our FedAvg: its aggregate against ours, and its Deployment Engine run against ours.

The deployment tests start a SuperLink and SuperNodes as processes on 127.0.0.1 and stop them
(test_distributed.py starts its torchrun ranks the same way, from the unit suite).
"""

import copy
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from federated_helpers import digits_data, seeded_mlp
from flwr.cli.config_utils import load_and_validate

from maaslab import MaaslabError
from maaslab.federated import FederatedConfig, partition_dataset, run_federated, weighted_average
from maaslab.federated.flower import FlowerSpec, flower_average, sampling
from maaslab.federated.flower_runner import (
    flower_env,
    run_flower_deployment,
    write_connection,
    write_project,
)
from maaslab.models import model_config

PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy")


@pytest.fixture(scope="module")
def digits():
    return digits_data()


def _states(count, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = {"w": (5, 3), "b": (3,)}
    return [
        {k: (torch.randn(s, generator=g) * (k_ + 1)).to(dtype) for k, s in shapes.items()}
        for k_ in range(count)
    ]


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_flowers_fedavg_aggregate_is_our_weighted_average(dtype, atol):
    # The oracle: Flower's own FedAvg.aggregate_train on reply Messages against ours.
    states, examples = _states(4, dtype), [359, 17, 1200, 64]
    flower = flower_average(states, examples)
    ours = weighted_average(states, examples)
    plain = weighted_average(states, [1, 1, 1, 1])
    for name, value in ours.items():
        assert flower[name].dtype == dtype and flower[name].shape == value.shape
        torch.testing.assert_close(flower[name], value, atol=atol, rtol=0)
        assert not torch.allclose(plain[name], value, atol=1e-3)  # the weights matter


def test_flowers_sampling_takes_as_many_nodes_as_ours():
    for n in range(1, 17):
        for per_round in [None, *range(1, n + 1)]:
            cfg = FederatedConfig(clients_per_round=per_round)
            args = sampling(cfg, n)
            # FedAvg.configure_train: max(int(connected * fraction_train), min_train_nodes)
            taken = max(int(n * args["fraction_train"]), args["min_train_nodes"])
            assert taken == (n if per_round is None else per_round)
            assert args["min_available_nodes"] == n and args["fraction_evaluate"] == 0.0
    with pytest.raises(MaaslabError, match="sample at most 3"):
        sampling(FederatedConfig(clients_per_round=4), 3)


def test_the_generated_app_project_is_a_valid_flower_app(digits, tmp_path):
    model = seeded_mlp(digits)
    spec = FlowerSpec(
        federated=FederatedConfig(rounds=3, clients_per_round=2, lr=0.2, seed=7),
        n_clients=4,
        model=model_config(model),
        initial_model=str(tmp_path / "initial"),
        output=str(tmp_path / "out"),
        dataset_options=(("val_fraction", 0.2),),
        alpha=0.5,
        partition_seed=3,
    )
    config, warnings = load_and_validate(write_project(tmp_path / "app", spec))
    assert config is not None, warnings
    app = config["tool"]["flwr"]["app"]
    assert app["components"]["serverapp"] == "maaslab_flower_app:server_app"  # checked by Flower
    read = FlowerSpec.from_run_config(app["config"])  # what every process of the run reads
    assert read.federated == spec.federated and read.to_run_config() == spec.to_run_config()
    data, partition = spec.load_data()
    again = partition_dataset(data, 4, alpha=0.5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(partition.indices, again.indices, strict=True))
    assert data.meta["val_fraction"] == 0.2  # the dataset options reach load_dataset

    env = flower_env(tmp_path / "home")
    assert env["FLWR_HOME"] == str(tmp_path / "home") and env["FLWR_TELEMETRY_ENABLED"] == "0"
    assert env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert "127.0.0.1:9999" in write_connection(tmp_path / "home", 9999).read_text()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_clients": 0}, "between 1 and"),
        ({"cfg": FederatedConfig(algorithm="fedprox", mu=0.1)}, "algorithm='fedprox' runs with"),
        ({"cfg": FederatedConfig(dp=True)}, "dp=True runs with run_federated"),
        ({"cfg": FederatedConfig(aggregation="masked")}, "aggregation='masked' runs with"),
        ({"cfg": FederatedConfig(clients_per_round=5)}, "sample at most 3"),
    ],
)
def test_a_bad_deployment_is_refused_before_any_process_starts(digits, kwargs, message):
    args = {"model": seeded_mlp(digits), "cfg": FederatedConfig(), "n_clients": 3, **kwargs}
    with pytest.raises(MaaslabError, match=message):
        run_flower_deployment(**args)


def _processes_of(home: Path) -> list[int]:
    """Live processes started with FLWR_HOME=home (every Flower process of one run has it)."""
    marker = f"FLWR_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:  # it ended meanwhile, or is not ours to read
                continue
            if marker in env:
                found.append(int(entry.name))
    return found


@pytest.fixture
def trap(monkeypatch):
    """Every proxy variable points at a local socket: any HTTP(S) or gRPC call off loopback
    (telemetry, a dependency install) would connect to it, and the test sees that."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    for var in PROXY_VARS:
        monkeypatch.setenv(var, f"http://127.0.0.1:{sock.getsockname()[1]}")
    monkeypatch.delenv("FLWR_TELEMETRY_ENABLED", raising=False)  # the runner must turn it off
    yield sock
    sock.close()


def _attempts(sock: socket.socket) -> list[str]:
    # What each connection to the trap asked for: an HTTP proxy request's first line (CONNECT
    # host:port, or METHOD http://host/...) names where the call was going, and which process.
    asked = []
    while True:
        try:
            conn, (host, port) = sock.accept()
        except BlockingIOError:
            return asked
        with conn:
            conn.settimeout(2.0)
            try:
                first = conn.recv(512).split(b"\r\n", 1)[0].decode("latin-1")
            except OSError as err:
                first = f"nothing read ({err})"
        asked.append(f"{first!r} from {host}:{port}")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_flower_deployment_reaches_run_federateds_accuracy_and_leaves_no_process(
    digits, tmp_path, trap
):
    cfg = FederatedConfig(rounds=2, local_epochs=1, batch_size=32, lr=0.3, seed=4, device="cpu")
    model = seeded_mlp(digits)
    start = copy.deepcopy(model.state_dict())
    user_home = Path.home() / ".flwr"
    before = user_home.exists()
    # Dirichlet clients of unequal sizes, so the average's weights matter
    flower = run_flower_deployment(
        model, cfg, 2, alpha=1.0, partition_seed=2, workdir=tmp_path / "run", timeout_s=240
    )
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())  # not trained
    partition = partition_dataset(digits, 2, alpha=1.0, seed=2)
    assert len(set(partition.sizes)) == 2
    assert all(
        np.array_equal(a, b)
        for a, b in zip(flower.partition.indices, partition.indices, strict=True)
    )
    ours = run_federated(model, digits, partition, cfg)

    assert _processes_of(tmp_path / "run" / "home") == []  # SuperLink, nodes, apps: all gone
    assert _attempts(trap) == []  # nothing went through a proxy: nothing left loopback
    assert user_home.exists() == before  # Flower wrote only under its own FLWR_HOME
    assert (tmp_path / "run" / "home" / "config.toml").exists()

    assert flower.column("round") == ours.column("round") == [0, 1, 2]
    assert [len(r.clients) for r in flower.rounds] == [0, 2, 2]
    # Round 1: every node got the same initial weights and took the same seeded local step,
    # so each client's figures are bit-identical to ours.
    for a, b in zip(flower.rounds[1].clients, ours.rounds[1].clients, strict=True):
        assert (a.client, a.examples, a.drift, a.train_loss) == (
            b.client,
            b.examples,
            b.drift,
            b.train_loss,
        )
    # From then on the two differ only in how the average is summed: Flower multiplies each
    # float32 array by n_k / n and adds them in the order the replies arrived; ours sums
    # n_k * w_k in float64 and divides once. That is about one float32 ulp (measured: up to
    # 6e-8 after two rounds), far below what moves a validation prediction: accuracy may
    # differ by at most one example of the 270 (measured: equal in every round).
    for name, value in model.state_dict().items():
        torch.testing.assert_close(flower.state[name], value, atol=1e-6, rtol=0)
    one_example = 1 / len(digits.y_val)
    for a, b in zip(flower.column("val_accuracy"), ours.column("val_accuracy"), strict=True):
        assert abs(a - b) <= one_example
    assert np.allclose(flower.column("val_loss"), ours.column("val_loss"), atol=1e-5, rtol=0)
    assert abs(flower.test_accuracy - ours.test_accuracy) <= 1 / len(digits.y_test)
    assert flower.column("val_accuracy")[-1] > flower.column("val_accuracy")[0] + 0.2
    assert 0 < flower.startup_seconds < flower.wall_time
    assert all(r.seconds > 0 for r in flower.rounds)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_a_deployment_past_its_deadline_is_stopped_with_every_process(digits, tmp_path):
    with pytest.raises(MaaslabError, match="timed out"):
        run_flower_deployment(
            seeded_mlp(digits), FederatedConfig(rounds=1), 2, workdir=tmp_path, timeout_s=2
        )
    assert _processes_of(tmp_path / "home") == []
    assert (tmp_path / "logs" / "superlink.log").exists()  # it had started
