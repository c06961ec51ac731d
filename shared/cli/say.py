"""What a command prints: with `--json`, the same JSON view the REST API answers (and nothing
else on stdout, for scripts); else the human line."""

from __future__ import annotations

import argparse
import json
from typing import Any


def say(args: argparse.Namespace, view: Any, text: str) -> None:
    print(json.dumps(view, indent=2, default=str) if getattr(args, "json", False) else text)


def listing(key: str, views: list[Any]) -> dict[str, Any]:
    """A list as the API answers it: {"<key>": [...], "total": n}."""
    return {key: views, "total": len(views)}
