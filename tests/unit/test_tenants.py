"""Tenants: the keys file, authentication, limits at request time and usage metering."""

import csv
import hashlib
import hmac
import json
import math
import stat

import pytest

from maaslab.errors import MaaslabError
from maaslab.serve import tenants as tn
from maaslab.serve.quotas import Admission, Refusal, TokenBucket, Usage
from maaslab.serve.tenants import (
    STUDENT_LIMITS,
    KeyTable,
    Limits,
    Tenant,
    classroom,
    hash_key,
    new_key,
    write_classroom,
)

H1, H2, H3 = (hashlib.sha256(s.encode()).hexdigest() for s in ("k1", "k2", "k3"))


class Clock:
    """A settable clock for the buckets (monotonic) or the daily quota (wall time)."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def entry(name="alice", **extra):
    return {"name": name, "role": "user", "key_sha256": H1, **extra}


def write_doc(path, tenants, fmt="maaslab-keys/1"):
    path.write_text(json.dumps({"format": fmt, "tenants": tenants}))
    return path


# -- keys ------------------------------------------------------------------------------------


def test_hash_key_and_new_key():
    # The FIPS 180-2 test vector, and UTF-8 (not latin-1) bytes for a non-ASCII key.
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert hash_key("é") == hashlib.sha256(b"\xc3\xa9").hexdigest()
    a, b = new_key(), new_key()
    assert a.startswith("mls_") and len(a) == 4 + 43 and a != b


def test_limits_validation_and_bucket_size():
    assert Limits(requests_per_s=2.5).bucket_size == 3
    assert Limits(requests_per_s=0.2).bucket_size == 1
    assert Limits(requests_per_s=2, burst=10).bucket_size == 10
    assert Limits().bucket_size is None
    for bad in ({"requests_per_s": 0}, {"burst": 2.5, "requests_per_s": 1}, {"daily_requests": -1}):
        with pytest.raises(MaaslabError, match=next(iter(bad))):
            Limits(**bad)
    with pytest.raises(MaaslabError, match="positive number"):
        Limits(tokens_per_min=float("nan"))
    with pytest.raises(MaaslabError, match="burst needs requests_per_s"):
        Limits(burst=3)


def test_tenant_checks_name_role_hash():
    assert Tenant("teacher", "admin", H1).is_admin
    assert not Tenant("s.1_x-y", "user", H1).is_admin
    with pytest.raises(MaaslabError, match="name"):
        Tenant("-bad", "user", H1)
    with pytest.raises(MaaslabError, match="role"):
        Tenant("ok", "root", H1)
    with pytest.raises(MaaslabError, match="plain-text keys are refused"):
        Tenant("ok", "user", "mls_secret")


def test_save_load_round_trip_with_mode_600(tmp_path):
    table = KeyTable(
        [
            Tenant("teacher", "admin", H1),
            Tenant("student-01", "user", H2, Limits(1.5, 4, 600.0, 100)),
        ]
    )
    path = tmp_path / "sub" / "keys.json"
    table.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["keys.json"]  # no temp file left
    again = KeyTable.load(path)
    assert again.tenants == table.tenants
    assert again.names == ("teacher", "student-01")
    assert again.get("student-01").limits == Limits(1.5, 4, 600.0, 100)
    assert again.get("nobody") is None
    doc = json.loads(path.read_text())
    assert doc["format"] == "maaslab-keys/1"
    assert doc["tenants"][0] == {
        "name": "teacher",
        "role": "admin",
        "key_sha256": H1,
        "requests_per_s": None,
        "burst": None,
        "tokens_per_min": None,
        "daily_requests": None,
    }


def test_save_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "keys.json"
    KeyTable([Tenant("a", "user", H1)]).save(path)
    before = path.read_text()

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(tn.os, "replace", boom)
    with pytest.raises(OSError):
        KeyTable([Tenant("b", "user", H2)]).save(path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]


@pytest.mark.parametrize("field", ["key", "api_key", "token"])
def test_load_refuses_a_plain_text_key_field(tmp_path, field):
    path = write_doc(tmp_path / "k.json", [entry(**{field: "mls_abc"})])
    with pytest.raises(MaaslabError, match="plain-text keys are refused") as err:
        KeyTable.load(path)
    assert "python -m maaslab keys add" in str(err.value)


@pytest.mark.parametrize("value", ["mls_plaintextkey", H1.upper(), H1[:-1], H1 + "0"])
def test_load_refuses_a_key_sha256_that_is_not_a_hash(tmp_path, value):
    path = write_doc(tmp_path / "k.json", [entry(key_sha256=value)])
    with pytest.raises(MaaslabError, match="plain-text keys are refused") as err:
        KeyTable.load(path)
    assert "python -m maaslab keys add" in str(err.value)


@pytest.mark.parametrize(
    "tenants, match",
    [
        ([entry("a"), entry("a", key_sha256=H2)], "two tenants named 'a'"),
        ([entry("a"), entry("b")], "two tenants holding the key hash"),
        ([entry(role="root")], "role must be 'admin' or 'user'"),
        ([entry(colour="red")], r"unknown fields \['colour'\]"),
        ([entry(requests_per_s=-1)], "tenant 'alice': requests_per_s must be a positive"),
        ([entry(daily_requests=True)], "tenant 'alice': daily_requests"),
        ([entry("bad name")], "tenant name 'bad name' is not allowed"),
        ([entry("x" * 65)], "is not allowed"),
        ([entry("alice\n")], "is not allowed"),
        ([entry(key_sha256=H1 + "\n")], "plain-text keys are refused"),
        ([{"name": "a"}], "needs a name and a key_sha256"),
        (["alice"], "must be a JSON object"),
    ],
)
def test_load_refuses_bad_entries(tmp_path, tenants, match):
    path = write_doc(tmp_path / "k.json", tenants)
    with pytest.raises(MaaslabError, match=match) as err:
        KeyTable.load(path)
    assert str(path) in str(err.value)


def test_load_refuses_missing_non_json_and_wrong_format(tmp_path):
    with pytest.raises(MaaslabError, match=r"cannot read keys file .*keys classroom"):
        KeyTable.load(tmp_path / "missing.json")
    with pytest.raises(MaaslabError, match="cannot read keys file"):
        KeyTable.load(tmp_path)  # a folder
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MaaslabError, match="is not JSON"):
        KeyTable.load(tmp_path / "bad.json")
    with pytest.raises(MaaslabError, match=r"maaslab-keys/1.*'maaslab-keys/2'"):
        KeyTable.load(write_doc(tmp_path / "v2.json", [], fmt="maaslab-keys/2"))
    with pytest.raises(MaaslabError, match="holds no tenants: make a key with"):
        KeyTable.load(write_doc(tmp_path / "empty.json", []))
    with pytest.raises(MaaslabError, match="format"):
        (tmp_path / "list.json").write_text("[]")
        KeyTable.load(tmp_path / "list.json")
    (tmp_path / "extra.json").write_text('{"format": "maaslab-keys/1", "tenants": [], "x": 1}')
    with pytest.raises(MaaslabError, match=r"unknown: \['x'\]"):
        KeyTable.load(tmp_path / "extra.json")


# -- authentication --------------------------------------------------------------------------


def test_authenticate_right_wrong_missing_other_scheme():
    table = KeyTable([Tenant("a", "admin", H1), Tenant("b", "user", H2)])
    assert table.authenticate("Bearer k2").name == "b"
    assert table.authenticate("bearer k1").name == "a"
    assert table.authenticate("BEARER   k1  ").name == "a"
    assert table.authenticate("Bearer k3") is None
    assert table.authenticate("Bearer ") is None
    assert table.authenticate("") is None
    assert table.authenticate(None) is None
    assert table.authenticate("Basic k1") is None
    assert table.authenticate("k1") is None


def test_authenticate_compares_every_entry_even_after_a_match(monkeypatch):
    table = KeyTable([Tenant("a", "user", H1), Tenant("b", "user", H2), Tenant("c", "user", H3)])
    calls = []
    real = hmac.compare_digest

    def counting(x, y):
        calls.append(y)
        return real(x, y)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert table.authenticate("Bearer k1").name == "a"  # the first entry matches
    assert calls == [H1, H2, H3]
    calls.clear()
    assert table.authenticate("Bearer nope") is None
    assert calls == [H1, H2, H3]


# -- token bucket ----------------------------------------------------------------------------


def test_token_bucket_burst_refill_and_inf():
    b = TokenBucket(rate=2.0, capacity=4, now=0.0)
    assert [b.take(1, 0.0) for _ in range(4)] == [0.0] * 4  # the burst
    assert b.take(1, 0.0) == 0.5  # one token refills in 1/rate s
    assert b.take(2, 0.0) == 1.0
    assert b.take(1, 0.25) == 0.25  # continuous refill: half a token after 0.25 s
    assert b.take(1, 0.5) == 0.0
    assert b.take(1, 0.5) == 0.5  # nothing was taken by the refusals above
    assert b.take(1, 100.0) == 0.0  # refill stops at capacity
    assert b.level == 3.0
    assert b.take(5, 100.0) == math.inf
    assert b.level == 3.0


def test_token_bucket_charge_goes_negative():
    b = TokenBucket(rate=10.0, capacity=100, now=0.0)
    b.charge(150, 0.0)
    assert b.level == -50.0
    assert b.wait(10, 0.0) == 6.0  # pays back 60 tokens at 10/s
    with pytest.raises(MaaslabError):
        TokenBucket(rate=0, capacity=1, now=0.0)


# -- admission -------------------------------------------------------------------------------


def make_admission(limits, wall=0.0):
    alice = Tenant("alice", "user", H1, limits)
    clock, wallclock = Clock(), Clock(wall)
    return Admission(KeyTable([alice]), clock=clock, wallclock=wallclock), alice, clock, wallclock


def test_admission_rate_limit_burst_and_retry_after():
    adm, alice, clock, _ = make_admission(Limits(requests_per_s=0.5, burst=2))
    assert adm.admit(alice) is None
    assert adm.admit(alice) is None
    refusal = adm.admit(alice)
    assert refusal == Refusal(
        "rate", 2, "tenant 'alice' is limited to 0.5 requests/s (burst 2); retry in 2 s"
    )
    clock.t = 1.5  # 0.75 of a request refilled: 0.5 s to go, rounded up to 1
    assert adm.admit(alice).retry_after_s == 1
    clock.t = 2.0
    assert adm.admit(alice) is None


def test_admission_tokens_per_minute():
    adm, alice, clock, _ = make_admission(Limits(tokens_per_min=600))  # 10 tokens/s
    assert adm.admit(alice, tokens=500) is None
    refusal = adm.admit(alice, tokens=150)  # 100 left: 50 more take 5 s
    assert (refusal.reason, refusal.retry_after_s) == ("tokens", 5)
    assert "600 tokens per minute" in refusal.message
    clock.t = 5.0
    assert adm.admit(alice, tokens=150) is None
    too_big = adm.admit(alice, tokens=601)
    assert too_big.reason == "tokens" and "ask for fewer" in too_big.message
    assert too_big.retry_after_s == 60


def test_charge_tokens_makes_the_next_request_wait():
    adm, alice, clock, _ = make_admission(Limits(tokens_per_min=600))
    assert adm.admit(alice, tokens=100) is None
    adm.charge_tokens(alice, 700)  # 600 - 100 - 700 = -200
    assert adm.admit(alice, tokens=1).retry_after_s == 21  # 201 tokens at 10/s = 20.1 s
    clock.t = 20.1
    assert adm.admit(alice, tokens=1) is None


def test_daily_quota_resets_at_utc_midnight():
    midnight = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
    adm, alice, _, wall = make_admission(Limits(daily_requests=2), wall=midnight + 86_400 - 3600.5)
    assert adm.admit(alice) is None
    assert adm.admit(alice) is None
    refusal = adm.admit(alice)
    assert refusal.reason == "daily"
    assert refusal.retry_after_s == 3601  # 3600.5 s to midnight, rounded up
    assert "daily quota of 2 requests" in refusal.message and "00:00 UTC" in refusal.message
    wall.t = midnight + 86_400 - 0.2
    assert adm.admit(alice).retry_after_s == 1  # at least 1
    wall.t = midnight + 86_400  # the next UTC day
    assert adm.admit(alice) is None
    assert adm.admit(alice) is None
    assert adm.admit(alice).retry_after_s == 86_400


def test_admission_order_and_nothing_charged_on_refusal():
    limits = Limits(requests_per_s=1, burst=1, tokens_per_min=60, daily_requests=2)
    adm, alice, clock, _ = make_admission(limits)
    assert adm.admit(alice, tokens=61).reason == "tokens"  # refused last, after daily and rate
    assert adm.admit(alice, tokens=30) is None  # so the refusal took no request, no tokens
    assert adm.admit(alice, tokens=61).reason == "rate"  # rate is checked before tokens
    clock.t = 1.0
    assert adm.admit(alice, tokens=100).reason == "tokens"  # too big: charges nothing
    assert adm.admit(alice, tokens=31) is None  # 30 + 1 refilled = 31 tokens were there
    clock.t = 100.0
    assert adm.admit(alice, tokens=100).reason == "daily"  # daily first, before tokens


def test_tenant_without_limits_always_passes():
    adm, admin, _, _ = make_admission(Limits())
    assert all(adm.admit(admin, tokens=10**9) is None for _ in range(1000))
    adm.charge_tokens(admin, 10**9)
    assert adm.admit(admin) is None


# -- usage -----------------------------------------------------------------------------------


def test_usage_meters_every_tenant_from_the_start():
    table = KeyTable([Tenant("a", "admin", H1), Tenant("b", "user", H2)])
    usage = Usage(table)
    zero = {
        "requests": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "compute_seconds": 0.0,
        "refused": {"daily": 0, "rate": 0, "tokens": 0},
    }
    assert usage.snapshot_all() == {"a": zero, "b": zero}
    usage.record("b", input_tokens=12, output_tokens=30, compute_s=0.25)
    usage.record("b", requests=2, compute_s=0.5)
    usage.refused("b", "rate")
    usage.refused("b", "rate")
    snap = usage.snapshot("b")
    assert snap == {
        "requests": 3,
        "input_tokens": 12,
        "output_tokens": 30,
        "compute_seconds": 0.75,
        "refused": {"daily": 0, "rate": 2, "tokens": 0},
    }
    snap["refused"]["rate"] = 99  # a copy
    assert usage.snapshot("b")["refused"]["rate"] == 2
    assert usage.snapshot("a") == zero
    with pytest.raises(MaaslabError, match="no tenant named 'zed'"):
        usage.snapshot("zed")


def test_usage_is_thread_safe():
    from concurrent.futures import ThreadPoolExecutor

    usage = Usage(KeyTable([Tenant("a", "user", H1)]))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: usage.record("a", output_tokens=2), range(2000)))
    assert usage.snapshot("a")["requests"] == 2000
    assert usage.snapshot("a")["output_tokens"] == 4000


# -- classroom -------------------------------------------------------------------------------


def test_classroom_roles_names_keys():
    table, keys = classroom(3)
    assert table.names == ("teacher", "student-01", "student-02", "student-03")
    assert [t.role for t in table.tenants] == ["admin", "user", "user", "user"]
    assert table.get("teacher").limits == Limits()
    assert table.get("student-02").limits == STUDENT_LIMITS == Limits(20, 40, 20_000, 5_000)
    assert set(keys) == set(table.names)
    for name, key in keys.items():
        assert table.authenticate(f"Bearer {key}").name == name
    big, _ = classroom(120, teacher="prof", limits=Limits(requests_per_s=1))
    assert big.names[:2] == ("prof", "student-001") and big.names[-1] == "student-120"
    assert len(big.tenants) == 121
    with pytest.raises(MaaslabError, match="students"):
        classroom(0)


def test_write_classroom_files_modes_and_overwrite(tmp_path):
    keys_path, handout = tmp_path / "keys.json", tmp_path / "students.csv"
    table = write_classroom(keys_path, handout, 2)
    for path in (keys_path, handout):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert KeyTable.load(keys_path).tenants == table.tenants
    rows = list(csv.reader(handout.open()))
    assert rows[0] == ["name", "role", "key"]
    assert [r[:2] for r in rows[1:]] == [
        ["teacher", "admin"],
        ["student-01", "user"],
        ["student-02", "user"],
    ]
    for name, _, key in rows[1:]:
        assert table.authenticate(f"Bearer {key}").name == name
        assert key not in keys_path.read_text()  # the keys file holds hashes only
    with pytest.raises(MaaslabError, match="already exists: pass --force"):
        write_classroom(keys_path, tmp_path / "other.csv", 2)
    assert not (tmp_path / "other.csv").exists()
    with pytest.raises(MaaslabError, match="already exists"):
        write_classroom(tmp_path / "other.json", handout, 2)
    assert handout.read_text().count("\n") == 4  # untouched
    again = write_classroom(keys_path, handout, 4, force=True)
    assert len(again.tenants) == 5
    with pytest.raises(MaaslabError, match="both"):
        write_classroom(tmp_path / "same", tmp_path / "same", 1)
