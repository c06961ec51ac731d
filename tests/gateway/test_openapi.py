"""The OpenAPI document is made from the code and covers it: every route of the app is in it with
its method, declares what it does (`@op`), and names a `vbm` command that exists and speaks JSON.
(The server is checked against the document by tests/pipeline/test_schemathesis.py.)"""

from __future__ import annotations

import argparse
import shlex
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from services.gateway.apidoc import operation
from services.gateway.app import create_app
from services.gateway.openapi import app_routes, document
from shared.cli.app import _parser
from shared.settings import Settings

METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def app() -> web.Application:
    return create_app(SimpleNamespace(settings=Settings()))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def doc(app: web.Application) -> dict[str, Any]:
    return document(app)


def test_every_route_declares_what_it_does(app: web.Application) -> None:
    missing = [f"{m} {p}" for m, p, h in app_routes(app) if operation(h) is None]
    assert missing == [], f"routes without @op (services/gateway/apidoc.py): {missing}"


def test_every_route_is_in_the_document_with_its_method(app: web.Application, doc: dict[str, Any]) -> None:
    in_app = {(m.lower(), p) for m, p, _ in app_routes(app)}
    in_doc = {(m, p) for p, item in doc["paths"].items() for m in item if m in METHODS}
    assert in_app - in_doc == set(), "routes missing from openapi.json"
    assert in_doc - in_app == set(), "openapi.json documents routes the app does not have"
    assert len(in_doc) >= 80


def test_operations_are_named_once_and_answer_errors_as_problems(doc: dict[str, Any]) -> None:
    ids = [o["operationId"] for item in doc["paths"].values() for o in item.values()]
    assert len(ids) == len(set(ids)), "an operationId is used twice"
    for path, item in doc["paths"].items():
        for method, o in item.items():
            where = f"{method.upper()} {path}"
            assert o["summary"], where
            assert "500" in o["responses"], where
            errors = [c for c in o["responses"] if c.startswith(("4", "5"))]
            for code in errors:
                assert "application/problem+json" in o["responses"][code]["content"], (where, code)
            if o["x-vbm-permission"] != "public":
                assert {"401", "403"} <= set(o["responses"]), where
            if "{" in path:
                assert "404" in o["responses"], where


def test_schemas_resolve(doc: dict[str, Any]) -> None:
    """Every $ref names a schema of components (no dangling reference for a client generator)."""
    known = set(doc["components"]["schemas"])

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    dangling = {r for r in refs(doc) if r.removeprefix("#/components/schemas/") not in known}
    assert dangling == set()


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every leaf command of `vbm`: "vbm job run" -> its parser."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[prefix] = parser
        for action in subs:
            for name, sub in action.choices.items():
                walk(sub, f"{prefix} {name}")

    walk(_parser(), "vbm")
    return out


def test_every_operation_has_a_vbm_command_with_json(doc: dict[str, Any]) -> None:
    """CLI parity: each operation names the `vbm` command that does the same, and it exists and
    takes --json; the few without one (a browser's session, a probe) say why in the document."""
    commands = _commands()
    wrong, no_json, without = [], [], []
    for path, item in doc["paths"].items():
        for method, o in item.items():
            where = f"{method.upper()} {path}"
            if "x-vbm-no-cli" in o:
                without.append(where)
                continue
            words = shlex.split(o["x-vbm-cli"])
            line = " ".join(w for w in words if not w.startswith(("-", "<")) and w.upper() != w)
            command = next((c for c in sorted(commands, key=len, reverse=True) if line.startswith(c)), None)
            if command is None:
                wrong.append(f"{where}: {o['x-vbm-cli']}")
                continue
            options = {s for a in commands[command]._actions for s in a.option_strings}
            if "--json" not in options and command != "vbm version":
                no_json.append(f"{where}: {command}")
    assert wrong == [], "operations whose vbm command does not exist"
    assert no_json == [], "vbm commands without --json"
    assert len(without) <= 12, f"too many operations without a vbm command: {without}"


def test_every_changing_operation_is_audited_from_the_cli_too(doc: dict[str, Any]) -> None:
    """What changes state through the API is recorded by the gateway's audit trail; the `vbm`
    command that does the same must be recorded as well (shared/cli/trail.py), or record itself."""
    from shared.cli import trail

    records_itself = {"vbm prune", "vbm gc", "vbm audit prune"}
    leaves = _commands()
    missing = []
    for path, item in doc["paths"].items():
        for method, o in item.items():
            if method == "get" or "x-vbm-cli" not in o:
                continue
            line = " ".join(w for w in shlex.split(o["x-vbm-cli"]) if not w.startswith(("-", "<")))
            command = next((c for c in sorted(leaves, key=len, reverse=True) if line.startswith(c)), None)
            if command is None or command in records_itself:
                continue
            words = command.split()[1:]
            if (words[0], words[1] if len(words) > 1 else None) not in trail.CHANGES:
                missing.append(f"{method.upper()} {path}: {command}")
    assert missing == [], "changing commands the audit log would not see"
