"""Live events: their types, the phases clients see, which events a query asks for, and which
ones a role may see (docs/api.md, "Live events"). Pure: no I/O.

vbm's own phases are mapped onto a small public set, the same for backups and restores:

| public phase | a backup task's phase | a restore's phase |
|---|---|---|
| queued | queued (waiting to be admitted) | queued |
| connecting | - | checking, powering_off |
| snapshot | snapshot | - |
| downloading | transfer (the mover reads, compresses and writes in one stream) | - |
| writing | - | uploading, materializing, mounting, registering, resetting_cbt, powering_on, migrating, |
| | | stopping, cleaning_up (vbm is still changing things in vCenter or on the datastore) |
| verifying | verify | testing (a restore test checks the VM it restored) |
| replicating | (a replication of its restore point) | - |
| done | done | instant, migrated, stopped, done |

Every event also carries `vbm_phase`, vbm's own name, so nothing is lost by the mapping.

`done` means the work is over (with `state` saying how it ended), never "still running": so
powering on the restored VM, stopping an instant VM and cleaning up after a failure or a cancel
(or after a restore test's checks) are `writing`, the public name of "vbm is changing things in
vCenter and on the datastore", as registering the VM already is. A client that shows a phase
thus never shows `done` beside a restore that is still running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.model.access import GRANTS, Permission, Role

PHASES = ("queued", "connecting", "snapshot", "downloading", "writing", "verifying", "replicating", "done")

TASK_PHASES = {
    "queued": "queued",
    "snapshot": "snapshot",
    "transfer": "downloading",
    "verify": "verifying",
    "done": "done",
}
RESTORE_PHASES = {
    "queued": "queued",
    "checking": "connecting",
    "powering_off": "connecting",
    "uploading": "writing",
    "materializing": "writing",
    "mounting": "writing",
    "registering": "writing",
    "resetting_cbt": "writing",
    "migrating": "writing",
    "powering_on": "writing",  # still running: `done` only once the work is over
    "stopping": "writing",
    "cleaning_up": "writing",
    "testing": "verifying",
    "instant": "done",
    "migrated": "done",
    "stopped": "done",
    "done": "done",
}

# The families a client may ask for with `type=` (an event's type is `<family>.<what>`).
FAMILIES = ("run", "task", "restore", "replication", "alert", "progress")

# What a role must hold to see an event of each family: the one place that decides it.
NEEDS: dict[str, Permission] = {
    "run": Permission.RUNS_READ,
    "task": Permission.RUNS_READ,
    "progress": Permission.RUNS_READ,
    "replication": Permission.BACKUPS_READ,
    "restore": Permission.RESTORES_READ,
    "alert": Permission.ALERTS_READ,
}


def public_phase(kind: str, phase: str | None) -> str | None:
    """The public phase of a task's (`kind` "task") or a restore's vbm phase."""
    if phase is None:
        return None
    table = RESTORE_PHASES if kind == "restore" else TASK_PHASES
    return table.get(phase, phase)


def family(event_type: str) -> str:
    return event_type.split(".", 1)[0]


def visible(event_type: str, role: Role, needs: Mapping[str, Permission] = NEEDS) -> bool:
    """Whether a caller of `role` may see an event of this type (unknown families: never)."""
    wanted = needs.get(family(event_type))
    return wanted is not None and wanted in GRANTS[role]


class BadQuery(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _values(raw: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip() for item in raw for v in item.split(",") if v.strip())


@dataclass(frozen=True)
class Filter:
    """What a client asked for: events about any of `runs`, `jobs`, `restores` (none given: all),
    of the families in `types` (none given: all)."""

    runs: frozenset[str] = field(default_factory=frozenset)
    jobs: frozenset[str] = field(default_factory=frozenset)
    restores: frozenset[str] = field(default_factory=frozenset)
    types: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, query: Mapping[str, Iterable[str]]) -> Filter:
        """From the query's values (each repeatable and comma-separated); BadQuery names a bad one."""
        got = {name: _values(query.get(name, ())) for name in ("run", "job", "restore", "type")}
        for name in ("run", "job", "restore"):
            for value in got[name]:
                if len(value) > 160:
                    raise BadQuery(name, f"{value[:20]!r}... is longer than 160 characters")
        unknown = sorted(got["type"] - set(FAMILIES))
        if unknown:
            raise BadQuery("type", f"unknown type {', '.join(unknown)}: one of {', '.join(FAMILIES)}")
        return cls(got["run"], got["job"], got["restore"], got["type"])

    def matches(self, event: Mapping[str, Any]) -> bool:
        if self.types and family(str(event.get("type", ""))) not in self.types:
            return False
        if not (self.runs or self.jobs or self.restores):
            return True
        return (
            event.get("run_id") in self.runs
            or event.get("job_id") in self.jobs
            or event.get("restore_id") in self.restores
        )


def eta_seconds(done: int, total: int, rate: float) -> float | None:
    """Seconds left at the current rate (bytes/s), or None when it cannot be told."""
    if rate <= 0 or total <= 0 or done >= total:
        return None
    return round((total - done) / rate, 1)
