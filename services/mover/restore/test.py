"""Restore test: restore as a temporary VM on an isolated network, check it runs, remove it, and
store a signed report of what was restored and what was seen."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from services.mover.restore.common import VC, Attempt, RestoreFailed, clean_up, created_of, open_point
from services.mover.restore.new_vm import restore_new_vm
from shared import __version__
from shared.catalog.reports import sign, signing_key
from shared.contracts import RestoreTarget
from shared.db.models import RestoreReport
from shared.vsphere import VCenter

log = logging.getLogger(__name__)


async def restore_test(attempt: Attempt, vc: VC, target: RestoreTarget, rp_id: str, location: str) -> str:
    """Restore as a temporary VM on an isolated network, power it on, check it runs, remove it,
    and store a signed report (`shared/catalog/reports.py`) of what was restored and what was seen."""
    ctx = attempt.deps.ctx
    started, t0 = ctx.clock(), time.monotonic()
    moref = await restore_new_vm(attempt, vc, target, rp_id, location)
    restored_s = time.monotonic() - t0
    await asyncio.to_thread(attempt.update, phase="testing")
    checks: list[dict[str, Any]] = []
    hw = await vc.call(VCenter.vm_hardware, moref)
    checks.append({"check": "powered on", "ok": hw["power_state"] == "poweredOn", "seen": hw["power_state"]})
    nics_ok = bool(hw["nics"]) and all(n == target.network for n in hw["nics"])
    checks.append({"check": f"every NIC on {target.network}", "ok": nics_ok, "seen": hw["nics"]})
    checks.append(await _heartbeat(vc, moref, ctx.settings.pipeline.restore_test_boot))
    tested_s = time.monotonic() - t0 - restored_s
    await asyncio.to_thread(attempt.update, phase="cleaning_up")
    await clean_up(vc, created_of(attempt))
    await asyncio.to_thread(attempt.update, created={})
    _, rp = await open_point(attempt, rp_id, location)
    ok = all(c["ok"] is not False for c in checks)
    report = {
        "kind": "vbm restore test",
        "version": 1,
        "restore_id": attempt.restore_id,
        "result": "passed" if ok else "failed",
        "restore_point": {
            "id": rp.id,
            "vm_name": rp.vm_name,
            "vm_moref": rp.vm_moref,
            "vcenter": rp.vcenter,
            "finished": rp.finished.isoformat(),
            "repository": location,
            "disks": [{"key": d.key, "capacity": d.capacity, "tree_blake3": d.tree} for d in rp.disks],
            "files": [{"path": f.path, "size": f.size, "blake3": f.digest} for f in rp.files if f.digest],
        },
        "test_vm": {"name": target.name, "moref": moref, "datastore": target.datastore,
                    "network": target.network, "cpus": hw["cpus"], "memory_mb": hw["memory_mb"],
                    "removed": True},
        "checks": checks,
        "timings_s": {"restore": round(restored_s, 2), "checks": round(tested_s, 2),
                      "total": round(time.monotonic() - t0, 2)},
        "started": started.isoformat(),
        "finished": ctx.clock().isoformat(),
        "vbm": __version__,
    }  # fmt: skip
    signed = await asyncio.to_thread(_sign_and_store, ctx, report, rp.vm_name, rp_id, ok)
    log.info("restore test %s of %s: %s (key %s)", attempt.restore_id, rp.vm_name, report["result"], signed)
    if not ok:
        failed = "; ".join(f"{c['check']}: saw {c['seen']}" for c in checks if c["ok"] is False)
        raise RestoreFailed(f"restore test of {rp.vm_name} failed ({failed}); the test VM was removed")
    return moref


async def _heartbeat(vc: VC, moref: str, boot: float) -> dict[str, Any]:
    """The guest heartbeat once VMware Tools run (waiting up to `boot` s); not available without
    Tools (reported as such, not as a failure)."""
    deadline = time.monotonic() + boot
    while True:
        guest = await vc.call(VCenter.guest_status, moref)
        if guest["tools"] in ("toolsNotInstalled", "unknown"):
            return {
                "check": "guest heartbeat",
                "ok": None,
                "seen": "not available: VMware Tools not installed",
            }
        if guest["heartbeat"] == "green":
            return {"check": "guest heartbeat", "ok": True, "seen": f"green, tools {guest['tools_running']}"}
        if time.monotonic() > deadline:
            return {
                "check": "guest heartbeat",
                "ok": False,
                "seen": f"{guest['heartbeat']} after {boot:.0f}s",
            }
        await asyncio.sleep(2.0)


def _sign_and_store(ctx: Any, report: dict[str, Any], vm_name: str, rp_id: str, ok: bool) -> str:
    signed = sign(signing_key(ctx.settings.data_dir), report)
    with ctx.sessions.begin() as s:
        s.merge(
            RestoreReport(
                id=report["restore_id"],
                restore_point_id=rp_id,
                vm_name=vm_name,
                ok=ok,
                created_at=ctx.clock(),
                signed=json.dumps(signed, sort_keys=True),
            )
        )
    return str(signed["key_id"])
