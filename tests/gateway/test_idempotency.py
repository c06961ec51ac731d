"""Retries and concurrent requests (docs/api.md, "Retries and concurrent edits"): an
`Idempotency-Key` makes a retried `POST .../run`, `/restores` or `.../verify` answer its first
answer and start nothing twice; a job runs once at a time however many ask."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from shared.cli import jobs as cli_jobs
from shared.db.idempotency import IdempotencyKey
from shared.db.models import Outbox, Restore, RestorePointRow, Run
from shared.settings import VCenterSettings
from tests.gateway.conftest import Api, MakeApi

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
VC = VCenterSettings(name="vc1", url="https://vc1.example.com/sdk", username="u", password=SecretStr("p"))
RP = "rp-20261126T090000Z-00000001"
JOB = {"name": "nightly", "vcenter": "vc1", "select": [{"name": "batch-*"}]}  # no VM to ask vCenter for


async def call(api: Api, method: str, path: str, key: str | None = None, **kw: Any) -> tuple[int, Any, Any]:
    """status, JSON body and headers; `key` goes in Idempotency-Key."""
    headers = {**api.auth, **kw.pop("headers", {}), **({"Idempotency-Key": key} if key is not None else {})}
    async with api.client.request(method, f"/api/v1{path}", headers=headers, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


def runs_of(api: Api, job_id: str) -> list[str]:
    with api.ctx.sessions() as s:
        return list(s.scalars(select(Run.id).where(Run.job_id == job_id)))


def finish_runs(api: Api) -> None:
    with api.ctx.sessions.begin() as s:
        s.execute(update(Run).values(state="succeeded", finished_at=T0))


def cli(api: Api, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="vbm")
    cli_jobs.add_parsers(parser.add_subparsers(dest="command", required=True))
    return cli_jobs.run(parser.parse_args(argv), api.ctx.settings)


async def test_a_retried_run_answers_the_first_answer(
    make_api: MakeApi, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    api = await make_api(db_url, vcenters=(VC,))
    status, job, _ = await call(api, "POST", "/jobs", json=JOB)
    assert status == 201, job
    run = f"/jobs/{job['id']}/run"

    status, first, headers = await call(api, "POST", run, "retry-1")
    assert status == 202 and "Idempotent-Replayed" not in headers
    location = headers["Location"]
    status, again, headers = await call(api, "POST", run, "retry-1")
    assert (status, again) == (202, first) and headers["Idempotent-Replayed"] == "true"
    assert headers["Location"] == location == f"/api/v1/runs/{first['run_id']}"
    assert runs_of(api, job["id"]) == [first["run_id"]]

    status, refused, _ = await call(api, "POST", run, "retry-1", json={"colour": "red"})
    assert status == 422 and refused["detail"].startswith("Idempotency-Key: was used at ")
    assert "with another body" in refused["detail"]
    status, busy, _ = await call(api, "POST", run)  # no key: the job is running
    assert status == 409 and first["run_id"] in busy["detail"] and "in progress" in busy["detail"]
    other = api.new_key("other")  # one key of another caller is another key
    status, busy, _ = await call(api, "POST", run, "retry-1", headers={"X-API-Key": other})
    assert status == 409 and first["run_id"] in busy["detail"]
    status, busy, _ = await call(api, "POST", run, "retry-2")  # a failure is not remembered
    assert status == 409
    finish_runs(api)
    status, second, _ = await call(api, "POST", run, "retry-2")
    assert status == 202 and second["run_id"] != first["run_id"]

    for bad, why in (
        ("k" * 256, "Idempotency-Key: is 256 characters long: at most 255"),
        ("a\tb", "Idempotency-Key: holds '\\t': only printable ASCII"),
        ("", "Idempotency-Key: is empty"),
    ):
        status, refused, _ = await call(api, "POST", run, bad)
        assert status == 422 and refused["detail"].startswith(why), (bad, refused)
    assert len(runs_of(api, job["id"])) == 2

    # 24 h later the key is new again
    finish_runs(api)
    with api.ctx.sessions.begin() as s:
        s.execute(update(IdempotencyKey).values(created_at=T0 - timedelta(days=2)))
    status, third, _ = await call(api, "POST", run, "retry-1")
    assert status == 202 and third["run_id"] not in (first["run_id"], second["run_id"])

    # the CLI keeps keys the same way (its caller is os:<user>, its route the command)
    finish_runs(api)
    assert cli(api, "job", "run", "nightly", "--idempotency-key", "cli-1", "--json") == 0
    out = capsys.readouterr()
    printed = json.loads(out.out)  # what POST .../run answers, and nothing else
    assert set(printed) == {"run_id", "run"} and "started before" not in out.err
    assert cli(api, "job", "run", "nightly", "--idempotency-key", "cli-1", "--json") == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == printed and "(the run this key started before)" in out.err
    assert cli(api, "job", "run", "nightly", "--idempotency-key", "x" * 300) == 1
    assert "Idempotency-Key: is 300 characters long" in capsys.readouterr().err
    assert cli(api, "job", "run", "nightly") == 1
    assert printed["run_id"] in capsys.readouterr().err  # running: refused, naming the run
    assert len(runs_of(api, job["id"])) == 4


async def test_concurrent_requests_start_one_run(make_api: MakeApi, db_url: str) -> None:
    """20 at once with one key: one run, 20 equal answers. 20 at once without: one 202, 19 409s
    naming its run."""
    api = await make_api(db_url, vcenters=(VC,))
    _, job, _ = await call(api, "POST", "/jobs", json=JOB)
    run = f"/jobs/{job['id']}/run"

    answers = await asyncio.gather(*(call(api, "POST", run, "same") for _ in range(20)))
    assert {status for status, _, _ in answers} == {202}
    assert len({json.dumps(body, sort_keys=True) for _, body, _ in answers}) == 1
    assert sum(h.get("Idempotent-Replayed") == "true" for _, _, h in answers) == 19
    assert runs_of(api, job["id"]) == [answers[0][1]["run_id"]]

    finish_runs(api)
    answers = await asyncio.gather(*(call(api, "POST", run) for _ in range(20)))
    started = [body for status, body, _ in answers if status == 202]
    refused = [body for status, body, _ in answers if status == 409]
    assert len(started) == 1 and len(refused) == 19, [status for status, _, _ in answers]
    assert all(started[0]["run_id"] in body["detail"] for body in refused)
    assert len(runs_of(api, job["id"])) == 2

    finish_runs(api)  # different keys: still one run at a time
    answers = await asyncio.gather(*(call(api, "POST", run, f"k{i}") for i in range(10)))
    assert sorted(status for status, _, _ in answers) == [202] + [409] * 9
    with api.ctx.sessions() as s:
        kept = list(s.scalars(select(IdempotencyKey.key).where(IdempotencyKey.key.like("k%"))))
    assert len(kept) == 1  # the refused ones are not remembered: a retry may succeed later


async def test_restores_and_verifies_with_a_key(make_api: MakeApi, db_url: str) -> None:
    api = await make_api(db_url, vcenters=(VC,))
    with api.ctx.sessions.begin() as s:
        s.add(
            RestorePointRow(
                id=RP, vcenter="vc1", vm_moref="vm-1", vm_name="web", repository="/repo", kind="full",
                disks=[{"key": 2000, "capacity": 1 << 30}], logical_bytes=1 << 30, bytes_read=0,
                bytes_stored=0, started_at=T0, finished_at=T0, verify_state="ok", verify_problems=[],
            )
        )  # fmt: skip
    body = {"restore_point_id": RP, "name": "web-restored", "datastore": "ds1"}
    answers = await asyncio.gather(*(call(api, "POST", "/restores", "r-1", json=body) for _ in range(10)))
    assert {status for status, _, _ in answers} == {202}
    assert len({b["id"] for _, b, _ in answers}) == 1
    # the same body written otherwise is the same body
    status, again, headers = await call(
        api, "POST", "/restores", "r-1", data=json.dumps(body, indent=4, sort_keys=True),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 202 and again == answers[0][1] and headers["Idempotent-Replayed"] == "true"
    status, refused, _ = await call(api, "POST", "/restores", "r-1", json={**body, "name": "other"})
    assert status == 422 and "Idempotency-Key: " in refused["detail"] and "another body" in refused["detail"]
    status, invalid, _ = await call(api, "POST", "/restores", "r-2", json={**body, "colour": "red"})
    assert status == 422 and invalid["detail"].startswith("colour:")
    with api.ctx.sessions() as s:
        assert len(list(s.scalars(select(Restore)))) == 1
        assert s.scalar(select(IdempotencyKey).where(IdempotencyKey.key == "r-2")) is None

    verify = f"/backups/{RP}/verify"
    status, first, _ = await call(api, "POST", verify, "v-1")
    status2, second, headers = await call(api, "POST", verify, "v-1")
    assert (status, status2) == (202, 202) and first == second and headers["Idempotent-Replayed"] == "true"
    status, other, _ = await call(api, "POST", verify, "v-2")
    assert status == 202 and other["request_id"] != first["request_id"]
    with api.ctx.sessions() as s:
        asked = [o for o in s.scalars(select(Outbox)) if o.subject == "vbm.verify.requested"]
    assert len(asked) == 2
    status, _, _ = await call(api, "POST", "/backups/rp-nope/verify", "v-3")
    assert status == 404
