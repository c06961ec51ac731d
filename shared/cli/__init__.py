"""`vbm`, the one command for people: one module per command group (`app` parses and dispatches)."""

from shared.cli.app import main

__all__ = ["main"]
