"""The audit log's records, without I/O: what is hashed, how, and what never gets stored.

A record's hash is SHA-256 over its predecessor's hash, a newline and the canonical JSON of its
own fields (sorted keys, no spaces, UTF-8): `digest(prev_hash, fields)`. The first record of a
log that was never pruned links to GENESIS. Parameters are masked before they are stored: any key
whose name looks like a secret (password, secret, token, key, credential, cookie, webhook, url,
...) keeps its name with the value "***", whatever its type, and a value that is itself an API
key is masked wherever it appears; what is left is bounded in size.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64
MASK = "***"
MAX_PARAMS = 8192  # characters of canonical JSON; beyond it only the top-level keys are kept
MAX_RESULT = 1000
SYSTEM = "system:"

# a key name that holds, or may embed, a secret (matched anywhere in the lower-cased name)
_SECRET_NAME = re.compile(
    r"pass|secret|token|key|credential|auth|cookie|session|webhook|url|uri|dsn|hmac|signature|private|cert"
    r"|config"  # an rclone config holds its remotes' credentials
)
_SECRET_VALUE = re.compile(r"vbm_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}")
_LENGTHS = {"actor": 255, "source": 255, "action": 255, "target": 1024, "request_id": 128}


def system(service: str) -> str:
    """The actor of what a service does on its own: `system:scheduler`."""
    return f"{SYSTEM}{service}"


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name.lower()))


def mask(value: Any, depth: int = 0) -> Any:
    """`value` with every secret-looking key's value replaced by MASK (dicts and lists walked)."""
    if depth > 32:
        return MASK
    if isinstance(value, dict):
        return {str(k): MASK if is_secret_name(str(k)) else mask(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, depth + 1) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(MASK, clean(value))
    if value is None or isinstance(value, bool | int | float):
        return value
    return clean(str(value))


def params_text(params: Any) -> str:
    """The stored form of a record's parameters: masked canonical JSON, at most MAX_PARAMS long."""
    if params is None:
        return "{}"
    text = canonical(mask(params))
    if len(text) <= MAX_PARAMS:
        return text
    keys = sorted(str(k) for k in params)[:100] if isinstance(params, dict) else []
    return canonical({"truncated": True, "chars": len(text), "keys": keys})


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def clean(text: str, limit: int | None = None) -> str:
    """`text` as every database stores it: no NUL, no lone surrogate, at most `limit` long."""
    text = text.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def stamp(at: datetime) -> str:
    """The hashed form of a record's time: UTC, microseconds (what both databases keep)."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Fields:
    """What a record says; the hash covers all of it and the id."""

    id: int
    at: datetime
    actor: str
    source: str
    action: str
    target: str
    params: str
    result: str
    request_id: str

    @classmethod
    def of(cls, id: int, at: datetime, **text: str) -> Fields:
        """Fields from raw text, each cleaned and cut to its column's length."""
        lengths = {**_LENGTHS, "result": MAX_RESULT}
        values = {k: clean(v, lengths.get(k)) for k, v in text.items()}
        return cls(id=id, at=at.astimezone(UTC), **values)

    def digest(self, prev_hash: str) -> str:
        body = canonical(
            {
                "id": self.id,
                "at": stamp(self.at),
                "actor": self.actor,
                "source": self.source,
                "action": self.action,
                "target": self.target,
                "params": self.params,
                "result": self.result,
                "request_id": self.request_id,
            }
        )
        return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()
