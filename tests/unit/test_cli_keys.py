"""`python -m maaslab keys`: a classroom's keys file and handout, one tenant added at a time."""

import csv
import stat

import pytest

from maaslab.__main__ import main
from maaslab.serve.tenants import STUDENT_LIMITS, KeyTable, Limits


def test_classroom_writes_both_files_and_never_prints_a_key(tmp_path, capsys):
    keys, handout = tmp_path / "keys.json", tmp_path / "students.csv"
    code = main(
        ["keys", "classroom", "--students", "3", "--out", str(keys), "--handout", str(handout)]
    )
    out = capsys.readouterr().out
    assert code == 0
    table = KeyTable.load(keys)
    assert table.names == ("teacher", "student-01", "student-02", "student-03")
    assert table.get("student-03").limits == STUDENT_LIMITS
    assert stat.S_IMODE(handout.stat().st_mode) == 0o600
    rows = list(csv.DictReader(handout.open()))
    assert len(rows) == 4
    for row in rows:
        assert row["key"] not in out
        assert table.authenticate(f"Bearer {row['key']}").name == row["name"]
    assert f"python -m maaslab serve --keys {keys}" in out
    assert str(handout) in out


def test_classroom_limit_flags_and_none(tmp_path, capsys):
    keys = tmp_path / "keys.json"
    args = ["keys", "classroom", "--students", "2", "--out", str(keys)]
    args += ["--handout", str(tmp_path / "h.csv"), "--requests-per-s", "2.5", "--burst", "none"]
    args += ["--tokens-per-min", "none", "--daily-requests", "100"]
    assert main(args) == 0
    limits = KeyTable.load(keys).get("student-02").limits
    assert limits == Limits(requests_per_s=2.5, burst=None, tokens_per_min=None, daily_requests=100)
    assert limits.bucket_size == 3


def test_classroom_refuses_to_overwrite_without_force(tmp_path, capsys):
    keys, handout = tmp_path / "keys.json", tmp_path / "students.csv"
    args = ["keys", "classroom", "--students", "2", "--out", str(keys), "--handout", str(handout)]
    assert main(args) == 0
    before = keys.read_text()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("maaslab keys: error: ") and "--force" in err
    assert keys.read_text() == before
    assert main([*args, "--force"]) == 0
    assert keys.read_text() != before


def test_classroom_bad_limit_exits_2(tmp_path, capsys):
    args = ["keys", "classroom", "--students", "2", "--out", str(tmp_path / "k.json")]
    args += ["--handout", str(tmp_path / "h.csv"), "--daily-requests", "0"]
    assert main(args) == 2
    assert "daily_requests must be a positive whole number" in capsys.readouterr().err
    assert not (tmp_path / "k.json").exists()
    with pytest.raises(SystemExit) as exc:
        main([*args[:-1], "lots"])
    assert exc.value.code == 2


def test_add_creates_the_file_prints_the_key_once_and_appends(tmp_path, capsys):
    keys = tmp_path / "keys.json"
    assert main(["keys", "add", str(keys), "alice", "--role", "admin"]) == 0
    out = capsys.readouterr().out
    (key_line,) = [line for line in out.splitlines() if line.startswith("key: ")]
    key = key_line.removeprefix("key: ")
    assert key.startswith("mls_")
    assert "not stored anywhere" in out
    assert key not in keys.read_text()
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert main(["keys", "add", str(keys), "bob", "--requests-per-s", "1", "--burst", "3"]) == 0
    bob_key = capsys.readouterr().out.split("key: ")[1].split()[0]
    table = KeyTable.load(keys)
    assert table.names == ("alice", "bob")
    assert table.authenticate(f"Bearer {key}").is_admin
    bob = table.authenticate(f"Bearer {bob_key}")
    assert (bob.name, bob.role, bob.limits) == ("bob", "user", Limits(1, 3))


def test_add_refuses_a_taken_name_and_a_plain_key_file(tmp_path, capsys):
    keys = tmp_path / "keys.json"
    assert main(["keys", "add", str(keys), "alice"]) == 0
    before = keys.read_text()
    capsys.readouterr()
    assert main(["keys", "add", str(keys), "alice"]) == 2
    assert "already has a tenant named 'alice'" in capsys.readouterr().err
    assert keys.read_text() == before
    plain = tmp_path / "plain.json"
    plain.write_text('{"format": "maaslab-keys/1", "tenants": [{"name": "x", "key": "abc"}]}')
    assert main(["keys", "add", str(plain), "bob"]) == 2
    err = capsys.readouterr().err
    assert "plain-text keys are refused" in err and "python -m maaslab keys add" in err
    assert main(["keys", "add", str(keys), "no spaces"]) == 2
    assert "is not allowed" in capsys.readouterr().err
