"""Removing what a restore made, after a failure, a cancel, a crash or the watchdog.

A restore records what it creates in its `restores.created` *before* the step that creates it
(`datacenter`, `folder` "[ds] name", `vmx` "[ds] name/name.vmx" just before registering, `vm`
once registered; for a fast in-place restore the disk attached to the hot-add proxy). Clean-up
is idempotent: a VM registered from the recorded `.vmx` is found by
its path even if the mover died before recording its moref; things already gone are success.
"""

from __future__ import annotations

import shutil

from shared.vsphere import Placement, VCenter


def clean(vc: VCenter, created: dict[str, str]) -> list[str]:
    """Remove a half-made restore (blocking); returns what was removed, for the log.

    Instant recovery also records the datastore it mounted (`instant_datastore`, with the
    `instant_pool`/`instant_host` it was mounted on) and the published directory
    (`instant_dir`): the datastore is unmounted after the VM is gone, then the directory removed.
    """
    removed: list[str] = []
    hotadd = created.get("hotadd_proxy"), created.get("hotadd_disk")
    if hotadd[0] and hotadd[1] and vc.detach_disk(hotadd[0], hotadd[1]):  # first: it holds the disk
        removed.append(f"{hotadd[1]} from hot-add proxy {hotadd[0]}")
    vms = [created["vm"]] if created.get("vm") else []
    if created.get("vmx"):
        vms += [v.moref for v in vc.list_vms() if v.vmx_path == created["vmx"] and v.moref not in vms]
    for moref in vms:
        vc.destroy_vm(moref)
        removed.append(f"VM {moref}")
    if created.get("folder") and created.get("datacenter"):
        vc.delete_path(created["datacenter"], created["folder"])
        removed.append(created["folder"])
    if created.get("instant_datastore"):
        where = Placement(
            created.get("datacenter", ""), "", 0, "", "", created.get("instant_pool", ""),
            created.get("instant_host") or None, None,
        )  # fmt: skip
        vc.unmount_datastore(where, created["instant_datastore"])
        removed.append(f"datastore {created['instant_datastore']}")
    if created.get("instant_dir"):
        shutil.rmtree(created["instant_dir"], ignore_errors=True)
        removed.append(created["instant_dir"])
    return removed
