"""Entity tags of jobs (docs/api.md, "Concurrent edits"): `GET /api/v1/jobs/{id}` and `PUT`
answer an `ETag`; a `PUT` with an `If-Match` that no longer matches is refused (412), so two
admins editing one job cannot overwrite each other silently."""

from __future__ import annotations

import hashlib
import json

from shared.clock import iso
from shared.db.models import Job
from shared.errors import Invalid

ETAG_FIELDS = ("name", "vcenter", "vms", "selection", "schedule", "options", "repository", "retention")


def etag(job: Job) -> str:
    """The job's entity tag: a hash of its spec, `enabled` and `updated_at` (every change of a
    job sets `updated_at`, so an edit that changes nothing still changes it). The scheduler's
    `last_slot` is not in it: a slot run is no edit."""
    spec = {name: getattr(job, name) for name in ETAG_FIELDS}
    spec |= {"enabled": bool(job.enabled), "updated_at": iso(job.updated_at)}
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def matches(if_match: str, current: str) -> bool:
    """Whether an If-Match header names `current` (`*`, or a list of strong entity tags);
    Invalid names the header when it is not one (RFC 9110, 13.1.1)."""
    if if_match.strip() == "*":
        return True
    tags = [t.strip() for t in if_match.split(",")]
    for tag in tags:
        if tag.startswith("W/"):
            continue  # weak tags never match in If-Match
        if len(tag) < 2 or not (tag.startswith('"') and tag.endswith('"')) or '"' in tag[1:-1]:
            raise Invalid(
                "If-Match",
                f"{tag[:80]!r} is not an entity tag: send the ETag as given (quotes included), or *",
            )
    return current in tags
