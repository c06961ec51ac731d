"""Jobs as people manage them (REST API and `vbm job`): create, replace, delete, run now, cancel.

Every function takes an open session and leaves committing to the caller, so one request is one
transaction. Errors are `StoreError`s carrying an HTTP-like status and a message that names the
field or id at fault; nothing is written when one is raised.

VMs named in a job are resolved against the job's vCenter when the job is created or replaced
(`resolve_vms`, blocking: call it through a thread) and stored with both moref and name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.catalog import channels, locations, replication
from shared.catalog.etags import etag, matches
from shared.catalog.runs import request_run
from shared.clock import iso
from shared.contracts import RUN_FINAL
from shared.db.models import Job, RestorePointRow, Run
from shared.errors import Conflict, Invalid, NotFound, PreconditionFailed, Unreachable
from shared.model.jobs import JobSpec, Trigger, VMRef, new_job_id
from shared.repo.locations import Credentials, CredentialsFor
from shared.settings import Settings, VCenterSettings

if TYPE_CHECKING:
    from shared.vsphere import VMInfo
    from shared.vsphere.inventory import InventoryVM
    from shared.vsphere.selection import JobSelection

Lister = Callable[[VCenterSettings], "list[VMInfo]"]


def vcenter_of(settings: Settings, name: str, field: str = "vcenter") -> VCenterSettings:
    for vc in settings.vcenters:
        if vc.name == name:
            return vc
    known = ", ".join(vc.name for vc in settings.vcenters) or "none (VBM_VCENTERS, vbm vcenter add)"
    raise Invalid(field, f"unknown vCenter {name!r} (configured: {known})")


def list_vms(vc: VCenterSettings) -> list[VMInfo]:
    """Every VM of one vCenter (blocking); Unreachable when vCenter cannot be asked."""
    from shared.vsphere import VCenter, VSphereError  # pyVmomi: not for every `vbm` command

    client = VCenter(vc, timeout=30)
    try:
        return client.list_vms()
    except VSphereError as exc:
        raise Unreachable(f"vCenter {vc.name} ({vc.url}) cannot be asked: {exc}") from None
    finally:
        client.close()


def resolve_vms(spec: JobSpec, settings: Settings, lister: Lister = list_vms) -> JobSpec:
    """The spec with every listed VM given by both moref and its current name, checked against
    its vCenter (each VM names its own, or is the job's). Selectors are resolved at every run."""
    inventories: dict[str, list[VMInfo]] = {}
    resolved: list[VMRef] = []
    for i, ref in enumerate(spec.vms):
        vc = vcenter_of(
            settings, ref.vcenter or spec.vcenter, f"vms.{i}.vcenter" if ref.vcenter else "vcenter"
        )
        if vc.name not in inventories:
            inventories[vc.name] = lister(vc)
        inventory = inventories[vc.name]
        if ref.moref:
            info = next((vm for vm in inventory if vm.moref == ref.moref), None)
            if info is None:
                raise Invalid(f"vms.{i}.moref", f"no VM {ref.moref} on vCenter {vc.name}")
        else:
            named = [vm for vm in inventory if vm.name == ref.name]
            if not named:
                raise Invalid(f"vms.{i}.name", f"no VM named {ref.name!r} on vCenter {vc.name}")
            if len(named) > 1:
                morefs = ", ".join(vm.moref for vm in named)
                raise Invalid(
                    f"vms.{i}.name", f"{len(named)} VMs are named {ref.name!r} ({morefs}): give a moref"
                )
            info = named[0]
        if any(r.moref == info.moref and (r.vcenter or spec.vcenter) == vc.name for r in resolved):
            raise Invalid(f"vms.{i}", f"VM {info.name} ({info.moref}) is listed twice")
        own = ref.vcenter if ref.vcenter and ref.vcenter != spec.vcenter else None
        resolved.append(VMRef(vcenter=own, moref=info.moref, name=info.name))
    return spec.model_copy(update={"vms": tuple(resolved)})


def check_spec(
    sessions: sessionmaker[Session],
    spec: JobSpec,
    settings: Settings,
    job_id: str | None = None,
    lister: Lister = list_vms,
) -> JobSpec:
    """Everything before a create or replace (blocking): the vCenter is configured, the name is
    free (for `job_id` itself when replacing), the notification channels it names exist, the
    S3 buckets it asks to be immutable have Object Lock, then the VMs resolved against vCenter."""
    vcenter_of(settings, spec.vcenter)
    for i, selector in enumerate(spec.select):
        if selector.vcenter:
            vcenter_of(settings, selector.vcenter, f"select.{i}.vcenter")
    for name in spec.vcenter_names():
        vcenter_of(settings, name, "vcenter")
    check_immutable_locations(spec, settings, locations.lookup(settings, sessions))
    with sessions() as session:
        known = channels.names(session, settings)
        unknown = [c for c in spec.options.notify.channels if c not in known]
        if unknown:
            raise Invalid(
                "options.notify.channels",
                f"no notification channel named {', '.join(map(repr, unknown))}"
                f" (channels: {', '.join(known) or 'none configured or added'})",
            )
        name_free(session, spec.name, job_id)
    return resolve_vms(spec, settings, lister)


def check_immutable_locations(
    spec: JobSpec, settings: Settings, credentials: CredentialsFor | None = None
) -> None:
    """An s3:// location with `immutable_days` (primary or secondary) on a bucket that cannot
    keep it is refused now, not at the first run or copy; an endpoint that does not answer now is
    left to the run (which says so)."""
    import asyncio

    from shared.repo.backends.s3 import S3Backend
    from shared.repo.errors import Misconfigured, RepoError

    places = [("repository", spec.repository)]
    places += [(f"options.replicate_to.{i}", loc) for i, loc in enumerate(spec.options.replicate_to)]
    for field, location in places:
        if not location.startswith("s3://") or "immutable_days=" not in location:
            continue
        try:
            creds = credentials(location) if credentials else Credentials.of(settings)
            backend = S3Backend(location, creds.s3_access_key, creds.s3_secret_key.get_secret_value())
        except Misconfigured as exc:  # its stored credentials cannot be decrypted
            raise Invalid(field, str(exc)) from None
        except ValueError as exc:
            raise Invalid(field, str(exc)) from None

        async def check(backend: S3Backend = backend) -> None:
            try:
                await backend.check_immutability()
            finally:
                await backend.close()

        try:
            asyncio.run(check())
        except Misconfigured as exc:
            raise Invalid(field, str(exc)) from None
        except RepoError:
            continue


def job_view(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "vcenter": job.vcenter,
        "vms": job.vms,
        "select": (job.selection or {}).get("select", []),
        "exclude": (job.selection or {}).get("exclude", {"vms": [], "disks": []}),
        "schedule": job.schedule,
        "options": job.options,
        "repository": job.repository,
        "retention": job.retention,
        "enabled": job.enabled,
        "last_slot": iso(job.last_slot),
        "created_at": iso(job.created_at),
        "updated_at": iso(job.updated_at),
        "etag": etag(job),
    }


def job_row(spec: JobSpec, job_id: str, now: datetime, default_repository: str) -> Job:
    return Job(
        id=job_id,
        name=spec.name,
        vcenter=spec.vcenter,
        vms=[v.model_dump(exclude_none=True) for v in spec.vms],
        selection={
            "select": [s.model_dump(exclude_none=True) for s in spec.select],
            "exclude": spec.exclude.model_dump(exclude_none=True),
        },
        schedule=spec.schedule.model_dump(exclude_none=True) if spec.schedule else None,
        options=spec.options.model_dump(),
        repository=spec.repository or default_repository,
        retention=spec.retention.model_dump(exclude_none=True),
        enabled=spec.enabled,
        created_at=now,
        updated_at=now,
    )


def list_jobs(session: Session) -> list[Job]:
    return list(session.scalars(select(Job).order_by(Job.name)))


def find_job(session: Session, ref: str) -> Job:
    """A job by id, else by name; NotFound names what was asked for."""
    job = session.get(Job, ref) or session.scalar(select(Job).where(Job.name == ref))
    if job is None:
        raise NotFound(f"no job with id or name {ref!r}")
    return job


def name_free(session: Session, name: str, job_id: str | None = None) -> None:
    other = session.scalar(select(Job).where(Job.name == name))
    if other is not None and other.id != job_id:
        raise Conflict(f"a job named {name!r} exists already ({other.id})")


def create_job(session: Session, spec: JobSpec, now: datetime, default_repository: str) -> Job:
    """Insert a job from a resolved spec; Conflict when the name is taken."""
    name_free(session, spec.name)
    job = job_row(spec, new_job_id(), now, default_repository)
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:  # a concurrent request took the name between check and insert
        raise Conflict(f"a job named {spec.name!r} exists already") from None
    return job


def replace_job(
    session: Session,
    job_id: str,
    spec: JobSpec,
    now: datetime,
    default_repository: str,
    if_match: str | None = None,
) -> Job:
    """Replace a job's spec (PUT); its id, creation time and schedule position stay. With
    `if_match` (an If-Match header) it is replaced only while its ETag matches, else
    PreconditionFailed names the current one: the job's row is locked first, so of two edits
    made from one version, the second finds the first's and is refused."""
    session.execute(update(Job).where(Job.id == job_id).values(updated_at=Job.updated_at))
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    if if_match is not None and not matches(if_match, etag(job)):
        raise PreconditionFailed(
            f"If-Match: job {job.name} ({job_id}) changed since that ETag was read: its ETag is now"
            f" {etag(job)} (updated {iso(job.updated_at)}); read it again and redo the change"
        )
    name_free(session, spec.name, job_id)
    fresh = job_row(spec, job_id, now, default_repository)
    before = set((job.options or {}).get("replicate_to", ()))
    columns = (
        "name",
        "vcenter",
        "vms",
        "selection",
        "schedule",
        "options",
        "repository",
        "retention",
        "enabled",
    )
    for column in columns:
        setattr(job, column, getattr(fresh, column))
    job.enabled = fresh.enabled
    job.updated_at = now
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(f"a job named {spec.name!r} exists already") from None
    backfill_copies(session, job, [t for t in spec.options.replicate_to if t not in before], now)
    return job


def backfill_copies(session: Session, job: Job, targets: list[str], now: datetime) -> int:
    """A secondary added to a job also gets the job's verified restore points made before it
    (as a backup copy job would): one pending copy each; how many were asked for."""

    asked = 0
    points = session.scalars(
        select(RestorePointRow).where(RestorePointRow.job_id == job.id, RestorePointRow.verify_state == "ok")
    ).all()
    for target in targets:
        for row in points:
            if target != row.repository:
                replication.request(session, row.id, target, now)
                asked += 1
    return asked


def unfinished_runs(session: Session, job_id: str) -> list[Run]:
    query = select(Run).where(Run.job_id == job_id, Run.state.not_in(RUN_FINAL), Run.finished_at.is_(None))
    return list(session.scalars(query.order_by(Run.created_at)))


def delete_job(session: Session, job_id: str, *, force: bool = False) -> list[str]:
    """Delete a job with its runs and tasks. Refused while a run is running, unless `force`.

    Returns the ids of the unfinished runs that went with it (the caller tells movers to stop).
    The snapshot ledger is kept, so the notifier still removes any snapshot those runs left.
    """
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"no job {job_id!r}")
    open_runs = unfinished_runs(session, job_id)
    running = [r.id for r in open_runs if r.state == "running"]
    if running and not force:
        raise Conflict(f"job {job_id} has a running run ({running[0]}): cancel it, or delete with force=true")
    session.delete(job)
    session.flush()
    return [r.id for r in open_runs]


def run_now(session: Session, job: Job, trigger: Trigger, now: datetime) -> Run:
    """A run of `job` now; its JobRequested is staged in the same transaction. A job runs once at
    a time: while one of its runs is queued or running, Conflict names it (the job's row is
    locked first, so concurrent requests are served one after the other and only one starts)."""
    session.execute(update(Job).where(Job.id == job.id).values(updated_at=Job.updated_at))
    busy = unfinished_runs(session, job.id)
    if busy:
        raise Conflict(
            f"job {job.name} ({job.id}) has a run in progress: {busy[0].id} ({busy[0].state});"
            " wait for it to end, or cancel it (POST /api/v1/runs/{id}/cancel)"
        )
    run = request_run(session, job, trigger=trigger, now=now)
    if run is None:  # the same microsecond and nonce: vanishingly rare, safe to retry
        raise Conflict(f"a run of job {job.id} was requested at the same instant: try again")
    return run


def cancel_job_runs(session: Session, job_id: str) -> list[str]:
    """Ask every unfinished run of a job to stop; returns their ids."""
    if session.get(Job, job_id) is None:
        raise NotFound(f"no job {job_id!r}")
    runs = unfinished_runs(session, job_id)
    for run in runs:
        run.cancel_requested = True
    return [r.id for r in runs]


def cancel_run(session: Session, run_id: str) -> Run:
    """Ask one run to stop (movers notice within a second); Conflict when it has ended already."""
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run {run_id!r}")
    if run.state in RUN_FINAL or run.finished_at is not None:
        raise Conflict(f"run {run_id} has ended already ({run.state})")
    run.cancel_requested = True
    return run


def preview(settings: Settings, spec: JobSelection) -> dict[str, Any]:
    """The VMs a job's selection holds now, read from each vCenter (blocking)."""
    from shared.vsphere import VCenter, selection
    from shared.vsphere.inventory import read_inventory
    from shared.vsphere.tags import attached_tags

    def read(name: str, with_tags: bool) -> list[InventoryVM]:
        client = VCenter(vcenter_of(settings, name), timeout=30)
        try:
            inventory = read_inventory(client)
            if with_tags:
                tags = attached_tags(client)
                inventory = [replace(vm, tags=tags.get(vm.moref, ())) for vm in inventory]
            return inventory
        finally:
            client.close()

    return selection.preview(spec, read)


def preview_spec(settings: Settings, spec: JobSpec) -> dict[str, Any]:
    """What a job body would hold now (nothing is saved; blocking): every vCenter it names must
    be configured, its VMs are not resolved first (preview names what it cannot find)."""
    from shared.vsphere import selection

    for name in spec.vcenter_names():
        vcenter_of(settings, name)
    return preview(settings, selection.of_spec(spec.vcenter, spec.vms, spec.select, spec.exclude))
