"""The secret box and its rotation on a real database (SQLite and PostgreSQL), and a service's
vCenter pool finding a vCenter added through the API, or failing only it when its key is lost."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from lab.launcher import Lab
from shared.catalog import vcenters as vcstore
from shared.catalog.secrets import ENCRYPTED, rotate
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import VCenterRow
from shared.runtime.bus import Permanent
from shared.settings import Settings, VCenterSettings
from shared.vault import VaultError, key_path, load
from shared.vsphere.pool import VCenters, sync_rows

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
SECRET = "Vault-canary-3c9d2e"


def vc(name: str, password: str = SECRET, url: str = "https://vc.example/sdk") -> VCenterSettings:
    return VCenterSettings(name=name, url=url, username="backup", password=SecretStr(password))


def test_the_key_file_is_made_private_once_and_refused_when_not(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    vault = load(settings)
    path = key_path(settings.data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and vault.source == str(path)
    token = vault.encrypt(SECRET)
    assert SECRET not in token and load(settings).decrypt(token, "x") == SECRET  # the same key again
    path.chmod(0o644)
    with pytest.raises(VaultError, match=r"may be read by others.*chmod 600"):
        load(settings)
    path.chmod(0o600)
    with pytest.raises(VaultError, match="does not exist"):
        load(Settings(data_dir=tmp_path / "other"), create=False)


def test_keys_from_the_environment(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    written = load(Settings(data_dir=tmp_path, secret_key=SecretStr(old))).encrypt(SECRET)
    both = load(Settings(data_dir=tmp_path, secret_key=SecretStr(f"{new}, {old}")))
    assert both.decrypt(written, "x") == SECRET  # the old key still decrypts
    assert Fernet(new.encode()).decrypt(both.encrypt("y").encode()) == b"y"  # the first encrypts
    assert not key_path(tmp_path).exists()  # no key file when the environment holds the keys
    only_new = load(Settings(data_dir=tmp_path, secret_key=SecretStr(new)))
    with pytest.raises(
        VaultError, match=r"the password of vCenter 'vc2' cannot be decrypted.*VBM_SECRET_KEY"
    ):
        only_new.decrypt(written, "the password of vCenter 'vc2'")
    with pytest.raises(VaultError, match="VBM_SECRET_KEY: key 1 is not a Fernet key"):
        load(Settings(data_dir=tmp_path, secret_key=SecretStr("not-a-key")))


@pytest.fixture
def sessions(db_url: str) -> sessionmaker[Session]:
    engine = make_engine(db_url)
    upgrade(engine)
    return make_sessionmaker(engine)


def stored_tokens(sessions: sessionmaker[Session]) -> dict[str, str | None]:
    with sessions() as s:
        return {r.name: r.password for r in s.scalars(select(VCenterRow))}


def test_rotate_reencrypts_everything_and_keeps_the_old_key(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    assert ("vcenters", "password") in {(e.table, e.column) for e in ENCRYPTED}
    settings = Settings(data_dir=tmp_path / "data")
    with sessions.begin() as s:
        for name in ("vc1", "vc2"):
            vcstore.save(s, settings, vc(name, f"{SECRET}-{name}"), T0)
    before = stored_tokens(sessions)
    old_key = key_path(settings.data_dir).read_bytes()
    engine = sessions.kw["bind"]
    done = rotate(engine, settings, T0)
    assert done.values == 2 and done.new_key is None and done.old_key_file is not None
    assert done.old_key_file.read_bytes() == old_key  # kept until the user deletes it
    assert stat.S_IMODE(key_path(settings.data_dir).stat().st_mode) == 0o600
    assert not list(settings.data_dir.glob("*.new"))
    after = stored_tokens(sessions)
    assert all(after[n] != before[n] for n in after)
    new_only = load(settings, create=False)
    assert len(new_only.keys) == 1 and new_only.keys[0] + b"\n" != old_key
    with sessions() as s:
        found, broken = vcstore.usable(s, settings)
    assert broken == {} and {v.name: v.password.get_secret_value() for v in found} == {
        "vc1": f"{SECRET}-vc1", "vc2": f"{SECRET}-vc2"
    }  # fmt: skip
    # the old key alone no longer opens them
    os.replace(done.old_key_file, key_path(settings.data_dir))
    with sessions() as s:
        _, broken = vcstore.usable(s, settings)
    assert set(broken) == {"vc1", "vc2"} and "the password of vCenter 'vc1'" in str(broken["vc1"])
    engine.dispose()


def test_rotate_with_the_key_in_the_environment(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    old = Fernet.generate_key().decode()
    settings = Settings(data_dir=tmp_path / "data", secret_key=SecretStr(old))
    with sessions.begin() as s:
        vcstore.save(s, settings, vc("vc1"), T0)
    engine = sessions.kw["bind"]
    done = rotate(engine, settings, T0)
    assert done.values == 1 and done.new_key and done.key_file is None
    rotated = settings.model_copy(update={"secret_key": SecretStr(f"{done.new_key},{old}")})
    with sessions() as s:
        row = s.get(VCenterRow, "vc1")
        assert row is not None and row.password is not None
        assert vcstore.settings_of(row, load(rotated)).password.get_secret_value() == SECRET
        with pytest.raises(VaultError):
            vcstore.settings_of(row, load(settings))  # the old key alone: no longer
    engine.dispose()


def test_a_rotation_that_meets_an_unreadable_value_changes_nothing(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    with sessions.begin() as s:
        vcstore.save(s, settings, vc("vc1"), T0)
        row = s.get(VCenterRow, "vc1")
        assert row is not None
        row.password = Fernet(Fernet.generate_key()).encrypt(b"x").decode()  # another key's
    before, key = stored_tokens(sessions), key_path(settings.data_dir).read_bytes()
    with pytest.raises(VaultError, match="the password of vCenter 'vc1' cannot be decrypted"):
        rotate(sessions.kw["bind"], settings, T0)
    assert stored_tokens(sessions) == before and key_path(settings.data_dir).read_bytes() == key
    assert sorted(p.name for p in settings.data_dir.iterdir()) == ["secret.key"]
    sessions.kw["bind"].dispose()


def test_sync_rows_keeps_vcenters_added_through_the_api(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", vcenters=(vc("conf"),))
    with sessions.begin() as s:
        vcstore.save(s, settings, vc("added"), T0)
        sync_rows(s, settings, T0)
    with sessions.begin() as s:
        sync_rows(s, Settings(data_dir=tmp_path / "data"), T0)  # "conf" is no longer configured
    with sessions() as s:
        assert [(r.name, r.source) for r in s.scalars(select(VCenterRow))] == [("added", "api")]
    sessions.kw["bind"].dispose()


async def test_the_pool_finds_a_stored_vcenter_and_fails_only_it(lab: Lab, tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'pool.db'}")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    settings = Settings(data_dir=tmp_path / "data")
    with sessions.begin() as s:
        vcstore.save(s, settings, vc("lab2", lab.password, lab.sdk_url).model_copy(
            update={"username": lab.username}), T0)  # fmt: skip
    pool = VCenters(settings, threads=2, load=vcstore.loader(settings, sessions))
    try:
        vms = await pool.call("lab2", lambda c: c.list_vms())
        assert sorted(v.name for v in vms) == ["vm1", "vm2"]
        with pytest.raises(Permanent, match="'nope' is not configured"):
            pool.get("nope")
        key_path(settings.data_dir).unlink()  # lost: the next read names the vCenter
        pool.forget("lab2")
        with pytest.raises(Permanent, match="the password of vCenter 'lab2' cannot be decrypted"):
            pool.get("lab2")
    finally:
        await pool.aclose()
        engine.dispose()
