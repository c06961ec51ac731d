"""Planning a run: the job's VMs as of now, each with where it lives (for the limits).

The job's VM list and its selectors are resolved against each vCenter's inventory at every run
(`shared/selection.py`), so a VM created in a selected folder or with a selected tag is backed
up without editing the job. A vCenter that cannot be read now does not stop the run: its listed
VMs are planned without a place and their snapshot step says what is wrong.
"""

from __future__ import annotations

import logging

from services.snapshotter.dispatch import Placed
from shared import selection
from shared.db.models import Job
from shared.pipeline.vcenters import VCenters
from shared.vsphere.inventory import InventoryVM, read_inventory

log = logging.getLogger(__name__)


async def resolve_vms(vcenters: VCenters, job: Job) -> list[Placed]:
    spec = selection.of_job(job)
    inventories: dict[str, list[InventoryVM] | None] = {}
    for name in spec.vcenters():
        try:
            inventory = await vcenters.call(name, read_inventory)
            if spec.wants_tags(name):
                inventory = await vcenters.call(name, selection.with_tags_of(inventory))
            inventories[name] = inventory
        except Exception as exc:  # the run goes on: these VMs fail in their snapshot step, saying why
            log.warning("job %s: vCenter %s cannot be read now (%s)", job.name, name, exc)
            inventories[name] = None
    chosen = selection.resolve(spec, inventories)
    return [
        Placed(vcenter=vm.vcenter, moref=vm.moref, name=vm.name, host=vm.host, datastores=vm.datastores)
        for vm in chosen
    ]
