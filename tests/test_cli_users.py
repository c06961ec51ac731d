"""`vbm user ...` and `vbm apikey create --user --role` through real processes on a real database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.gateway.answers.people import KeyAnswer, KeyList, NewKeyAnswer, UserAnswer, UserList
from shared.catalog import apikeys, users
from shared.db import make_engine, make_sessionmaker
from shared.model.access import Role
from shared.runtime.service import utcnow
from shared.settings_access import SecuritySettings
from tests.test_cli_jobs import ROOT, env_for

PW = "a long passphrase 1"


def vbm(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False, input=stdin,
    )  # fmt: skip


def test_users_and_their_keys_from_the_cli(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'vbm.db'}"  # the catalog's tests cover PostgreSQL
    env = env_for(tmp_path, db_url)
    made = vbm(env, "user", "add", "ana", "--role", "admin", "--password-stdin", stdin=PW + "\n")
    assert made.returncode == 0 and "added (admin)" in made.stdout, made.stderr
    weak = vbm(env, "user", "add", "bob", "--role", "operator", "--password-stdin", stdin="short\n")
    assert weak.returncode == 1 and "password: must be at least 12" in weak.stderr
    no_tty = vbm(env, "user", "add", "bob", "--role", "operator")
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr
    assert vbm(env, "user", "add", "bob", "--role", "operator", "--no-password").returncode == 0
    listed = json.loads(vbm(env, "user", "list", "--json").stdout)
    UserList.model_validate(listed)  # --json prints what the API answers
    assert [(u["name"], u["role"], u["password"]) for u in listed["users"]] == [
        ("ana", "admin", "set"),
        ("bob", "operator", "not set"),
    ]
    assert PW not in json.dumps(listed)
    strong = vbm(env, "apikey", "create", "bob-admin", "--user", "bob", "--role", "admin")
    assert strong.returncode == 1 and "cannot carry the role admin" in strong.stderr
    key = vbm(env, "apikey", "create", "bob-ro", "--user", "bob", "--role", "viewer", "--expires-days", "30")
    assert key.returncode == 0, key.stderr
    keys = KeyList.model_validate_json(vbm(env, "apikey", "list", "--user", "bob", "--json").stdout).keys
    keys = [k.model_dump(mode="json") for k in keys]
    assert [(k["name"], k["owner"], k["role"]) for k in keys] == [("bob-ro", "bob", "viewer")]
    assert keys[0]["expires_at"] is not None
    made_json = vbm(env, "apikey", "create", "bob-2", "--user", "bob", "--role", "viewer", "--json")
    assert NewKeyAnswer.model_validate_json(made_json.stdout).key.startswith("vbm_"), made_json
    out = vbm(env, "apikey", "revoke", "bob-2", "--user", "ana", "--json")
    assert out.returncode == 1 and out.stdout == "", out  # not ana's key
    revoked = KeyAnswer.model_validate_json(
        vbm(env, "apikey", "revoke", "bob-2", "--user", "bob", "--json").stdout
    )
    assert revoked.revoked_at is not None
    last = vbm(env, "user", "disable", "ana")
    assert last.returncode == 1 and "last enabled admin" in last.stderr
    assert (
        UserAnswer.model_validate_json(vbm(env, "user", "role", "bob", "viewer", "--json").stdout).role
        == Role.VIEWER
    )
    edit = ["user", "edit", "bob", "--display-name", "Bob B", "--disable", "--json"]
    assert not UserAnswer.model_validate_json(vbm(env, *edit).stdout).enabled
    shown = UserAnswer.model_validate_json(vbm(env, "user", "show", "bob", "--json").stdout)
    assert (shown.display_name, shown.enabled) == ("Bob B", False)
    assert vbm(env, "user", "enable", "bob").returncode == 0
    assert vbm(env, "user", "passwd", "bob", "--password-stdin", stdin=PW + "\n").returncode == 0
    assert vbm(env, "user", "disable", "bob").returncode == 0
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            assert apikeys.verify(s, key.stdout.strip(), utcnow())[1].endswith("belongs to a disabled user")
            assert users.authenticate(s, "ana", PW, utcnow(), SecuritySettings()).role == Role.ADMIN
    finally:
        engine.dispose()
    # every change above is in the audit log, as the operating system's user, from the CLI
    trail = json.loads(vbm(env, "audit", "--json", "--limit", "100").stdout)
    records = trail["records"] if isinstance(trail, dict) else trail
    done = [(r["action"], r["target"], r["result"].split(":")[0]) for r in records]
    for expected in [
        ("vbm user add", "user:ana", "ok"),
        ("vbm user add", "user:bob", "error"),
        ("vbm apikey create", "apikey:bob-ro", "ok"),
        ("vbm user disable", "user:ana", "error"),
        ("vbm user passwd", "user:bob", "ok"),
        ("vbm user edit", "user:bob", "ok"),
        ("vbm apikey revoke", "apikey:bob-2", "ok"),
    ]:
        assert expected in done, (expected, done)
    assert all(r["actor"].startswith("os:") and r["source"] == "cli" for r in records)
    assert PW not in json.dumps(records)
    assert vbm(env, "audit", "verify").returncode == 0
