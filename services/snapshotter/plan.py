"""Planning a run: the job's VMs as of now, each with where it lives (for the limits).

The job's VM list and its selectors are resolved against each vCenter's inventory at every run
(`shared/vsphere/selection.py`), so a VM created in a selected folder or with a selected tag is backed
up without editing the job. A vCenter that cannot be read now does not stop the run: its listed
VMs are planned without a place and their snapshot step says what is wrong.
"""

from __future__ import annotations

import logging

from services.snapshotter.dispatch import Placed
from shared.db.models import Job
from shared.vsphere import selection
from shared.vsphere.inventory import InventoryVM, read_inventory
from shared.vsphere.pool import VCenters

log = logging.getLogger(__name__)


async def resolve_vms(vcenters: VCenters, job: Job) -> tuple[list[Placed], list[str]]:
    """The VMs of the run and where they live, and what could not be read (said in the run's
    log, and it ends the run `warning` at best: VMs may be missing from it)."""
    spec = selection.of_job(job)
    inventories: dict[str, list[InventoryVM] | None] = {}
    trouble: list[str] = []
    for name in spec.vcenters():
        try:
            inventories[name] = await vcenters.call(name, read_inventory)
        except Exception as exc:  # the run goes on: these VMs fail in their snapshot step, saying why
            log.warning("job %s: vCenter %s cannot be read now (%s)", job.name, name, exc)
            inventories[name] = None
            if spec.select:
                trouble.append(f"vCenter {name} could not be read ({exc}): its selectors chose nothing")
            continue
        if spec.wants_tags(name):
            try:
                inventories[name] = await vcenters.call(name, selection.with_tags_of(inventories[name] or []))
            except Exception as exc:
                trouble.append(
                    f"the tags of vCenter {name} could not be read ({exc}): tag selectors chose nothing"
                )
    chosen = selection.resolve(spec, inventories)
    placed = [
        Placed(vcenter=vm.vcenter, moref=vm.moref, name=vm.name, host=vm.host, datastores=vm.datastores)
        for vm in chosen
    ]
    return placed, trouble
