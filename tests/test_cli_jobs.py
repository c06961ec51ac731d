"""`vbm job|run|backups|apikey` through real processes, on a real database and the lab."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lab.launcher import Lab
from services.gateway.answers import runs as answers
from shared.catalog import apikeys
from shared.catalog.jobs import job_row
from shared.cli.jobs import parse_schedule
from shared.db import make_engine, make_sessionmaker, upgrade
from shared.db.models import Job, Outbox, Restore, RestorePointRow, Run, Task
from shared.model.jobs import JobSpec, VMRef

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def env_for(tmp_path: Path, db_url: str, lab: Lab | None = None) -> dict[str, str]:
    """The environment of a `vbm` beside a running system: its database exists (vbm up made it)."""
    engine = make_engine(db_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VBM_")}
    env.update({"VBM_DATA_DIR": str(tmp_path / "data"), "VBM_DATABASE_URL": db_url})
    if lab is not None:
        vc = {"name": "lab", "url": lab.sdk_url, "username": lab.username, "password": lab.password}
        env["VBM_VCENTERS"] = json.dumps([{**vc, "verify_tls": False}])
    return env


def vbm(env: dict[str, str], *args: str, module: str = "shared.cli.jobs") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_schedule_shorthands() -> None:
    assert parse_schedule("cron:0 2 * * *") == {"kind": "cron", "cron": "0 2 * * *", "timezone": "UTC"}
    assert parse_schedule("every:240")["every_minutes"] == 240
    assert parse_schedule("weekly@03:15", "Europe/Berlin") == {
        "kind": "preset", "preset": "weekly", "at": "03:15", "timezone": "Europe/Berlin"
    }  # fmt: skip
    with pytest.raises(ValueError, match="whole minutes"):
        parse_schedule("every:often")


def test_apikey_create_list_revoke(tmp_path: Path, db_url: str) -> None:
    env = env_for(tmp_path, db_url)
    made = vbm(env, "apikey", "create", "ci")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("vbm_") and "not shown again" in made.stderr
    again = vbm(env, "apikey", "create", "ci")
    assert again.returncode == 1 and "exists already" in again.stderr
    listed = vbm(env, "apikey", "list")
    assert listed.returncode == 0 and "ci" in listed.stdout and key.split("_", 2)[2] not in listed.stdout
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            assert apikeys.verify(s, key)[0] is not None
        assert vbm(env, "apikey", "revoke", "ci").returncode == 0
        with make_sessionmaker(engine).begin() as s:
            assert "revoked" in apikeys.verify(s, key)[1]
    finally:
        engine.dispose()
    gone = vbm(env, "apikey", "revoke", "nobody")
    assert gone.returncode == 1 and "no API key named 'nobody'" in gone.stderr


def test_job_create_list_run_and_catalog(tmp_path: Path, lab: Lab) -> None:
    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = env_for(tmp_path, db_url, lab)
    env["VBM_NOTIFICATIONS__CHANNELS"] = json.dumps(
        [{"name": "ops", "type": "slack", "url": "https://h.example/1"}]
    )
    vm2 = lab.vm("vm2")["moref"]
    made = vbm(env, "job", "create", "--name", "nightly", "--vm", "vm1", "--vm", vm2,
               "--schedule", "daily@02:30", "--quiesce", "--no-cbt", "--notify", "ops",
               "--notify-on", "success", "--notify-on", "failure")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert f"vm1 ({lab.vm('vm1')['moref']}), vm2 ({vm2})" in made.stdout
    for args, error in [
        (["--name", "nightly", "--vm", "vm1"], "a job named 'nightly' exists already"),
        (["--name", "x", "--vm", "ghost"], "vms.0.name: no VM named 'ghost' on vCenter lab"),
        (["--name", "x", "--vm", "vm1", "--vcenter", "vc9"], "vcenter: unknown vCenter 'vc9'"),
        (["--name", "x", "--vm", "vm1", "--schedule", "cron:61 * * * *"], "schedule: Value error"),
        (["--name", "bad/name", "--vm", "vm1"], "name: String should match pattern"),
        (["--name", "x", "--vm", "vm1", "--notify", "opz"], "no notification channel named 'opz'"),
    ]:
        failed = vbm(env, "job", "create", *args)
        assert failed.returncode == 1 and error in failed.stderr, (args, failed.stderr)

    listed = vbm(env, "job", "list")
    assert listed.returncode == 0 and "nightly" in listed.stdout and "daily@02:30" in listed.stdout
    started = vbm(env, "job", "run", "nightly")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as s:
            job = s.query(Job).one()
            assert job.options["quiesce"] and not job.options["cbt"]
            assert job.options["notify"] == {"channels": ["ops"], "on": ["success", "failure"]}
            run = s.get(Run, run_id)
            assert run is not None and run.trigger == "manual" and run.job_id == job.id
            assert [o.msg_id for o in s.query(Outbox)] == [f"job.requested:{run_id}"]
    finally:
        engine.dispose()
    assert run_id in vbm(env, "run", "list", "--job", "nightly").stdout
    missing = vbm(env, "job", "run", "nope")
    assert missing.returncode == 1 and "no job with id or name 'nope'" in missing.stderr
    empty = vbm(env, "backups", "ls", "--job", "nightly")
    assert empty.returncode == 0 and "0 of 0 restore points" in empty.stderr


def test_job_create_says_the_selectors_of_a_job_without_vms(tmp_path: Path, lab: Lab) -> None:
    env = env_for(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}", lab)
    made = vbm(env, "job", "create", "--name", "x", "--select-name", "batch-*")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("created job job-") and "'x': name batch-*; repository " in made.stdout


def test_run_watch_follows_progress_to_the_end(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as s:
        s.add(job_row(JobSpec(name="j", vcenter="lab", vms=(VMRef(moref="vm-1"),)), "job-w", T0, "/r"))
        s.flush()
        for run_id in ("job-w-1", "job-w-2"):
            s.add(Run(id=run_id, job_id="job-w", trigger="api", state="running", created_at=T0))
        s.flush()
        s.add(
            Task(id="job-w-1.vm-1", run_id="job-w-1", vcenter="lab", vm_moref="vm-1", vm_name="web",
                 phase="transfer", state="running", bytes_total=8 << 20, created_at=T0, updated_at=T0)
        )  # fmt: skip
        s.get(Run, "job-w-2").state = "failed"  # type: ignore[union-attr]
        s.add(
            RestorePointRow(id="rp-20261126T090000Z-0000000a", job_id="job-w", vcenter="lab", vm_moref="vm-1",
                            vm_name="web", repository="/r", kind="full", disks=[], logical_bytes=8 << 20,
                            bytes_read=8 << 20, bytes_stored=3 << 20, started_at=T0, finished_at=T0,
                            verify_problems=[])
        )  # fmt: skip
    env = env_for(tmp_path, db_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli.jobs", "run", "watch", "job-w-1"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)
        with sessions.begin() as s:
            task = s.get(Task, "job-w-1.vm-1")
            assert task is not None
            task.bytes_done, task.rate = 4 << 20, 2 << 20
        time.sleep(1.0)
        with sessions.begin() as s:
            s.get(Task, "job-w-1.vm-1").state = "succeeded"  # type: ignore[union-attr]
            s.get(Run, "job-w-1").state = "succeeded"  # type: ignore[union-attr]
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    engine.dispose()
    assert proc.returncode == 0, err
    assert "run job-w-1 of job job-w: running" in out and "run job-w-1 of job job-w: succeeded" in out
    assert "web" in out and "50%" in out and "4.0 MiB / 8.0 MiB" in out and "2.0 MiB/s  ETA 00:02" in out
    failed = vbm(env, "run", "watch", "job-w-2")
    assert failed.returncode == 1 and "failed" in failed.stdout
    listed = vbm(env, "backups", "ls", "--job", "j")
    assert listed.returncode == 0 and "1 of 1 restore points" in listed.stderr
    row = listed.stdout.splitlines()[1].split()
    assert row[:4] == ["rp-20261126T090000Z-0000000a", "lab", "web", "full"] and row[-1] == "pending"
    assert "8.0 MiB    3.0 MiB" in listed.stdout
    shown = json.loads(vbm(env, "run", "show", "job-w-1", "--json").stdout)
    assert answers.RunDetail.model_validate(shown).tasks[0].vm_name == "web"
    page = answers.BackupPage.model_validate_json(vbm(env, "backups", "ls", "--json").stdout)
    assert page.total == 1 and page.backups[0].vm_name == "web"
    rp = "rp-20261126T090000Z-0000000a"
    detail = answers.BackupDetail.model_validate_json(vbm(env, "backups", "show", rp, "--json").stdout)
    assert detail.manifest is None and detail.manifest_error  # its repository /r is not there
    asked = [vbm(env, "verify", rp, "--idempotency-key", "K1", "--json") for _ in range(2)]
    first, again = (answers.VerifyQueued.model_validate_json(a.stdout) for a in asked)
    assert first == again and "the request this key made before" in asked[1].stderr
    with sessions() as s:
        queued = [o for o in s.query(Outbox) if o.subject == "vbm.verify.requested"]
        assert len(queued) == 1 and first.request_id in queued[0].payload
    zero = vbm(env, "backups", "ls", "--limit", "0")
    assert zero.returncode == 1 and "limit: '0' is not a whole number from 1 to 500" in zero.stderr
    unknown = vbm(env, "run", "watch", "nope")
    assert unknown.returncode == 1 and "no run 'nope'" in unknown.stderr


def test_an_admin_manages_jobs_from_the_cli(tmp_path: Path, lab: Lab) -> None:
    """What the API does to jobs, the CLI does too: edit, enable/disable, cancel, delete, VMs."""
    db_url = f"sqlite:///{tmp_path / 'admin.db'}"
    env = env_for(tmp_path, db_url, lab)
    second = tmp_path / "offsite"
    made = vbm(env, "job", "create", "--name", "web", "--vm", "vm1", "--keep-daily", "7",
               "--keep-monthly", "6", "--replicate-to", str(second), "--schedule", "daily@01:00")  # fmt: skip
    assert made.returncode == 0, made.stderr

    def job() -> dict[str, object]:
        shown = vbm(env, "job", "show", "web")
        assert shown.returncode == 0, shown.stderr
        return dict(json.loads(shown.stdout))

    first = job()
    assert first["retention"] == {"keep_daily": 7, "keep_monthly": 6}
    listed_json = vbm(env, "job", "list", "--json")  # what GET /api/v1/jobs answers, and only that
    assert json.loads(listed_json.stdout) == {"jobs": [first], "total": 1}, listed_json.stderr
    assert first["options"]["replicate_to"] == [str(second)]  # type: ignore[index]
    edited = vbm(env, "job", "edit", "web", "--add-vm", "vm2", "--keep-daily", "0", "--keep-last", "3",
                 "--schedule", "weekly@03:00", "--no-replicate", "--name", "web-and-db")  # fmt: skip
    assert edited.returncode == 0, edited.stderr
    now = json.loads(vbm(env, "job", "show", "web-and-db").stdout)
    assert [v["name"] for v in now["vms"]] == ["vm1", "vm2"] and now["id"] == first["id"]
    assert now["retention"] == {"keep_monthly": 6, "keep_last": 3}
    assert now["schedule"]["preset"] == "weekly" and now["options"]["replicate_to"] == []
    assert vbm(env, "job", "edit", "web-and-db", "--remove-vm", "vm1").returncode == 0
    assert [v["name"] for v in json.loads(vbm(env, "job", "show", first["id"]).stdout)["vms"]] == ["vm2"]
    bad = vbm(env, "job", "edit", first["id"], "--remove-vm", "ghost")
    assert bad.returncode == 1 and "the job holds no VM 'ghost'" in bad.stderr

    assert vbm(env, "job", "disable", first["id"]).returncode == 0
    assert json.loads(vbm(env, "job", "show", first["id"]).stdout)["enabled"] is False
    assert vbm(env, "job", "enable", first["id"]).returncode == 0
    assert json.loads(vbm(env, "job", "show", first["id"]).stdout)["enabled"] is True

    run_id = vbm(env, "job", "run", first["id"]).stdout.strip()
    cancelled = vbm(env, "run", "cancel", run_id, "--json")
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["id"] == run_id and json.loads(cancelled.stdout)["cancel_requested"]
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as s:
            assert s.get(Run, run_id).cancel_requested  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert "1 run(s)" in vbm(env, "job", "cancel", first["id"]).stdout
    ended = vbm(env, "run", "cancel", "nope")
    assert ended.returncode == 1 and "no run 'nope'" in ended.stderr

    listed = vbm(env, "vm", "ls")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[1]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["vm1"][-1] == "no" and rows["vm2"][-1] == "yes"  # protected by a job
    vms = json.loads(vbm(env, "vm", "ls", "--json").stdout)
    assert [v["name"] for v in vms["vms"]] == ["vm1", "vm2"] and vms["vcenters"] == ["lab"]

    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine).begin() as s:
            s.add(
                RestorePointRow(id="rp-20261126T090000Z-0000000b", job_id=first["id"], vcenter="lab",
                                vm_moref=lab.vm("vm2")["moref"], vm_name="vm2", repository="/r", kind="full",
                                disks=[], logical_bytes=0, bytes_read=0, bytes_stored=0, started_at=T0,
                                finished_at=T0, verify_problems=[])
            )  # fmt: skip
    finally:
        engine.dispose()
    fast = subprocess.run(
        [sys.executable, "-m", "shared.cli", "restore", "start", "rp-20261126T090000Z-0000000b", "--in-place",
         "--yes", "--method", "fast"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert fast.returncode == 1 and "method: a fast in-place restore" in fast.stderr, fast.stderr
    again = ("restore", "start", "rp-20261126T090000Z-0000000b", "--in-place", "--yes", "--json")
    made_once = [vbm(env, *again, "--idempotency-key", "k-1", module="shared.cli") for _ in range(2)]
    assert [m.returncode for m in made_once] == [0, 0], made_once[1].stderr
    restored = [json.loads(m.stdout) for m in made_once]
    assert (
        restored[0] == restored[1] and "started before" in made_once[1].stderr
    )  # the second started nothing
    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as s:
            assert [r.id for r in s.query(Restore)] == [restored[0]["id"]]
    finally:
        engine.dispose()
    no_format = vbm(env, "restore", "start", "rp-20261126T090000Z-0000000b", "--in-place", "--yes",
                    "--disk-format", "thin", module="shared.cli")  # fmt: skip
    assert no_format.returncode == 1 and "disk_format: an in-place restore" in no_format.stderr
    thick = vbm(env, "restore", "start", "rp-20261126T090000Z-0000000b", "--name", "vm2-thick",
                "--datastore", "LocalDS_0", "--disk-format", "thick", "--json",
                module="shared.cli")  # fmt: skip
    assert thick.returncode == 0, thick.stderr
    target = json.loads(thick.stdout)["target"]
    assert target["disk_format"] == "thick" and target["requested_by"].startswith("os:")

    refused = vbm(env, "job", "delete", first["id"])  # no terminal to ask: --yes is needed
    assert refused.returncode == 1 and "needs --yes" in refused.stderr
    gone = vbm(env, "job", "delete", first["id"], "--yes", "--force")
    assert gone.returncode == 0 and "deleted job" in gone.stdout, gone.stderr
    assert "web-and-db" not in vbm(env, "job", "list").stdout
