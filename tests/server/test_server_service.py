"""The service around the models over real HTTP and gRPC: tenants' keys, roles, limits and
usage; the model repository's load / unload (and what it refuses); versions, canary, shadow,
promote and roll back under load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from sklearn.datasets import load_digits
from tritonclient.utils import InferenceServerException

from maaslab.paths import MODELS_DIR
from maaslab.serve.tenants import KeyTable, Limits, Tenant, hash_key

KEYS = {  # name -> (role, key, limits)
    "teacher": ("admin", "teacher-key-0123456789abcdef", Limits()),
    "alice": ("user", "alice-key-0123456789abcdef", Limits()),
    "slow": ("user", "slow-key-0123456789abcdef", Limits(requests_per_s=0.01, burst=2)),
    "paced": ("user", "paced-key-0123456789abcdef", Limits(requests_per_s=4, burst=4)),
}
ROWS = load_digits().data[:8].astype(np.float32)


def auth(name: str) -> dict[str, str]:
    """The Authorization header of a tenant of KEYS."""
    return {"Authorization": f"Bearer {KEYS[name][1]}"}


def grpc_auth(name: str) -> dict[str, str]:
    """The same key as gRPC metadata (keys are lower case there)."""
    return {"authorization": f"Bearer {KEYS[name][1]}"}


def infer_body(rows: np.ndarray = ROWS[:2]) -> dict:
    """An OIP request for digits."""
    pixels = {"name": "pixels", "shape": list(rows.shape), "datatype": "FP32"}
    return {"inputs": [{**pixels, "data": rows.ravel().tolist()}]}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory) -> Path:
    """A keys file of the three tenants above (hashes only)."""
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    tenants = [Tenant(n, role, hash_key(key), lim) for n, (role, key, lim) in KEYS.items()]
    KeyTable(tenants).save(path)
    return path


def new_repository(root: Path) -> Path:
    """A repository holding digits version 1 (the MLP) only."""
    (root / "digits").mkdir(parents=True)
    shutil.copytree(MODELS_DIR / "digits-mlp", root / "digits" / "1")
    return root


@pytest.fixture(scope="module")
def service(start_server, keys_file, tmp_path_factory):
    """A server with tenants, a repository (digits v1) and gRPC."""
    root = new_repository(tmp_path_factory.mktemp("repo"))
    srv = start_server(
        models=(), repository=str(root), keys_file=str(keys_file), grpc_port=0, max_queue=512
    )
    srv.root = root
    return srv


# --- tenants ------------------------------------------------------------------------------------


def test_an_unknown_key_is_401_and_probes_stay_open(service):
    for headers in ({}, {"Authorization": "Bearer not-a-key-of-anyone-here"}):
        reply = httpx.post(
            service.url + "/v2/models/digits/infer", json=infer_body(), headers=headers
        )
        assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert httpx.get(service.url + "/v2/health/ready").status_code == 200


ADMIN_ROUTES = [
    ("post", "/v2/repository/index", {}),
    ("post", "/v2/repository/models/digits/load", {}),
    ("post", "/v2/repository/models/digits/unload", {}),
    ("post", "/v2/models/digits/rollout", {"canary_percent": 0}),
    ("post", "/v2/models/digits/promote", None),
    ("post", "/v2/models/digits/rollback", None),
    ("get", "/usage/tenants", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
def test_a_user_key_on_an_admin_route_is_403(service, method, path, body):
    reply = httpx.request(method, service.url + path, json=body, headers=auth("alice"))
    assert reply.status_code == 403
    assert "'alice' is a user key" in reply.json()["error"]


def test_usage_is_metered_per_key_and_readable_by_its_owner(service):
    before = httpx.get(service.url + "/usage", headers=auth("alice")).json()
    assert before["tenant"] == "alice" and before["role"] == "user"
    for _ in range(3):
        reply = httpx.post(
            service.url + "/v2/models/digits/infer", json=infer_body(), headers=auth("alice")
        )
        assert reply.status_code == 200
    after = httpx.get(service.url + "/usage", headers=auth("alice")).json()["usage"]
    # three inferences and the first usage read
    assert after["requests"] - before["usage"]["requests"] == 4
    assert after["compute_seconds"] > before["usage"]["compute_seconds"]
    every = httpx.get(service.url + "/usage/tenants", headers=auth("teacher")).json()
    assert [t["tenant"] for t in every["tenants"]] == list(KEYS)
    metrics = httpx.get(service.url + "/metrics", headers=auth("teacher")).text
    line = next(
        x
        for x in metrics.splitlines()
        if x.startswith('maaslab_tenant_requests_total{tenant="alice"}')
    )
    assert float(line.split()[-1]) >= after["requests"]


def test_a_tenant_past_its_rate_gets_429_with_retry_after_and_others_do_not(service):
    codes = []
    for _ in range(4):  # burst 2 at 0.01 requests/s: the third and fourth are refused
        reply = httpx.post(
            service.url + "/v2/models/digits/infer", json=infer_body(), headers=auth("slow")
        )
        codes.append(reply.status_code)
    assert codes == [200, 200, 429, 429]
    assert int(reply.headers["retry-after"]) >= 1 and "0.01 requests/s" in reply.json()["error"]
    ok = httpx.post(
        service.url + "/v2/models/digits/infer", json=infer_body(), headers=auth("alice")
    )
    assert ok.status_code == 200
    refused = httpx.get(service.url + "/usage/tenants", headers=auth("teacher")).json()["tenants"]
    assert next(t for t in refused if t["tenant"] == "slow")["usage"]["refused"]["rate"] >= 2
    # over gRPC the same limit is RESOURCE_EXHAUSTED
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{service.grpc_port}")
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("digits", headers=grpc_auth("slow"))
    assert "RESOURCE_EXHAUSTED" in str(err.value.status())


# --- the repository: what load refuses ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "word"),
    [
        ("a..b", 400, ".."),
        ("http:evil", 400, "URL"),
        ("no-such-model", 404, "no-such-model"),
        ("..%2F..%2Fetc", 404, ""),  # decoded to a path with slashes: no route takes it
        ("%2Fetc%2Fpasswd", 404, ""),
    ],
)
def test_load_takes_only_names_inside_the_repository(service, name, status, word):
    reply = httpx.post(service.url + f"/v2/repository/models/{name}/load", headers=auth("teacher"))
    assert reply.status_code == status, reply.text
    assert word in reply.json()["error"]


def test_load_refuses_parameters_and_symlinks_leading_out(service, tmp_path):
    reply = httpx.post(
        service.url + "/v2/repository/models/digits/load",
        json={"parameters": {"config": "{}", "file:1/model.safetensors": "AAAA"}},
        headers=auth("teacher"),
    )
    assert reply.status_code == 400 and "takes no parameters" in reply.json()["error"]
    outside = tmp_path / "outside"
    shutil.copytree(MODELS_DIR / "digits-cnn", outside)
    (service.root / "evil").mkdir()
    os.symlink(outside, service.root / "evil" / "1")
    try:
        reply = httpx.post(service.url + "/v2/repository/models/evil/load", headers=auth("teacher"))
        assert reply.status_code == 400 and "outside the repository" in reply.json()["error"]
        assert "evil" not in httpx.get(service.url + "/v1/models", headers=auth("teacher")).text
    finally:
        shutil.rmtree(service.root / "evil")


def test_a_server_without_a_repository_says_how_to_get_one(start_server, keys_file):
    srv = start_server(models=("digits-cnn",), keys_file=str(keys_file))
    reply = httpx.post(srv.url + "/v2/repository/models/x/load", headers=auth("teacher"))
    assert reply.status_code == 400 and "--repository ROOT" in reply.json()["error"]


# --- versions and rollouts -----------------------------------------------------------------------


def test_rollout_under_load_answers_every_request_and_versions_add_up(service):
    url, admin = service.url, auth("teacher")
    start = httpx.get(url + "/v2/models/digits/rollout", headers=admin).json()
    assert start["champion"] == "1" and start["challenger"] is None
    sent, answers, stop = [0], [], threading.Event()

    def load_loop() -> None:  # a user sending requests all along
        with httpx.Client(base_url=url, headers=auth("alice"), timeout=30) as client:
            while not stop.is_set():
                reply = client.post("/v2/models/digits/infer", json=infer_body())
                sent[0] += 1
                answers.append((reply.status_code, reply.json().get("model_version")))

    users = [threading.Thread(target=load_loop) for _ in range(3)]
    for user in users:
        user.start()
    try:
        time.sleep(0.3)
        shutil.copytree(MODELS_DIR / "digits-cnn", service.root / "digits" / "2")  # publish v2
        loaded = httpx.post(url + "/v2/repository/models/digits/load", headers=admin).json()
        assert loaded["loaded"] == ["2"] and loaded["rollout"]["challenger"] == "2"
        state = httpx.post(
            url + "/v2/models/digits/rollout",
            json={"canary_percent": 50, "shadow": True},
            headers=admin,
        ).json()
        assert state["canary_percent"] == 50 and state["shadow"]
        time.sleep(1.0)
        assert (
            httpx.post(url + "/v2/models/digits/promote", headers=admin).json()["champion"] == "2"
        )
        time.sleep(0.5)
        back = httpx.post(url + "/v2/models/digits/rollback", headers=admin).json()
        assert back["champion"] == "1" and back["challenger"] == "2" and back["canary_percent"] == 0
        time.sleep(0.5)
    finally:
        stop.set()
        for user in users:
            user.join(30)
    assert answers and {code for code, _ in answers} == {200}
    versions = {v for _, v in answers}
    assert versions == {"1", "2"}
    final = httpx.get(url + "/v2/models/digits/rollout", headers=admin).json()
    counted = sum(final["requests"].values()) - sum(start["requests"].values())
    assert counted == sent[0] == len(answers)
    shadow = final["shadow_stats"]
    assert shadow["compared"] > 0 and 0.0 <= shadow["agreement"] <= 1.0
    metrics = httpx.get(url + "/metrics", headers=admin).text
    by_version = {
        line.split('version="')[1].split('"')[0]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('maaslab_version_requests_total{model="digits"')
    }
    assert by_version == {v: float(n) for v, n in final["requests"].items()}


def test_a_request_can_name_a_version_or_an_alias_over_http_and_grpc(service):
    state = httpx.get(service.url + "/v2/models/digits/rollout", headers=auth("alice")).json()
    if state["challenger"] is None:
        pytest.skip("runs after the rollout test has loaded version 2")
    for selector, version in (("1", "1"), ("2", "2"), ("champion", state["champion"])):
        reply = httpx.post(
            service.url + f"/v2/models/digits/versions/{selector}/infer",
            json=infer_body(),
            headers=auth("alice"),
        )
        assert reply.status_code == 200 and reply.json()["model_version"] == version
    missing = httpx.post(
        service.url + "/v2/models/digits/versions/7/infer", json=infer_body(), headers=auth("alice")
    )
    assert missing.status_code == 404 and "no version '7'" in missing.json()["error"]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{service.grpc_port}")
    pixels = grpcclient.InferInput("pixels", [2, 64], "FP32")
    pixels.set_data_from_numpy(ROWS[:2])
    result = client.infer(
        "digits", [pixels], model_version="challenger", headers=grpc_auth("alice")
    )
    assert result.get_response().model_version == state["challenger"]
    assert client.get_model_metadata("digits", headers=grpc_auth("alice")).versions == ["1", "2"]


def test_grpc_repository_calls_need_an_admin_key(service):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{service.grpc_port}")
    with pytest.raises(InferenceServerException) as err:
        client.load_model("digits", headers=grpc_auth("alice"))
    assert "PERMISSION_DENIED" in str(err.value.status())
    index = client.get_model_repository_index(headers=grpc_auth("teacher"))
    assert ("digits", "1", "READY") in {(m.name, m.version, m.state) for m in index.models}
    with pytest.raises(InferenceServerException) as err:
        client.load_model("../digits", headers=grpc_auth("teacher"))
    assert "INVALID_ARGUMENT" in str(err.value.status())


def test_the_cli_serves_a_repository_to_tenants_and_refuses_plain_text_keys(spawn_server, tmp_path):
    plain = tmp_path / "plain.json"
    plain.write_text(
        '{"format": "maaslab-keys/1", "tenants": [{"name": "t", "role": "admin", '
        '"key": "teacher-key-0123456789abcdef"}]}'
    )
    refused = subprocess.run(
        [sys.executable, "-m", "maaslab", "serve", "--keys", str(plain), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "plain-text" in refused.stderr
    keys = tmp_path / "keys.json"
    KeyTable([Tenant("teacher", "admin", hash_key(KEYS["teacher"][1]))]).save(keys)
    root = new_repository(tmp_path / "repo")
    srv = spawn_server("--repository", str(root), "--keys", str(keys), "--host", "0.0.0.0")
    assert "repository" in srv.output[-1] and "tenants from" in srv.output[-1]
    assert httpx.get(srv.url + "/v1/models").status_code == 401
    listed = httpx.get(srv.url + "/v1/models", headers=auth("teacher")).json()["data"]
    assert [m["id"] for m in listed] == ["digits"]


def test_the_load_generator_counts_429s_as_limited_not_as_errors(service):
    from maaslab.serve.loadtest import run_load

    result = run_load(
        service.url, "digits", concurrency=4, duration_s=1.5, rate=40, api_key=KEYS["paced"][1]
    )
    # 4 requests/s with a burst of 4 lets about 4 + 1.5 x 4 = 10 through out of about 60 sent
    assert result.error_count == 0 and result.ok + result.limited == result.requests
    assert 6 <= result.ok <= 14 and result.limited >= 30
    assert "limited (429)" in result.summary()
