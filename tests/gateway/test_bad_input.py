"""Input that can be wrong gets a 4xx naming what was wrong, never a 500; errors say where.

Each case here was a 500 (or a silent acceptance of something that can never work) found by a
probe of the API against `vbm up`.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import unquote

import pytest

from lab.launcher import Lab
from services.gateway.api_runs import content_disposition
from tests.gateway.conftest import MakeApi, lab_vcenter
from tests.gateway.test_jobs import body
from tests.gateway.test_runs import _one_point


async def test_errors_name_the_path_and_the_root_says_where_things_are(
    make_api: MakeApi, tmp_path: Path
) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    status, problem = await api.call("GET", "/nope/deeper")
    assert status == 404 and problem["detail"].startswith("no such path: GET /api/v1/nope/deeper")
    async with api.client.get("/api/v1/nothing-here") as resp:  # no key: a missing route is still 404
        assert resp.status == 404
    status, problem = await api.call("DELETE", "/runs")
    assert status == 405 and problem["detail"] == "DELETE is not allowed on /api/v1/runs (allowed: GET, HEAD)"
    async with api.client.get("/", headers={"Accept": "text/html"}) as resp:  # a browser, no key
        assert resp.status == 200 and resp.content_type == "text/html"  # the web UI's login page
        assert "Log in" in await resp.text() and resp.url.path == "/login"
    async with api.client.get("/") as resp:
        assert resp.status == 200 and (await resp.json())["api"] == "/api/v1"
    big = io.BytesIO(b"x" * (1024 * 1024 + 1))
    async with api.client.post("/api/v1/jobs", data=big, headers=api.auth) as resp:
        assert resp.status == 413 and "larger than 1024 KiB" in (await resp.json())["detail"]


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "detail"),
    [
        ("POST", "/jobs", '{"name": ' + "[" * 100_000, 400, "body is nested deeper than 32 levels"),
        ("POST", "/jobs", "[" * 40 + "]" * 40, 400, "body is nested deeper than 32 levels"),
        (
            "POST",
            "/jobs",
            '{"name": "x", "repository": "/backups/p\\ud800"}',
            422,
            "repository: contains a lone",
        ),
        ("POST", "/jobs", '{"name": "a\\u0000b"}', 422, "name: contains a NUL character"),
        ("POST", "/jobs", b'{"name": "\xff"}', 400, "body is not valid JSON"),
        ("GET", "/alerts?limit=%C2%B2", None, 422, "limit: '²' is not a whole number from 1 to 1000"),
        ("GET", "/notifications?limit=%C2%B2", None, 422, "limit: '²' is not a whole number"),
        ("GET", "/runs?limit=%C2%B2", None, 422, "limit: '²' is not a whole number from 1 to 500"),
        (
            "POST",
            "/gc?dry_run=true&repository=%00",
            None,
            422,
            "repository: contains a NUL character",  # any query value (app.errors: check_parameters)
        ),
        ("GET", "/prune?job=a%00", None, 422, "job: contains a NUL character"),
        ("GET", "/jobs/a%00b", None, 422, "job_id: contains a NUL character"),
        (
            "POST",
            "/gc?dry_run=true&repository=s3://127.0.0.1:1/b?tls=false",
            None,
            422,
            "repository: 's3://127.0.0.1:1/b?tls=false': 'b' is not a valid S3 bucket name",
        ),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field(
    make_api: MakeApi,
    tmp_path: Path,
    method: str,
    path: str,
    payload: str | bytes | None,
    status: int,
    detail: str,
) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    headers = {**api.auth, "Content-Type": "application/json"}
    async with api.client.request(method, f"/api/v1{path}", data=payload, headers=headers) as resp:
        problem = await resp.json()
        assert (resp.status, problem["detail"][: len(detail)]) == (status, detail), problem


async def test_jobs_that_could_never_work_are_refused_at_the_door(
    make_api: MakeApi, tmp_path: Path, lab: Lab
) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}", (lab_vcenter(lab),))
    cases = [
        ({"retention": {"keep_within_days": 1_000_000}}, "retention.keep_within_days: Input should be less"),
        (
            {"schedule": {"kind": "cron", "cron": "0 0 30 2 *"}},
            "schedule: Value error, cron '0 0 30 2 *' never",
        ),
        ({"repository": "/r" * 600}, "repository: Value error, a repository location is at most 1024"),
        ({"repository": "/backups/a\nb"}, "repository: Value error, a repository location cannot hold"),
        (
            {"repository": "s3://host/B_ucket"},
            "repository: Value error, 's3://host/B_ucket': 'B_ucket' is not",
        ),
        (
            {"options": {"replicate_to": ["s3://h/xy"]}},
            "options.replicate_to: Value error, 's3://h/xy': 'xy'",
        ),
    ]
    for change, detail in cases:
        status, problem = await api.call("POST", "/jobs", json=body(**change))
        assert (status, problem["detail"][: len(detail)]) == (422, detail), problem
    status, listed = await api.call("GET", "/jobs")
    assert listed["total"] == 0


async def test_restore_names_are_vm_names_and_stay_inside_their_folder(
    make_api: MakeApi, tmp_path: Path
) -> None:
    from shared.catalog.restores import vm_name_problem

    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    for name in ("..", ".", "a/b", "a\\b", "50%", " web", "web ", "tab\there", "x" * 81):
        status, problem = await api.call(
            "POST", "/restores", json={"restore_point_id": "rp-x", "name": name, "datastore": "ds"}
        )
        assert status == 422 and problem["detail"].startswith("name: "), (name, problem)
    assert vm_name_problem('Prüf "VM" 東京') is None and vm_name_problem("web-01 (copy)") is None


async def test_download_names_survive_quotes_and_non_ascii(make_api: MakeApi, tmp_path: Path) -> None:
    api = await make_api(f"sqlite:///{tmp_path / 'vbm.db'}")
    name = 'Prüf "VM" 東京'
    rp_id, _ = await _one_point(api, tmp_path, b"\1" * 70_000, vm_name=name)
    async with api.client.get(f"/api/v1/backups/{rp_id}/disks/0", headers=api.auth) as resp:
        assert resp.status == 200
        header = resp.headers["Content-Disposition"]
        assert resp.content_disposition is not None and resp.content_disposition.filename == (
            f"{name}-{rp_id}-disk2000.img"
        )
    assert header.isascii()
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback == f"Pr_f _VM_ __-{rp_id}-disk2000.img"
    assert unquote(header.split("filename*=UTF-8''", 1)[1]) == f"{name}-{rp_id}-disk2000.img"
    assert content_disposition("a;b\\c.img") == (
        "attachment; filename=\"a_b_c.img\"; filename*=UTF-8''a%3Bb%5Cc.img"
    )
