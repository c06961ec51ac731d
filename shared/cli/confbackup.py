"""`vbm config-backup` and `vbm config-restore`: vbm's own database and keys in one encrypted file.

The passphrase comes from `--passphrase-file`, else `config_backup.passphrase`
(VBM_CONFIG_BACKUP__PASSPHRASE) or `config_backup.passphrase_file`, else a prompt on a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from shared.confbackup.archive import ENV_SECRET, RestoreRefused, restore_backup, write_backup
from shared.confbackup.sealed import SealError, check_passphrase
from shared.settings import ConfigBackupSettings, Settings

COMMANDS = ("config-backup", "config-restore")


def add_parsers(sub: Any) -> None:
    make = sub.add_parser(
        "config-backup", help="write vbm's database and keys to one passphrase-encrypted file"
    )
    make.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="default: vbm-config-<UTC time>.vbmcfg"
    )
    make.add_argument("--passphrase-file", type=Path, metavar="F", help="its first line is the passphrase")
    make.add_argument(
        "--include-secret-key-env",
        action="store_true",
        help=f"also carry ${ENV_SECRET} (not carried unless asked: it is the key to every stored secret)",
    )
    back = sub.add_parser("config-restore", help="bring a machine back from a configuration backup")
    back.add_argument("file", type=Path)
    back.add_argument("--passphrase-file", type=Path, metavar="F")
    back.add_argument("--force", action="store_true", help="overwrite a data directory or database in use")


def passphrase_from(given: Path | None, settings: ConfigBackupSettings, *, confirm: bool) -> str:
    """The passphrase, or ValueError saying where to put one."""
    path = given or settings.passphrase_file
    if path is not None:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
        if not lines or not lines[0]:
            raise ValueError(f"the passphrase file {path} is empty")
        return lines[0]
    if settings.passphrase is not None and settings.passphrase.get_secret_value():
        return settings.passphrase.get_secret_value()
    if not sys.stdin.isatty():
        raise ValueError(
            "no passphrase: give --passphrase-file F, or set VBM_CONFIG_BACKUP__PASSPHRASE,"
            " or run on a terminal"
        )
    first = getpass.getpass("passphrase: ")
    if confirm:
        check_passphrase(first)
        if getpass.getpass("again: ") != first:
            raise ValueError("the two passphrases differ")
    return first


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        phrase = passphrase_from(
            args.passphrase_file, settings.config_backup, confirm=args.command == "config-backup"
        )
        if args.command == "config-backup":
            return _backup(args, settings, phrase)
        return _restore(args, settings, phrase)
    except (ValueError, SealError, RestoreRefused, SQLAlchemyError, sqlite3.Error, OSError) as exc:
        what = exc.args[0] if isinstance(exc, SQLAlchemyError) and exc.args else exc
        print(f"vbm {args.command}: {what}", file=sys.stderr)
        return 2 if isinstance(exc, RestoreRefused | ValueError) else 1


def _backup(args: argparse.Namespace, settings: Settings, phrase: str) -> int:
    check_passphrase(phrase)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out: Path = args.output or Path(f"vbm-config-{stamp}.vbmcfg")
    env_secret = os.environ.get(ENV_SECRET) if args.include_secret_key_env else None
    if args.include_secret_key_env and not env_secret:
        raise ValueError(f"--include-secret-key-env: {ENV_SECRET} is not set")
    tmp = out.with_name(f".{out.name}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            kind, counts, files = write_backup(settings, fh, phrase, env_secret=env_secret)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"configuration backup written: {out} ({out.stat().st_size} bytes)")
    print(f"  database ({kind}): {_counts(counts)}")
    print(f"  files: {', '.join(files) or 'none'}")
    if os.environ.get(ENV_SECRET) and env_secret is None:
        print(
            f"  {ENV_SECRET} is set and NOT in the backup: keep it safe elsewhere"
            " (or give --include-secret-key-env)"
        )
    return 0


def _restore(args: argparse.Namespace, settings: Settings, phrase: str) -> int:
    try:
        src = args.file.open("rb")
    except OSError as exc:
        raise ValueError(f"cannot read {args.file}: {exc.strerror}") from None
    with src:
        done = restore_backup(settings, src, phrase, force=args.force)
    print(f"restored into {settings.data_dir.resolve()} (database: {_safe(settings.db_url)})")
    print(f"  database (from {done.database}, migrated to the newest schema): {_counts(done.counts)}")
    print(f"  files: {', '.join(done.files) or 'none'}")
    if done.env_secret_file is not None:
        print(
            f"  {ENV_SECRET} was in the backup: it is in {done.env_secret_file} (0600);"
            " set it and delete the file"
        )
    return 0


def _counts(counts: dict[str, int]) -> str:
    names = {"jobs": "jobs", "restore_points": "restore points", "runs": "runs", "users": "users"}
    names["api_keys"] = "API keys"
    return ", ".join(f"{n} {names[k]}" for k, n in counts.items() if k in names) or "empty"


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
