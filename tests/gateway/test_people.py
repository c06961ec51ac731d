"""People through the API: the first admin by setup token, logins with lockout, sessions with
CSRF and timeouts, users, and keys that never carry more than their owner (real app, SQLite and
PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.gateway.answers.people import (
    KeyAnswer,
    KeyList,
    NewKeyAnswer,
    PasswordChanged,
    SessionAnswer,
    UserAnswer,
    UserList,
    WhoAmI,
)
from shared.catalog import apikeys, sessions, users
from shared.db import make_engine, upgrade
from shared.db.users import WebSession
from shared.model.access import Role
from shared.runtime.service import utcnow
from shared.settings_access import SecuritySettings
from tests.gateway.conftest import Api, MakeApi

PW = "correct horse battery"
RULES = SecuritySettings()


async def _json(api: Api, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
    async with api.client.request(method, f"/api/v1{path}", **kw) as resp:
        body = await resp.json() if resp.content_type.endswith("json") else None
        return resp.status, body, resp


def _add(api: Api, name: str, role: Role, password: str | None = PW) -> None:
    with api.ctx.sessions.begin() as s:
        users.add(s, name, role, utcnow(), RULES, password)


async def test_first_admin_by_setup_token_then_setup_is_closed(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url, with_key=False)
    with api.ctx.sessions.begin() as s:
        token = sessions.new_setup_token(s, utcnow())
    status, body, _ = await _json(
        api, "POST", "/setup", json={"token": "wrong", "name": "ana", "password": PW}
    )
    assert status == 403 and "setup token" in body["detail"]
    status, body, _ = await _json(
        api, "POST", "/setup", json={"token": token, "name": "ana", "password": "short"}
    )
    assert status == 422 and body["detail"].startswith("password: must be at least 12")
    status, body, resp = await _json(
        api, "POST", "/setup", json={"token": token, "name": "ana", "password": PW}
    )
    assert status == 201 and body["user"]["role"] == "admin" and body["user"]["password"] == "set"
    SessionAnswer.model_validate(body)  # the answer models of the OpenAPI document hold
    assert PW not in str(body)
    cookie = resp.cookies[sessions.COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and not cookie["secure"]  # plain HTTP here
    status, body, _ = await _json(api, "GET", "/users")
    assert status == 200 and [u.name for u in UserList.model_validate(body).users] == ["ana"]
    api.client.session.cookie_jar.clear()
    status, body, _ = await _json(api, "POST", "/setup", json={"token": token, "name": "bob", "password": PW})
    assert status == 409 and "setup is done" in body["detail"]


async def test_login_lockout_grows_and_says_the_same_for_unknown_users(
    make_api: MakeApi, db_url: str
) -> None:
    api = await make_api(db_url, with_key=False)
    _add(api, "ops", Role.OPERATOR)
    now = utcnow()
    api.ctx.clock = lambda: now
    unknown = await _json(api, "POST", "/session", json={"name": "ghost", "password": PW})
    wrong = await _json(api, "POST", "/session", json={"name": "ops", "password": PW + "x"})
    assert unknown[0] == wrong[0] == 401 and unknown[1]["detail"] == wrong[1]["detail"]
    for _ in range(RULES.lockout_after - 1):
        assert (await _json(api, "POST", "/session", json={"name": "ops", "password": "nope"}))[0] == 401
    status, body, resp = await _json(api, "POST", "/session", json={"name": "ops", "password": PW})
    assert status == 429 and "try again in 31 s" in body["detail"] and resp.headers["Retry-After"] == "31"
    now += timedelta(seconds=31)
    assert (await _json(api, "POST", "/session", json={"name": "ops", "password": "nope"}))[0] == 401
    with api.ctx.sessions() as s:
        row = users.get(s, "ops")
        assert row.locked_until == now + timedelta(seconds=60)  # doubled
    now += timedelta(seconds=61)
    status, body, _ = await _json(api, "POST", "/session", json={"name": "ops", "password": PW})
    assert status == 201 and body["user"]["name"] == "ops"
    with api.ctx.sessions() as s:
        assert users.get(s, "ops").failed_logins == 0


async def test_sessions_need_csrf_for_changes_and_expire(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url, with_key=False)
    _add(api, "vic", Role.VIEWER)
    now = utcnow()
    api.ctx.clock = lambda: now
    status, body, _ = await _json(api, "POST", "/session", json={"name": "vic", "password": PW})
    assert status == 201
    csrf = body["csrf_token"]
    status, me, _ = await _json(api, "GET", "/session")
    assert (
        status == 200 and me["user"]["name"] == "vic" and me["csrf_token"] == csrf and me["via"] == "session"
    )
    WhoAmI.model_validate(me)
    assert (await _json(api, "GET", "/jobs"))[0] == 200
    status, body, _ = await _json(api, "POST", "/keys", json={"name": "mine"})
    assert status == 403 and "X-CSRF-Token" in body["detail"]
    status, body, _ = await _json(
        api, "POST", "/keys", json={"name": "mine"}, headers={"X-CSRF-Token": "forged"}
    )
    assert status == 403
    status, body, _ = await _json(api, "POST", "/keys", json={"name": "mine"}, headers={"X-CSRF-Token": csrf})
    assert status == 201 and NewKeyAnswer.model_validate(body).key.startswith("vbm_")
    assert body["role"] == "viewer"
    status, body, _ = await _json(api, "POST", "/jobs", json={}, headers={"X-CSRF-Token": csrf})
    assert status == 403 and "jobs:write" in body["detail"]
    # idle: 31 minutes without a request
    now += timedelta(minutes=31)
    status, body, _ = await _json(api, "GET", "/jobs")
    assert status == 401 and "idle" in body["detail"]
    # absolute: requests every 20 minutes keep it alive until 12 h have passed
    status, body, _ = await _json(api, "POST", "/session", json={"name": "vic", "password": PW})
    start = now
    while now < start + timedelta(hours=12):
        assert (await _json(api, "GET", "/jobs"))[0] == 200, now - start
        now += timedelta(minutes=20)
    status, body, _ = await _json(api, "GET", "/jobs")
    assert status == 401 and "time limit" in body["detail"]
    # logout ends it at once
    status, body, _ = await _json(api, "POST", "/session", json={"name": "vic", "password": PW})
    csrf = body["csrf_token"]
    assert (await _json(api, "DELETE", "/session"))[0] == 403  # a change: CSRF needed
    assert (await _json(api, "DELETE", "/session", headers={"X-CSRF-Token": csrf}))[0] == 204
    assert (await _json(api, "GET", "/session"))[0] == 401
    # sessions long over are forgotten at the next login
    with api.ctx.sessions() as s:
        assert s.query(WebSession).count() == 3
    now += timedelta(days=2)
    assert (await _json(api, "POST", "/session", json={"name": "vic", "password": PW}))[0] == 201
    with api.ctx.sessions() as s:
        assert s.query(WebSession).count() == 1


async def test_keys_carry_at_most_their_owner_role(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url, with_key=False)
    _add(api, "root", Role.ADMIN)
    _add(api, "ops", Role.OPERATOR)
    with api.ctx.sessions.begin() as s:
        _, ops_key = apikeys.create(s, "ops-key", utcnow(), owner="ops")
        with pytest.raises(apikeys.ApiKeyError, match="cannot carry the role admin"):
            apikeys.create(s, "too-strong", utcnow(), owner="ops", role=Role.ADMIN)
        _, root_key = apikeys.create(s, "root-key", utcnow(), owner="root")
    as_ops = {"X-API-Key": ops_key}
    status, body, _ = await _json(api, "POST", "/keys", json={"name": "x", "role": "admin"}, headers=as_ops)
    assert status == 403 and "cannot mint a key carrying admin" in body["detail"]
    status, body, _ = await _json(api, "POST", "/keys", json={"name": "ro", "role": "viewer"}, headers=as_ops)
    assert status == 201 and body["owner"] == "ops"
    ro = {"X-API-Key": body["key"]}
    assert (await _json(api, "POST", "/jobs/no-such/run", headers=ro))[0] == 403
    assert (await _json(api, "POST", "/jobs/no-such/run", headers=as_ops))[0] == 404  # allowed, no job
    # the owner demoted: their operator key acts as a viewer at once
    as_root = {"X-API-Key": root_key}
    status, body, _ = await _json(api, "PUT", "/users/ops", json={"role": "viewer"}, headers=as_root)
    assert status == 200 and UserAnswer.model_validate(body).role == Role.VIEWER
    assert (await _json(api, "POST", "/jobs/no-such/run", headers=as_ops))[0] == 403
    # the owner disabled: nothing
    assert (await _json(api, "PUT", "/users/ops", json={"enabled": False}, headers=as_root))[0] == 200
    status, body, _ = await _json(api, "GET", "/jobs", headers=as_ops)
    assert status == 401 and "disabled" in body["detail"]
    # an expired key
    now = utcnow()
    with api.ctx.sessions.begin() as s:
        _, short = apikeys.create(s, "short", now, owner="root", expires_at=now + timedelta(days=1))
    api.ctx.clock = lambda: now + timedelta(days=1, seconds=1)
    status, body, _ = await _json(api, "GET", "/jobs", headers={"X-API-Key": short})
    assert status == 401 and "expired" in body["detail"]
    # the last admin can be neither disabled nor demoted
    status, body, _ = await _json(api, "PUT", "/users/root", json={"role": "operator"}, headers=as_root)
    assert status == 409 and "last enabled admin" in body["detail"]
    # bad bodies name the field
    status, body, _ = await _json(api, "POST", "/users", json={"name": "x", "role": "god"}, headers=as_root)
    assert status == 422 and body["detail"].startswith("role")
    status, body, _ = await _json(
        api,
        "POST",
        "/users",
        json={"name": "eve", "role": "viewer", "password": "aaaaaaaaaaaaa"},
        headers=as_root,
    )
    assert status == 422 and "too easy" in body["detail"]
    status, body, _ = await _json(api, "GET", "/users/root/keys", headers=as_root)
    assert status == 200 and {k.name for k in KeyList.model_validate(body).keys} == {"root-key", "short"}
    assert all("key" not in k and "secret" not in str(k) for k in body["keys"])
    status, body, _ = await _json(api, "DELETE", "/keys/short", headers=as_root)
    assert status == 200 and KeyAnswer.model_validate(body).revoked_at is not None
    status, body, _ = await _json(api, "GET", "/session", headers=as_root)
    assert status == 200 and WhoAmI.model_validate(body).key_id == body["key_id"] != None  # noqa: E711
    change = {"current_password": PW, "new_password": PW + " 2"}
    status, body, _ = await _json(api, "PUT", "/session/password", json=change, headers=as_root)
    assert status == 200 and PasswordChanged.model_validate(body).csrf_token is None


def test_keys_of_before_become_admin_keys_of_a_migrated_admin(tmp_path: Any, caplog: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0010")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO api_keys (id, name, secret_sha256, created_at) VALUES"
                " ('0123456789abcdef', 'old', :sha, :now)"
            ),
            {"sha": "ab" * 32, "now": utcnow()},
        )
    upgrade(engine)
    assert "now admin keys owned by the user 'admin'" in caplog.text
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT owner, role FROM api_keys")).one() == ("admin", "admin")
        assert conn.execute(sa.text("SELECT name, role, password_hash FROM users")).one() == (
            "admin",
            "admin",
            None,
        )
    engine.dispose()
