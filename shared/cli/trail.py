"""The audit records of what `vbm` changes from the command line (docs/design.md, "Audit log").

The CLI works on the database directly, so the gateway's audit trail never sees it: each command
that changes something is recorded here, after it ran, as `os:<user>` from `cli`, with its
arguments (no secret ever comes from the command line: passwords are read from a terminal or
stdin) and its result. `vbm prune`, `vbm gc` and `vbm audit prune` record themselves, with their
figures, and are not listed here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# (command, action) pairs that change something; None: the command has no actions
CHANGES: frozenset[tuple[str, str | None]] = frozenset(
    {
        *(("job", a) for a in ("create", "edit", "enable", "disable", "delete", "run", "cancel")),
        ("run", "cancel"),
        ("verify", None),
        ("backups", "verify"),
        ("backups", "pin"),
        ("backups", "unpin"),
        ("repo", "measure"),
        *(("restore", a) for a in ("start", "cancel", "migrate", "stop")),
        ("alerts", "ack"),
        ("notify", "test"),
        ("apikey", "create"),
        ("apikey", "revoke"),
        *(("user", a) for a in ("add", "edit", "passwd", "disable", "enable", "role")),
        *(("vcenter", a) for a in ("add", "edit", "rm", "test")),  # a test: the API records it too
        *(("location", a) for a in ("add", "edit", "rm")),
        *(("channel", a) for a in ("add", "edit", "rm")),
        *(("mount", a) for a in ("add", "edit", "remove", "test", "mount", "unmount")),
        ("smtp", "set"),
        ("smtp", "clear"),
        ("secrets", "rotate"),
        ("config-backup", None),
    }
)
# the argument that names what a command acts on, and how the log names that kind of thing
TARGETS = (
    ("job", "job"), ("run_id", "run"), ("restore_point", "restore_point"), ("restore_id", "restore"),
    ("alert_ids", "alert"), ("channel", "channel"),
)  # fmt: skip
NAMED = {
    "apikey": "apikey", "user": "user", "vcenter": "vcenter", "job": "job", "location": "location",
    "channel": "channel", "mount": "mount",
}  # fmt: skip


def action_of(args: argparse.Namespace) -> str | None:
    """`vbm job create` for a command that changes something, else None."""
    command = str(args.command)
    action = getattr(args, f"{command.replace('-', '_')}_command", None)
    if (command, action) not in CHANGES:
        return None
    return f"vbm {command}" + (f" {action}" if action else "")


def target_of(args: argparse.Namespace) -> str:
    for attr, kind in TARGETS:
        value = getattr(args, attr, None)
        if value:
            return f"{kind}:{','.join(map(str, value)) if isinstance(value, list) else value}"
    name = getattr(args, "name", None)
    if name and args.command in NAMED:
        return f"{NAMED[args.command]}:{name}"
    return "smtp" if args.command == "smtp" else ""


def params_of(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"command", f"{str(args.command).replace('-', '_')}_command", "password_stdin"}
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key in skip or value is None or value is False or value == []:
            continue
        out[key] = str(value) if isinstance(value, Path) else value
    return out


def record(args: argparse.Namespace, db_url: str, code: int, error: str | None = None) -> None:
    """Append the record of a changing command (nothing for one that only reads); never raises:
    a failure is logged as `AUDIT RECORD NOT WRITTEN`."""
    action = action_of(args)
    if action is None:
        return
    from shared.catalog import audit
    from shared.cli.audit import actor
    from shared.db import make_engine, make_sessionmaker

    result = "ok" if code == 0 else f"error: exit {code}" + (f": {error}" if error else "")
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).is_file():
        return  # no database (the command said so): never make one just to record that
    try:
        engine = make_engine(db_url)
    except Exception:
        return
    try:
        audit.try_append(
            make_sessionmaker(engine), actor=actor(), source="cli", action=action,
            target=target_of(args), params=params_of(args), result=result,
        )  # fmt: skip
    finally:
        engine.dispose()
