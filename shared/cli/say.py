"""What a command prints: with `--json`, the same JSON view the REST API answers (and nothing
else on stdout, for scripts); else the human line."""

from __future__ import annotations

import argparse
import json
from typing import Any


def say(args: argparse.Namespace, view: Any, text: str) -> None:
    print(json.dumps(view, indent=2, default=str) if getattr(args, "json", False) else text)


def fields(view: dict[str, Any]) -> str:
    """One object for people: a line per field, the names aligned (null as nothing)."""
    width = max((len(k) for k in view), default=0) + 1
    return "\n".join(f"{k:<{width}} {'' if v is None else v}" for k, v in view.items())


def listing(key: str, views: list[Any]) -> dict[str, Any]:
    """A list as the API answers it: {"<key>": [...], "total": n}."""
    return {key: views, "total": len(views)}


def plain_actions(acts: Any, helps: dict[str, str]) -> None:
    """Sub-commands that take only a NAME (but `list`) and `--json`: list, show, rm, test..."""
    for action, what in helps.items():
        parser = acts.add_parser(action, help=what)
        if action != "list":
            parser.add_argument("name")
        parser.add_argument("--json", action="store_true", help="print what the REST API answers")
