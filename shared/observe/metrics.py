"""The metrics vbm's processes count where the work happens (docs/design.md, "Metrics").

Defined once, here, on prometheus_client's default registry; each process counts what it does
and serves them (`shared/observe/exposition.py`). Under `vbm up` every service writes them to
one directory (prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`, set by the
supervisor) and one scrape adds them up. What the catalog already knows (last success per VM,
open snapshots, runs, repository usage, ...) is not counted here: `shared/observe/catalog.py`
reads it at scrape time, so it survives restarts and agrees with the database.

Labels stay bounded: job names, VM names, vCenter names, repository locations, methods, outcomes;
never a run, task or restore point id.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

BACKUP = ("job", "vm", "vcenter", "repository")
# A VM's backup takes seconds to hours; a restore too.
LONG = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, float("inf"))
# A vCenter call takes milliseconds to a minute (a snapshot of a busy VM).
CALL = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, float("inf"))

BACKUP_SUCCESS = Counter(
    "backup_success", "VM backups that ended succeeded (a task's end, whichever service ends it)", BACKUP
)
BACKUP_FAILURE = Counter(
    "backup_failure",
    "VM backups that ended failed, after their last try (cancelled ones are neither)",
    BACKUP,
)
BACKUP_DURATION = Histogram(
    "backup_duration_seconds",
    "How long a VM's backup took: its transfer, from the snapshot ready to its restore point committed",
    BACKUP,
    buckets=LONG,
)
TRANSFER_BYTES = Counter(
    "vbm_transfer_bytes",
    "Bytes of backups moved: read from vCenter (stage=transferred) and written to the repository"
    " after dedup and compression (stage=stored), by kind full/incremental",
    ("vcenter", "repository", "kind", "stage"),
)
CBT_CHANGED_BYTES = Counter(
    "vbm_cbt_changed_bytes",
    "Bytes Changed Block Tracking reported changed since the parent backup (incrementals)",
    ("vm", "vcenter"),
)
VERIFY_RESULTS = Counter(
    "vbm_verify_results",
    "Restore points checked, by result (ok, failed) and how (after backup, on demand, scheduled)",
    ("repository", "result", "how"),
)
RESTORE_DURATION = Histogram(
    "vbm_restore_duration_seconds",
    "How long a restore took, by mode and outcome (succeeded, failed, cancelled)",
    ("vcenter", "mode", "outcome"),
    buckets=LONG,
)
REPLICATION_FAILURES = Counter(
    "vbm_replication_failures",
    "Copies of a restore point to another repository that failed (each attempt)",
    ("repository", "target"),
)
REPLICATION_COPIED = Counter(
    "vbm_replication_bytes",
    "Bytes sent to replication targets",
    ("repository", "target"),
)
GC_FREED_BYTES = Counter(
    "vbm_gc_freed_bytes", "Bytes of chunks garbage collection removed from a repository", ("repository",)
)
NOTIFICATIONS = Counter(
    "vbm_notification_deliveries",
    "Notification deliveries by channel and outcome (sent, failed)",
    ("channel", "outcome"),
)
VCENTER_CALL = Histogram(
    "vbm_vcenter_call_duration_seconds",
    "vCenter API calls (SOAP) by the method of vbm's vCenter adapter that made them",
    ("vcenter", "method"),
    buckets=CALL,
)
VCENTER_ERRORS = Counter(
    "vbm_vcenter_call_errors",
    "vCenter API calls that failed, by method and fault",
    ("vcenter", "method", "fault"),
)
