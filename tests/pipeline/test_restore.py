"""Restore as a new VM on the lab: byte-identical disks, the new VM's hardware, and every fault
(name taken, network missing, unverified point, cancel) ending with nothing half-made."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from lab.launcher import DiskSpec, VMSpec
from shared.catalog.restores import RestoreRequest, request_restore
from shared.db.models import Restore, RestorePointRow
from shared.errors import Conflict
from shared.settings import Settings, VCenterSettings
from shared.vsphere import VCenter
from shared.vsphere.vmdk import GRAIN
from tests.pipeline.conftest import MIB, Pipeline, default_spec, now
from tests.plugins.webhook import WebhookReceiver


def settings(p: Pipeline) -> Settings:
    vc = VCenterSettings(
        name="lab",
        url=p.lab.sdk_url,
        username=p.lab.username,
        password=SecretStr(p.lab.password),
        verify_tls=False,
    )
    return Settings(data_dir=p.data, vcenters=(vc,))


def with_proxy(p: Pipeline, device_dir: Path, settle: float = 30) -> Settings:
    """The pipeline's settings, with the lab VM `vbm-proxy` as the hot-add proxy (services too)."""
    vcs = json.loads(p.env["VBM_VCENTERS"])
    vcs[0]["hotadd_proxy"] = "vbm-proxy"
    p.env.update(
        VBM_VCENTERS=json.dumps(vcs),
        VBM_HOTADD__DEVICE_DIR=str(device_dir),
        VBM_HOTADD__SETTLE_SECONDS=str(settle),
    )
    base = settings(p)
    return base.model_copy(
        update={"vcenters": (base.vcenters[0].model_copy(update={"hotadd_proxy": "vbm-proxy"}),)}
    )


def vcenter(p: Pipeline) -> VCenter:
    return VCenter(settings(p).vcenters[0])


async def backup(p: Pipeline) -> tuple[RestorePointRow, dict[int, bytes]]:
    job = p.create_job("restore", ["web"])
    content = {k: p.guest_disk("web", k) for k in (2000, 2001)}
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (row,) = p.restore_points(run)
    return row, content


async def restore(p: Pipeline, **body: object) -> str:
    with p.sessions.begin() as s:
        row = request_restore(s, RestoreRequest.model_validate(body), settings(p), now())
        restore_id = row.id
    await p.relay.publish_pending()
    return restore_id


async def wait_restore(p: Pipeline, restore_id: str, timeout: float = 60) -> Restore:
    deadline = time.monotonic() + timeout
    while True:
        with p.sessions() as s:
            row = s.get(Restore, restore_id)
            assert row is not None
            if row.state in ("succeeded", "failed", "cancelled"):
                return row
        if time.monotonic() > deadline:
            raise AssertionError(f"restore {restore_id} did not end\n{p.logs()}")
        await asyncio.sleep(0.2)


def folder(p: Pipeline, name: str) -> Path:
    return p.lab.datastore_dir / name


def success_hook(receiver: WebhookReceiver) -> str:
    """Notification settings: one webhook that hears of successes only."""
    return json.dumps(
        {"channels": [{"name": "hook", "type": "webhook", "url": receiver.url(), "on": ["success"]}]}
    )


async def titles(receiver: WebhookReceiver, n: int) -> list[str]:
    """The titles of the first `n` notifications, after making sure no more arrive."""
    got = await asyncio.to_thread(receiver.wait_for, n)
    await asyncio.sleep(1.0)
    assert len(receiver.received) == n, [r.json()["title"] for r in receiver.received]
    return [r.json()["title"] for r in got]


async def test_restore_as_new_vm_is_byte_identical(
    pipeline_factory: Callable[..., Pipeline], webhook_receiver: WebhookReceiver
) -> None:
    p = pipeline_factory(VBM_NOTIFICATIONS=success_hook(webhook_receiver))
    p.start("snapshotter", "mover", "verifier", "notifier")
    p.lab.guest_write("web", 2000, 4 * MIB, bytes(4 * MIB))  # a zero window, not to be written
    rp, content = await backup(p)
    p.lab.guest_write("web", 2000, 0, b"changed after the backup")  # the original moves on

    restore_id = await restore(
        p,
        restore_point_id=rp.id,
        name="web-restored",
        datastore="LocalDS_0",
        network="VM Network",
        power_on=True,
    )
    done = await wait_restore(p, restore_id)
    assert done.state == "succeeded", (done.error, p.logs())
    assert done.vm_moref and done.bytes_done == done.bytes_total == sum(content[k].__len__() for k in content)
    assert (folder(p, "web-restored") / "web-restored-flat.vmdk").read_bytes() == content[2000]
    assert (folder(p, "web-restored") / "web-restored_1-flat.vmdk").read_bytes() == content[2001]
    vmx = (folder(p, "web-restored") / "web-restored.vmx").read_text()
    assert 'displayName = "web-restored"' in vmx and "uuid.bios" not in vmx and "generatedAddress" not in vmx
    assert (
        'scsi0:0.fileName = "web-restored.vmdk"' in vmx and 'scsi0:1.fileName = "web-restored_1.vmdk"' in vmx
    )
    desc = (folder(p, "web-restored") / "web-restored_1.vmdk").read_text()
    assert '"web-restored_1-flat.vmdk"' in desc
    # the source disks are thin, so are the copies: written through NFC, every zero grain left out
    # (the zero window, and zero grains inside windows that hold data), so a copy takes what the
    # source takes (du), not 4 MiB a window
    log = p.procs["mover"].log_tail(50)
    for key, stem in ((2000, "web-restored"), (2001, "web-restored_1")):
        image = content[key]
        grains = -(-len(image) // GRAIN)
        with_data = sum(1 for g in range(grains) if image[g * GRAIN : (g + 1) * GRAIN].strip(b"\0"))
        assert with_data < grains - 5  # the lab's mixed layout: many zero grains among the data
        assert f"{stem}.vmdk written thin: {with_data} of {grains} grains sent" in log, log
        restored = (folder(p, "web-restored") / f"{stem}-flat.vmdk").stat()
        assert restored.st_size == len(image)
        assert abs(restored.st_blocks * 512 - with_data * GRAIN) <= 0.03 * with_data * GRAIN, restored
    # disk 2001 was never written with zeros (2000 was: the zero window, which allocates it): du alike
    source = p.lab.vm("web")["disks"][1]["flat_path"]
    blocks = [
        (await asyncio.to_thread(os.stat, f)).st_blocks
        for f in (source, folder(p, "web-restored") / "web-restored_1-flat.vmdk")
    ]
    assert abs(blocks[0] - blocks[1]) <= 0.03 * blocks[0], blocks
    vc = vcenter(p)
    try:
        hw = vc.vm_hardware(done.vm_moref)
        assert hw["power_state"] == "poweredOn" and hw["nics"] == ["VM Network"] and hw["cpus"] == 1
        info = vc.vm(done.vm_moref)
        assert info.name == "web-restored"
        assert sorted(d.capacity for d in info.disks) == sorted(len(c) for c in content.values())
    finally:
        vc.close()
    assert await titles(webhook_receiver, 2) == [
        "[vbm] Backup succeeded: restore (1 of 1 VMs ok)",
        "[vbm] Restore succeeded: web-restored (new_vm)",
    ]
    p.assert_clean()


async def test_faults_end_clean(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory()
    p.start("snapshotter", "mover", "verifier", "notifier")
    rp, _ = await backup(p)
    before = sorted(x.name for x in p.lab.datastore_dir.iterdir())

    # a name that exists: refused before anything is made (asked through the CLI, which waits)
    out, err, code = await p.cli(
        "restore", "start", rp.id, "--name", "db", "--datastore", "LocalDS_0", "--wait"
    )
    assert code == 1 and "a VM named 'db' already exists" in err, (out, err)
    restore_id = out.splitlines()[0]
    out, _, code = await p.cli("restore", "list")
    assert code == 0 and restore_id in out and "failed" in out
    out, _, code = await p.cli("restore", "show", restore_id)
    assert code == 0 and '"state": "failed"' in out
    # a network that does not exist: the error lists the ones there are
    done = await wait_restore(
        p, await restore(p, restore_point_id=rp.id, name="web-x", datastore="LocalDS_0", network="nope")
    )
    assert done.state == "failed" and "no network 'nope'" in (done.error or "")
    assert "VM Network" in (done.error or "")
    # a datastore that does not exist
    done = await wait_restore(p, await restore(p, restore_point_id=rp.id, name="web-y", datastore="NoDS"))
    assert done.state == "failed" and "no datastore 'NoDS'" in (done.error or "")
    assert sorted(x.name for x in p.lab.datastore_dir.iterdir()) == before  # nothing was made

    # cancelled while vCenter registers the VM (slowly): the VM and its folder are removed
    p.lab.fault("RegisterVM_Task", "delay", delay=3.0, count=1)
    restore_id = await restore(p, restore_point_id=rp.id, name="web-c", datastore="LocalDS_0")
    deadline = time.monotonic() + 30
    while True:
        with p.sessions.begin() as s:
            row = s.get(Restore, restore_id)
            assert row is not None
            if row.phase == "registering":
                row.cancel_requested = True
                break
        assert time.monotonic() < deadline, p.logs()
        await asyncio.sleep(0.05)
    done = await wait_restore(p, restore_id)
    assert done.state == "cancelled", done.error
    assert not folder(p, "web-c").exists()
    vc = vcenter(p)
    try:
        assert "web-c" not in {v.name for v in vc.list_vms()}
    finally:
        vc.close()
    assert sorted(x.name for x in p.lab.datastore_dir.iterdir()) == before

    # a restore point that failed verification is refused unless asked
    with p.sessions.begin() as s:
        row = s.get(RestorePointRow, rp.id)
        assert row is not None
        row.verify_state, row.verify_problems = "failed", ["chunk 00ab is corrupt"]
    with pytest.raises(Conflict, match="failed verification \\(chunk 00ab is corrupt\\)"):
        await restore(p, restore_point_id=rp.id, name="web-z", datastore="LocalDS_0")
    done = await wait_restore(
        p,
        await restore(p, restore_point_id=rp.id, name="web-z", datastore="LocalDS_0", allow_unverified=True),
    )
    assert done.state == "succeeded", done.error
    failed_alerts = [a for a in p.alerts() if a.kind == "restore_failed"]
    assert len(failed_alerts) == 3 and all("failed" in a.message for a in failed_alerts)
    p.assert_clean()


def vm_names(p: Pipeline) -> list[str]:
    vc = vcenter(p)
    try:
        return sorted(v.name for v in vc.list_vms())
    finally:
        vc.close()


async def test_cut_and_failing_uploads(pipeline_factory: Callable[..., Pipeline]) -> None:
    """Thin disks (web) go through NFC, thick ones (db) through the datastore's /folder: on both
    paths a cut upload is started over, and an upload that keeps failing leaves nothing."""
    p = pipeline_factory()
    p.start("snapshotter", "mover", "verifier", "notifier")
    rp, content = await backup(p)
    db_content = p.guest_disk("db", 2000)
    run = await p.run_job(p.create_job("restore-db", ["db"]))
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (db_rp,) = p.restore_points(run)
    before = sorted(x.name for x in p.lab.datastore_dir.iterdir())

    # an upload cut after 1 MiB is started over, and the result is still byte-identical
    p.lab.download_fault("upload-cut", path="/web-u.vmdk", after_bytes=1 << 20, count=1)
    p.lab.download_fault("upload-cut", path="db-u-flat.vmdk", after_bytes=1 << 20, count=1)
    for rp_id, name in ((rp.id, "web-u"), (db_rp.id, "db-u")):
        done = await wait_restore(
            p, await restore(p, restore_point_id=rp_id, name=name, datastore="LocalDS_0")
        )
        assert done.state == "succeeded", done.error
    log = p.procs["mover"].log_tail(200)
    assert "uploading [LocalDS_0] web-u/web-u.vmdk (attempt 1 of 3) failed" in log
    assert "uploading db-u/db-u-flat.vmdk (attempt 1 of 3) failed" in log
    assert (folder(p, "web-u") / "web-u-flat.vmdk").read_bytes() == content[2000]
    flat = folder(p, "db-u") / "db-u-flat.vmdk"
    assert flat.read_bytes() == db_content
    assert flat.stat().st_blocks * 512 >= len(db_content)  # thick: written in full
    assert "ddb.thinProvisioned" not in (folder(p, "db-u") / "db-u.vmdk").read_text()

    # an upload that keeps failing: the restore fails and leaves nothing behind
    p.lab.download_fault("upload-fail", path="/web-f_1.vmdk", status=503)
    p.lab.download_fault("upload-fail", path="db-f-flat.vmdk", status=503)
    for rp_id, name, file in (
        (rp.id, "web-f", "[LocalDS_0] web-f/web-f_1.vmdk"), (db_rp.id, "db-f", "db-f/db-f-flat.vmdk")
    ):  # fmt: skip
        done = await wait_restore(
            p, await restore(p, restore_point_id=rp_id, name=name, datastore="LocalDS_0")
        )
        assert done.state == "failed" and f"uploading {file} failed" in (done.error or ""), done.error
        assert "HTTP 503" in (done.error or "")
        assert not folder(p, name).exists() and name not in vm_names(p)
    p.lab.clear_faults()
    assert sorted(x.name for x in p.lab.datastore_dir.iterdir()) == sorted([*before, "web-u", "db-u"])
    p.assert_clean()


async def test_a_frozen_mover_is_fenced_and_its_restore_cleaned(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory(VBM_PIPELINE__TRANSFER_STALL="3")
    p.start("snapshotter", "mover", "verifier", "notifier")
    rp, _ = await backup(p)
    p.lab.fault("RegisterVM_Task", "delay", delay=1.0, count=1)
    restore_id = await restore(p, restore_point_id=rp.id, name="web-s", datastore="LocalDS_0")
    deadline = time.monotonic() + 30
    while True:
        with p.sessions() as s:
            row = s.get(Restore, restore_id)
            assert row is not None
            if row.phase == "registering":
                break
        assert time.monotonic() < deadline, p.logs()
        await asyncio.sleep(0.02)
    p.freeze("mover")  # frozen mid-registration: the watchdog must end it
    try:
        done = await wait_restore(p, restore_id, timeout=30)
    finally:
        p.procs["mover"].resume()
    assert done.state == "failed" and "stopped making progress in phase registering" in (done.error or "")
    await asyncio.sleep(2)  # the resumed mover finds itself fenced and changes nothing
    with p.sessions() as s:
        row = s.get(Restore, restore_id)
        assert row is not None and row.state == "failed" and row.created == {}
    assert "web-s" not in vm_names(p), p.logs()
    assert not folder(p, "web-s").exists(), p.logs()
    assert [a.kind for a in p.alerts()].count("restore_failed") == 1
    p.assert_clean()


async def test_a_registration_that_ends_after_a_takeover_is_undone_by_the_old_mover(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    """The mover is superseded while vCenter registers its VM (nobody else can know that VM yet):
    once the registration ends, it unregisters the VM and leaves the files to the new owner."""
    p = pipeline_factory()
    p.start("snapshotter", "mover", "verifier")
    rp, _ = await backup(p)
    p.lab.fault("RegisterVM_Task", "delay-response", delay=3.0, count=1)
    restore_id = await restore(p, restore_point_id=rp.id, name="web-t", datastore="LocalDS_0")
    deadline = time.monotonic() + 30
    while True:
        with p.sessions.begin() as s:
            row = s.get(Restore, restore_id)
            assert row is not None
            if row.phase == "registering" and "vmx" in row.created:
                row.generation += 1  # taken over, as the watchdog or a redelivery would
                break
        assert time.monotonic() < deadline, p.logs()
        await asyncio.sleep(0.02)
    mover = p.procs["mover"]
    while "unregistering VM" not in mover.log_tail(100):
        assert time.monotonic() < deadline + 10, p.logs()
        await asyncio.sleep(0.1)
    assert "web-t" not in vm_names(p)
    assert (folder(p, "web-t") / "web-t.vmx").exists()  # the files are the new owner's to remove
    with p.sessions() as s:
        row = s.get(Restore, restore_id)
        assert row is not None and row.state == "running"
        registered = mover.log_tail(100).split("unregistering VM ", 1)[1].split()[0]
        assert row.created.get("vm") != registered  # recorded by nobody: the old mover undid it


async def test_in_place_restore_writes_the_disks_back_and_resets_cbt(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    from shared.errors import Invalid

    p = pipeline_factory()
    p.start("snapshotter", "mover", "verifier", "notifier")
    job = p.create_job("inplace", ["web"])
    content = {k: p.guest_disk("web", k) for k in (2000, 2001)}
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (rp,) = p.restore_points(run)
    p.lab.guest_write("web", 2000, 4096, b"ransomware was here" * 100)
    p.lab.guest_write("web", 2001, 0, b"\xff" * 65536)
    assert p.guest_disk("web", 2000) != content[2000]

    with pytest.raises(Invalid, match=r"confirm: an in-place restore powers off VM web"):
        await restore(p, restore_point_id=rp.id, mode="in_place")
    with pytest.raises(Invalid, match=r"method: a fast in-place restore .* set vcenters\[lab\].hotadd_proxy"):
        await restore(p, restore_point_id=rp.id, mode="in_place", confirm=True, method="fast")
    vc = vcenter(p)
    try:
        was = vc.vm_hardware(rp.vm_moref)["power_state"]
    finally:
        vc.close()
    done = await wait_restore(p, await restore(p, restore_point_id=rp.id, mode="in_place", confirm=True))
    assert done.state == "succeeded", (done.error, p.logs())
    assert done.vm_moref == rp.vm_moref
    for key, data in content.items():
        assert p.guest_disk("web", key) == data, key
    vc = vcenter(p)
    try:
        assert vc.vm_hardware(rp.vm_moref)["power_state"] == was  # back as it was
    finally:
        vc.close()
    # CBT did not see the restore's writes: it was reset, so the next backup is a full
    run = await p.run_job(job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    (after,) = p.restore_points(run)
    assert after.kind == "full"
    for key, data in content.items():
        assert await p.read_back(after.id, key) == data
    p.assert_clean()


async def test_restore_test_leaves_a_signed_report_and_no_vm(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    import json

    from shared.catalog import reports
    from shared.db.models import RestoreReport

    p = pipeline_factory()
    p.start("snapshotter", "mover", "verifier", "notifier")
    rp, _ = await backup(p)
    before = sorted(x.name for x in p.lab.datastore_dir.iterdir())
    names_before = vm_names(p)
    done = await wait_restore(
        p, await restore(p, restore_point_id=rp.id, mode="test", datastore="LocalDS_0", network="VM Network")
    )
    assert done.state == "succeeded", (done.error, p.logs())
    assert done.target["name"].startswith("vbm-test-web-") and done.target["power_on"] is True
    # the test VM is gone, and so are its files
    assert vm_names(p) == names_before
    assert sorted(x.name for x in p.lab.datastore_dir.iterdir()) == before

    with p.sessions() as s:
        row = s.get(RestoreReport, done.id)
        assert row is not None and row.ok and row.vm_name == "web"
        signed = json.loads(row.signed)
    public = reports.public_pem(reports.signing_key(p.data))
    report = reports.verify(signed, public)
    assert report["result"] == "passed" and report["restore_point"]["id"] == rp.id
    assert [c["check"] for c in report["checks"]] == [
        "powered on",
        "every NIC on VM Network",
        "guest heartbeat",
    ]
    assert report["checks"][2]["ok"] is None and "not available" in report["checks"][2]["seen"]
    assert {d["key"] for d in report["restore_point"]["disks"]} == {2000, 2001}
    assert report["test_vm"]["removed"] is True and report["timings_s"]["total"] > 0

    # an auditor's check: any change to the report breaks the signature
    signed["report"]["result"] = "passed with flying colours"
    with pytest.raises(reports.ReportError, match="changed after signing"):
        reports.verify(signed, public)
    # and the CLI says so too
    good = p.data / "report.json"
    good.write_text(row.signed)
    out, err, code = await p.cli("report", "verify", str(good))
    assert code == 0 and f"genuine: restore test {done.id} of web" in out, err
    bad = p.data / "bad.json"
    bad.write_text(json.dumps(signed))
    out, err, code = await p.cli("report", "verify", str(bad))
    assert code == 1 and "NOT GENUINE" in err
    p.assert_clean()


async def test_a_restore_test_job_tests_each_vm_and_ends_its_run(
    pipeline_factory: Callable[..., Pipeline], webhook_receiver: WebhookReceiver
) -> None:
    from sqlalchemy import select

    from shared.db.models import RestoreReport

    p = pipeline_factory(VBM_NOTIFICATIONS=success_hook(webhook_receiver))
    p.start("snapshotter", "mover", "verifier", "notifier")
    backup_job = p.create_job("nightly", ["web", "db"])
    run = await p.run_job(backup_job)
    assert (await p.wait_run(run)).state == "succeeded", p.dump(run)
    names_before = vm_names(p)

    tests = p.create_job(
        "weekly-tests",
        ["web", "db"],
        options={"restore_test": {"datastore": "LocalDS_0", "network": "VM Network"}},
    )
    run = await p.run_job(tests)
    done = await p.wait_run(run, timeout=90)
    assert done.state == "succeeded", (done.error, p.logs())
    with p.sessions() as s:
        restores_of_run = list(s.scalars(select(Restore).where(Restore.run_id == run)))
        reports_ = {r.vm_name: r.ok for r in s.scalars(select(RestoreReport))}
    assert sorted(r.mode for r in restores_of_run) == ["test", "test"]
    assert all(r.state == "succeeded" for r in restores_of_run)
    assert reports_ == {"web": True, "db": True}
    assert p.tasks(run) == []  # nothing was snapshotted by a restore-test run
    assert vm_names(p) == names_before
    # one message per run; the test restores themselves are told by their run's
    assert await titles(webhook_receiver, 2) == [
        "[vbm] Backup succeeded: nightly (2 of 2 VMs ok)",
        "[vbm] Restore test succeeded: weekly-tests (2 of 2 VMs ok)",
    ]
    p.assert_clean()


def datastores(p: Pipeline) -> list[str]:
    from tests.plugins.lab import connect, disconnect

    si = connect(p.lab)
    try:
        return sorted(ds.name for dc in si.content.rootFolder.childEntity for ds in dc.datastore)
    finally:
        disconnect(si)


async def wait_phase(p: Pipeline, restore_id: str, phase: str, timeout: float = 60) -> Restore:
    deadline = time.monotonic() + timeout
    while True:
        with p.sessions() as s:
            row = s.get(Restore, restore_id)
            assert row is not None
            if row.phase == phase:
                return row
        if time.monotonic() > deadline:
            raise AssertionError(
                f"restore {restore_id} never reached {phase}: {row.phase} {row.error}\n{p.logs()}"
            )
        await asyncio.sleep(0.2)


async def test_instant_recovery_runs_from_the_store_then_migrates_or_stops(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    from shared.catalog.restores import instant_action

    p = pipeline_factory()
    p.start("snapshotter", "mover", "verifier", "notifier")
    rp, content = await backup(p)
    stores_before = datastores(p)

    restore_id = await restore(
        p, restore_point_id=rp.id, mode="instant", name="web-now", network="VM Network"
    )
    done = await wait_restore(p, restore_id)
    assert (done.state, done.phase) == ("succeeded", "instant"), (done.error, p.logs())
    published = p.data / "instant" / restore_id / "web-now"
    for i, key in enumerate((2000, 2001)):
        flat = published / (f"web-now_{i}-flat.vmdk" if i else "web-now-flat.vmdk")
        assert flat.read_bytes() == content[key]
    vc = vcenter(p)
    try:
        hw = vc.vm_hardware(done.vm_moref)
        assert hw["power_state"] == "poweredOn" and hw["vmx_path"].startswith("[vbm-instant-")
    finally:
        vc.close()
    instant_ds = hw["vmx_path"][1 : hw["vmx_path"].index("]")]
    assert instant_ds in datastores(p)

    # migrate to production: the VM's files move to LocalDS_0, the published copy is unmounted
    with p.sessions.begin() as s:
        instant_action(s, restore_id, "migrate", "LocalDS_0", now())
    await p.relay.publish_pending()
    row = await wait_phase(p, restore_id, "migrated")
    assert row.error is None
    vc = vcenter(p)
    try:
        hw = vc.vm_hardware(row.vm_moref or "")
        assert hw["vmx_path"] == "[LocalDS_0] web-now/web-now.vmx" and hw["power_state"] == "poweredOn"
    finally:
        vc.close()
    assert (folder(p, "web-now") / "web-now-flat.vmdk").read_bytes() == content[2000]
    assert not (p.data / "instant" / restore_id).exists() and datastores(p) == stores_before

    # another instant VM, stopped: nothing of it is left
    second = await restore(p, restore_point_id=rp.id, mode="instant", name="web-brief")
    assert (await wait_restore(p, second)).phase == "instant"
    with p.sessions.begin() as s:
        instant_action(s, second, "stop", None, now())
    await p.relay.publish_pending()
    row = await wait_phase(p, second, "stopped")
    assert "web-brief" not in vm_names(p) and not (p.data / "instant" / second).exists()
    assert datastores(p) == stores_before
    p.assert_clean()


async def test_a_datastore_without_room_is_refused_before_anything_is_written(
    pipeline_factory: Callable[..., Pipeline], tmp_path: Path
) -> None:
    from tests.plugins.tmpfs import mount_tmpfs, unmount

    small = mount_tmpfs(tmp_path / "lab0", "72m")  # the lab's datastore: its VMs take ~27 MB
    p = pipeline_factory()
    try:
        p.start("snapshotter", "mover", "verifier", "notifier")
        rp, _ = await backup(p)
        before = sorted(x.name for x in p.lab.datastore_dir.iterdir())
        done = await wait_restore(
            p, await restore(p, restore_point_id=rp.id, name="web-big", datastore="LocalDS_0")
        )
        assert done.state == "failed", done.error
        assert "datastore LocalDS_0 has" in (done.error or "") and "free; restoring web needs" in (
            done.error or ""
        )
        assert "choose another datastore" in (done.error or "")
        assert sorted(x.name for x in p.lab.datastore_dir.iterdir()) == before
        p.assert_clean()
    finally:
        for proc in p.procs.values():
            proc.stop()
        p.lab.stop()
        unmount(small)


async def test_cancel_while_queued_and_while_uploading(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory()
    p.start("snapshotter", "mover", "verifier", "notifier")
    rp, _ = await backup(p)
    before = sorted(x.name for x in p.lab.datastore_dir.iterdir())

    # queued: the mover is down when the restore is asked for and cancelled; it does nothing later
    p.procs["mover"].stop()
    restore_id = await restore(p, restore_point_id=rp.id, name="web-q", datastore="LocalDS_0")
    with p.sessions.begin() as s:
        row = s.get(Restore, restore_id)
        assert row is not None
        row.cancel_requested = True
    p.procs["mover"].start()
    done = await wait_restore(p, restore_id)
    assert done.state == "cancelled" and done.error == "cancelled before it started"

    # uploading: each upload of the first disk is cut, and the restore is cancelled between tries
    p.lab.download_fault("upload-cut", path="/web-u2.vmdk", after_bytes=1 << 20)
    restore_id = await restore(p, restore_point_id=rp.id, name="web-u2", datastore="LocalDS_0")
    await wait_phase(p, restore_id, "uploading")
    await asyncio.sleep(0.3)  # the first try is cut; the mover waits before the next
    with p.sessions.begin() as s:
        row = s.get(Restore, restore_id)
        assert row is not None
        row.cancel_requested = True
    done = await wait_restore(p, restore_id, timeout=30)
    p.lab.clear_faults()
    assert done.state == "cancelled", done.error
    assert sorted(x.name for x in p.lab.datastore_dir.iterdir()) == before
    assert "web-u2" not in vm_names(p)
    p.assert_clean()


async def test_a_mover_killed_mid_restore_is_taken_over_cleanly(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory(VBM_PIPELINE__ACK_WAIT="2")
    p.start("snapshotter", "mover", "verifier", "notifier")
    rp, content = await backup(p)
    p.lab.fault("RegisterVM_Task", "delay", delay=1.0, count=1)
    restore_id = await restore(p, restore_point_id=rp.id, name="web-k", datastore="LocalDS_0")
    await wait_phase(p, restore_id, "registering")
    p.procs["mover"].kill()  # vCenter still registers the VM a second later: a VM nobody recorded
    p.procs["mover"].start()
    done = await wait_restore(p, restore_id, timeout=60)
    assert done.state == "succeeded", (done.error, p.logs())
    assert vm_names(p).count("web-k") == 1  # the orphan registration was found and removed
    assert (folder(p, "web-k") / "web-k-flat.vmdk").read_bytes() == content[2000]
    assert "removing the leftovers of an earlier attempt" in p.procs["mover"].log_tail(200)
    p.assert_clean()


async def test_restore_test_sees_the_guest_heartbeat_when_tools_run(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    import dataclasses
    import json

    from shared.catalog import reports
    from shared.db.models import RestoreReport
    from tests.pipeline.conftest import default_spec

    p = pipeline_factory(dataclasses.replace(default_spec(), tools_boot_seconds=1.0))
    p.start("snapshotter", "mover", "verifier", "notifier")
    rp, _ = await backup(p)
    done = await wait_restore(
        p, await restore(p, restore_point_id=rp.id, mode="test", datastore="LocalDS_0", network="VM Network")
    )
    assert done.state == "succeeded", (done.error, p.logs())
    with p.sessions() as s:
        row = s.get(RestoreReport, done.id)
        assert row is not None
        report = reports.verify(json.loads(row.signed), reports.public_pem(reports.signing_key(p.data)))
    heartbeat = report["checks"][2]
    assert heartbeat["check"] == "guest heartbeat" and heartbeat["ok"] is True
    assert heartbeat["seen"] == "green, tools guestToolsRunning"
    assert report["timings_s"]["checks"] >= 1.0  # it waited for the guest to boot
    p.assert_clean()


async def test_fast_in_place_restore_writes_only_the_differing_windows_through_hot_add(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    spec = default_spec()
    spec = dataclasses.replace(
        spec, vms=(*spec.vms, VMSpec("vbm-proxy", (DiskSpec(1 * MIB, seed=5),), power_on=True))
    )
    p = pipeline_factory(spec)
    config = with_proxy(p, p.lab.device_dir)
    p.start("snapshotter", "mover", "verifier", "notifier")
    rp, content = await backup(p)
    p.lab.guest_write("web", 2000, 0, b"changed after the backup")  # window 0 of 3
    p.lab.guest_write("web", 2000, 9 * MIB, b"\x01" * 8192)  # window 2
    p.lab.guest_write("web", 2001, MIB, b"\xff" * 65536)  # window 0 of 2

    async def fast() -> Restore:
        body = {"restore_point_id": rp.id, "mode": "in_place", "confirm": True, "method": "fast"}
        with p.sessions.begin() as s:
            restore_id = request_restore(s, RestoreRequest.model_validate(body), config, now()).id
        await p.relay.publish_pending()
        return await wait_restore(p, restore_id)

    done = await fast()
    assert done.state == "succeeded", (done.error, p.logs())
    for key, data in content.items():
        assert p.guest_disk("web", key) == data, key
    assert done.target["method"] == "fast"
    # CBT (since the restore point's change id) names the 3 windows written by the guest; the
    # other 2 are not even read
    assert done.target["written"] == {"skipped": 2, "windows": 3, "written": 3, "bytes": 3 * 4 * MIB}
    vc = vcenter(p)
    try:
        assert len(vc.find_vm("vbm-proxy").disks) == 1  # detached again
    finally:
        vc.close()
    assert list(p.lab.device_dir.iterdir()) == []

    # nothing differs now: nothing is written; the first restore reset CBT (its writes bypassed
    # the VM), so the restore point's change id is stale: every window is compared
    done = await fast()
    assert done.state == "succeeded", done.error
    assert done.target["written"] == {"skipped": 0, "windows": 5, "written": 0, "bytes": 0}

    # the attached disk never shows up in the proxy: the restore fails, the disk is detached
    p.procs["mover"].stop()
    with_proxy(p, p.data / "no-such-dir", settle=1)
    p.start("mover")
    done = await fast()
    assert done.state == "failed" and "did not appear as" in (done.error or "")
    assert "disk.EnableUUID" in (done.error or "")
    vc = vcenter(p)
    try:
        assert len(vc.find_vm("vbm-proxy").disks) == 1
        assert vc.vm_hardware(rp.vm_moref)["power_state"] == "poweredOff"  # left off, as said
    finally:
        vc.close()
    for key, data in content.items():
        assert p.guest_disk("web", key) == data, key
    p.assert_clean()
