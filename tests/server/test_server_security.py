"""Loopback by default; any other interface only with an API key; no route loads a model."""

from __future__ import annotations

import shutil

import httpx
import pytest

from maaslab.errors import MaaslabError
from maaslab.paths import MODELS_DIR
from maaslab.serve.access import Tenancy
from maaslab.serve.config import ServeConfig
from maaslab.serve.models import load_models
from maaslab.serve.security import is_loopback, resolve_api_key

KEY = "s3cret-key-for-tests-0123456789"


def test_default_bind_is_loopback():
    assert ServeConfig().host == "127.0.0.1"
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.168.1.10", "example.org"]))


def test_open_interface_needs_a_key():
    with pytest.raises(MaaslabError, match=r"refusing to listen on 0\.0\.0\.0 without an API key"):
        resolve_api_key("0.0.0.0", None, {})
    with pytest.raises(MaaslabError, match=r"MAASLAB_KEY.*not set"):
        resolve_api_key("0.0.0.0", "MAASLAB_KEY", {})
    with pytest.raises(MaaslabError, match="too short"):
        resolve_api_key("0.0.0.0", "MAASLAB_KEY", {"MAASLAB_KEY": "abc"})
    assert resolve_api_key("0.0.0.0", "MAASLAB_KEY", {"MAASLAB_KEY": KEY}) == KEY
    assert resolve_api_key("127.0.0.1", None, {}) is None


def test_the_one_key_matches_only_the_exact_bearer_token():
    # --api-key-env is a tenant table of one admin (serve.access)
    tenancy = Tenancy.single_key(KEY)
    assert tenancy.authenticate(f"Bearer {KEY}").is_admin
    assert tenancy.authenticate(f"bearer {KEY}") is not None
    for header in (None, "", KEY, f"Basic {KEY}", f"Bearer {KEY}x", "Bearer "):
        assert tenancy.authenticate(header) is None


def test_server_with_a_key_refuses_requests_without_it(start_server):
    srv = start_server(models=["digits-cnn"], api_key=KEY)
    assert httpx.get(srv.url + "/v2/health/live").status_code == 200  # probes stay open
    assert httpx.get(srv.url + "/v2/health/ready").status_code == 200
    for path in ("/v2", "/v2/models/digits-cnn", "/metrics", "/docs", "/nope"):
        refused = httpx.get(srv.url + path)
        assert refused.status_code == 401, path
        assert "API key" in refused.json()["error"]
        assert refused.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(srv.url + "/v2", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    ok = httpx.get(srv.url + "/v2", headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json()["name"] == "maaslab"


def test_without_keys_no_route_loads_or_registers_models(server):
    # TorchServe's ShellTorch: a management API that registered models from URLs. The only
    # loading routes are the repository extension's, and they need an admin key.
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    loading = sorted(p for p in paths if "repository" in p or "load" in p or "register" in p)
    assert loading == [
        "/v2/repository/index",
        "/v2/repository/models/{name}/load",
        "/v2/repository/models/{name}/unload",
    ]
    for path in loading:
        refused = httpx.post(server.url + path.replace("{name}", "digits-cnn"))
        assert refused.status_code == 403 and "--keys FILE" in refused.json()["error"]
    assert httpx.post(server.url + "/models?url=http://example.org/m.mar").status_code == 404


def test_a_model_folder_is_served_under_its_name(start_server, tmp_path):
    folder = tmp_path / "my-digits"
    shutil.copytree(MODELS_DIR / "digits-cnn", folder)
    srv = start_server(models=[str(folder)])
    meta = httpx.get(srv.url + "/v2/models/my-digits").json()
    assert meta["inputs"][0]["name"] == "pixels"
    body = {
        "inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [8.0] * 64}]
    }
    assert httpx.post(srv.url + "/v2/models/my-digits/infer", json=body).status_code == 200


def test_pickled_weights_are_never_loaded(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(MODELS_DIR / "digits-cnn" / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not opened")
    with pytest.raises(MaaslabError, match=r"refusing pytorch_model\.bin.*only model\.safetensors"):
        load_models(ServeConfig(models=(str(folder),), device="cpu"))
