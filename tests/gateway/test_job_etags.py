"""ETag/If-Match on jobs (docs/api.md, "Retries and concurrent edits"): two admins editing one
job cannot overwrite each other silently."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import pytest
from pydantic import SecretStr

from shared.cli import jobs as cli_jobs
from shared.settings import VCenterSettings
from tests.gateway.conftest import Api, MakeApi

VC = VCenterSettings(name="vc1", url="https://vc1.example.com/sdk", username="u", password=SecretStr("p"))
JOB = {"name": "nightly", "vcenter": "vc1", "select": [{"name": "batch-*"}]}  # no VM to ask vCenter for


async def call(
    api: Api, method: str, path: str, if_match: str | None = None, **kw: Any
) -> tuple[int, Any, Any]:
    headers = {**api.auth, **({"If-Match": if_match} if if_match is not None else {})}
    async with api.client.request(method, f"/api/v1{path}", headers=headers, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


def cli(api: Api, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="vbm")
    cli_jobs.add_parsers(parser.add_subparsers(dest="command", required=True))
    return cli_jobs.run(parser.parse_args(argv), api.ctx.settings)


async def test_a_stale_if_match_is_refused(
    make_api: MakeApi, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    api = await make_api(db_url, vcenters=(VC,))
    status, job, headers = await call(api, "POST", "/jobs", json=JOB)
    assert status == 201 and headers["ETag"] == job["etag"] and job["etag"].startswith('"')
    path = f"/jobs/{job['id']}"
    status, read, headers = await call(api, "GET", path)
    assert status == 200 and headers["ETag"] == job["etag"] and read == job
    v1 = job["etag"]

    status, edited, headers = await call(api, "PUT", path, v1, json={**JOB, "enabled": False})
    assert status == 200 and edited["enabled"] is False
    v2 = headers["ETag"]
    assert v2 == edited["etag"] != v1
    assert (await call(api, "GET", path))[2]["ETag"] == v2

    status, refused, _ = await call(api, "PUT", path, v1, json={**JOB, "name": "lost"})
    assert status == 412 and refused["detail"].startswith("If-Match: job nightly")
    assert v2 in refused["detail"]
    status, _, _ = await call(api, "PUT", path, f"{v1}, {v2}", json=JOB)  # a list: any of them
    assert status == 200
    status, now, headers = await call(api, "GET", path)
    v3 = headers["ETag"]
    assert now["name"] == "nightly" and now["enabled"] is True and v3 not in (v1, v2)
    status, _, _ = await call(api, "PUT", path, f"W/{v3}", json=JOB)  # a weak tag never matches
    assert status == 412
    for bad in ("abc", '"unclosed', '"a"b"'):
        status, refused, _ = await call(api, "PUT", path, bad, json=JOB)
        assert status == 422 and refused["detail"].startswith("If-Match: "), (bad, refused)
    status, _, headers = await call(api, "PUT", path, "*", json=JOB)
    assert status == 200 and headers["ETag"] != v3
    status, _, headers = await call(api, "PUT", path, json=JOB)  # without If-Match: as ever
    assert status == 200
    status, _, _ = await call(api, "PUT", "/jobs/nope", "*", json=JOB)
    assert status == 404

    # the CLI changes the version too, so an edit made from what was read before it is refused
    before = headers["ETag"]
    assert cli(api, "job", "disable", "nightly") == 0
    status, _, headers = await call(api, "GET", path)
    assert headers["ETag"] != before
    assert cli(api, "job", "edit", "nightly", "--name", "nightly-2", "--json") == 0
    assert '"name": "nightly-2"' in capsys.readouterr().out
    status, refused, headers = await call(api, "PUT", path, before, json=JOB)
    assert status == 412
    status, after, _ = await call(api, "GET", path)
    assert after["name"] == "nightly-2" and after["enabled"] is False


async def test_concurrent_edits_from_one_version(make_api: MakeApi, db_url: str) -> None:
    """10 edits at once, each from the same ETag: one is saved, 9 are 412."""
    api = await make_api(db_url, vcenters=(VC,))
    _, job, headers = await call(api, "POST", "/jobs", json=JOB)
    path, etag = f"/jobs/{job['id']}", headers["ETag"]
    answers = await asyncio.gather(
        *(call(api, "PUT", path, etag, json={**JOB, "name": f"edit-{i}"}) for i in range(10))
    )
    assert sorted(status for status, _, _ in answers) == [200] + [412] * 9
    saved = next(body for status, body, _ in answers if status == 200)
    _, now, headers = await call(api, "GET", path)
    assert now["name"] == saved["name"] and headers["ETag"] == saved["etag"]
