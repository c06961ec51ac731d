"""Where an S3 repository is: `s3://host[:port]/bucket[/prefix][?tls=false&region=r
&immutable_days=N&lock_mode=compliance|governance]` parsed (shared/repo/backends/s3.py)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class S3Location:
    """A parsed `s3://host[:port]/bucket[/prefix][?tls=false&region=r]`."""

    def __init__(self, location: str) -> None:
        parts = urlsplit(location)
        path = parts.path.strip("/")
        if parts.scheme != "s3" or not parts.netloc or not path:
            raise ValueError(
                f"{location!r} is not an S3 location: write s3://<host[:port]>/<bucket>[/<prefix>]"
                " (add ?tls=false for plain HTTP)"
            )
        if "@" in parts.netloc:
            raise ValueError(
                "an S3 location carries no credentials: set VBM_S3__ACCESS_KEY and VBM_S3__SECRET_KEY"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.endpoint = parts.netloc
        self.bucket, _, prefix = path.partition("/")
        if not BUCKET.fullmatch(self.bucket) or ".." in self.bucket:
            raise ValueError(
                f"{location!r}: {self.bucket!r} is not a valid S3 bucket name (3 to 63 lower-case"
                " letters, digits, dots and hyphens, beginning and ending with a letter or digit)"
            )
        self.prefix = f"{prefix}/" if prefix else ""
        self.secure = query.get("tls", "true").lower() not in ("false", "0", "no")
        self.region = query.get("region")
        self.location = location
        days = query.get("immutable_days", "0")
        if not days.isdigit() or int(days) > 36500:
            raise ValueError(
                f"{location!r}: immutable_days must be a whole number of days (0: off), not {days!r}"
            )
        self.immutable_days = int(days)
        self.lock_mode = query.get("lock_mode", "compliance").upper()
        if self.lock_mode not in LOCK_MODES:
            raise ValueError(
                f"{location!r}: lock_mode must be compliance or governance, not {self.lock_mode!r}"
            )
