"""`vbm secrets rotate`: every stored secret re-encrypted under a new key (shared/catalog/secrets.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shared.catalog.secrets import ENCRYPTED, rotate
from shared.clock import utcnow
from shared.db.existing import open_existing
from shared.errors import StoreError
from shared.settings import Settings

COMMANDS = ("secrets",)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("secrets", help="the key that encrypts stored secrets: rotate it")
    acts = p.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    acts.add_parser(
        "rotate",
        help="re-encrypt every stored secret under a new key ("
        + ", ".join(f"{e.table}.{e.column}" for e in ENCRYPTED)
        + ")",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    engine = open_existing(settings.db_url, settings.data_dir)
    try:
        done = rotate(engine, settings, utcnow())
    except StoreError as exc:
        print(f"vbm secrets rotate: {exc} (nothing was changed)", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{done.values} secret(s) re-encrypted under a new key")
    if done.new_key is not None:
        print(
            "The keys come from VBM_SECRET_KEY: put this new key FIRST in it (the old key(s) after it,"
            " comma-separated: what a process still on the old key writes stays readable) and restart"
            " every vbm process; the stored secrets cannot be read without it:"
        )
        print(done.new_key)
    else:
        print(f"new key: {done.key_file} (services read it at their next use of a secret)")
        print(f"the old key is kept as {done.old_key_file}: delete it once you no longer need it")
    return 0
