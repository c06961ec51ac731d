"""Removing what a restore made, after a failure, a cancel, a crash or the watchdog.

A restore records what it creates in its `restores.created` *before* the step that creates it
(`datacenter`, `folder` "[ds] name", `vmx` "[ds] name/name.vmx" just before registering, `vm`
once registered). Clean-up is idempotent: a VM registered from the recorded `.vmx` is found by
its path even if the mover died before recording its moref; things already gone are success.
"""

from __future__ import annotations

from shared.vsphere import VCenter


def clean(vc: VCenter, created: dict[str, str]) -> list[str]:
    """Remove a half-made restore (blocking); returns what was removed, for the log."""
    removed: list[str] = []
    vms = [created["vm"]] if created.get("vm") else []
    if created.get("vmx"):
        vms += [v.moref for v in vc.list_vms() if v.vmx_path == created["vmx"] and v.moref not in vms]
    for moref in vms:
        vc.destroy_vm(moref)
        removed.append(f"VM {moref}")
    if created.get("folder") and created.get("datacenter"):
        vc.delete_path(created["datacenter"], created["folder"])
        removed.append(created["folder"])
    return removed
