"""The OpenAPI 3.1 document of the REST API, made from the code: the app's route table, the
permission each route needs (`@needs`), and what each declares with `@op` (services/gateway/
apidoc.py): its query parameters, body and answer models (pydantic), errors and `vbm` command.
Served at GET /api/v1/openapi.json, with a reference page at GET /api/v1/docs (Redoc, vendored:
services/gateway/static/vendor, no CDN)."""

from __future__ import annotations

import re
import weakref
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from services.gateway.access import declared, needs
from services.gateway.apidoc import Operation, Param, op, operation
from services.gateway.common import PROBLEM, json_response
from services.gateway.ui.render import is_page
from shared import __version__
from shared.model.access import PUBLIC

routes = web.RouteTableDef()

STATIC = Path(__file__).parent / "static"
# Each app's document, made at its first request: a running app's own state is frozen (aiohttp
# deprecates changing it, and a warning is an error in the suite), so the cache lives beside it.
_DOCS: weakref.WeakKeyDictionary[web.Application, dict[str, Any]] = weakref.WeakKeyDictionary()

Mode = Literal["validation", "serialization"]


class FieldError(BaseModel):
    field: str = Field(description="the invalid field: a dotted path in the body, or a parameter's name")
    in_: str = Field(alias="in", description="body, query, path or header")
    detail: str


class Problem(BaseModel):
    """Every 4xx and 5xx answer (RFC 9457, application/problem+json)."""

    type: str = Field(description="about:blank: the status says what kind of problem it is")
    title: str
    status: int
    detail: str = Field(description="what was wrong and what to do, in words")
    errors: list[FieldError] | None = Field(None, description="each invalid field and where it was")


ERRORS = {
    400: "the request cannot be read: a query value of the wrong shape, a body that is not JSON",
    401: "no identity: send X-API-Key, or log in (POST /api/v1/session)",
    403: "the caller's role lacks the permission this route needs (x-vbm-permission)",
    404: "no such object",
    409: "the object's state forbids it now (the detail names why)",
    412: "If-Match names an older version of the object: read it again",
    413: "the body is larger than the gateway takes (1 MiB)",
    415: "the body is not application/json",
    422: "a field is invalid: errors names each one and where it was",
    429: "too many attempts: wait the Retry-After seconds",
    500: "a defect of vbm: the gateway's log has it",
    502: "a server behind vbm (vCenter, storage) answered wrongly",
    503: "something vbm needs is not reachable now: try again",
}


def document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of `app` (every route but HEAD)."""
    paths: dict[str, dict[str, Any]] = {}
    wanted: list[tuple[type[BaseModel], Mode]] = [(Problem, "serialization")]
    found: list[tuple[str, str, Any, Operation]] = []
    for method, path, handler in app_routes(app):
        # a route without @op still appears (test_openapi.py fails on it), so the document never breaks
        declared_op = operation(handler) or Operation("(not declared: a defect)", no_cli="(not declared)")
        found.append((method, path, handler, declared_op))
        if declared_op.body is not None:
            wanted.append((declared_op.body, "validation"))
        if declared_op.answer is not None:
            wanted.append((declared_op.answer, "serialization"))
    schemas, defs = models_json_schema(wanted, ref_template="#/components/schemas/{model}")
    for method, path, handler, declared_op in found:
        paths.setdefault(path, {})[method.lower()] = _operation(path, handler, declared_op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vSphere Backup Manager",
            "version": __version__,
            "description": (
                "The REST API of vbm. docs/api.md tells how it is used (identity, paging, errors,"
                " idempotency, live events); this document is made from the code and the suite"
                " checks the server against it. Each operation names the permission it needs"
                " (x-vbm-permission) and the vbm command that does the same (x-vbm-cli)."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "vbm_session",
                    "description": "a browser's session (POST /api/v1/session); a change needs the"
                    " X-CSRF-Token header too, as the login answered it",
                },
            },
        },
        "security": [{"apiKey": []}, {"session": []}],
    }


def app_routes(app: web.Application) -> list[tuple[str, str, Any]]:
    """(method, path template, handler) of every route of the REST API: not HEAD, not the web
    UI's pages (`@page`: HTML for people, services/gateway/ui)."""
    out = []
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path is None or is_page(route.handler):
            continue
        out.append((route.method, str(path), route.handler))
    return out


_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _operation(
    path: str, handler: Any, declared_op: Operation, schemas: dict[tuple[Any, Mode], Any]
) -> dict[str, Any]:
    permission = declared(handler)
    public = permission == PUBLIC
    out: dict[str, Any] = {
        "operationId": handler.__name__,
        "summary": declared_op.summary,
        "tags": list(declared_op.tags) or [_tag(path)],
        "x-vbm-permission": "public" if public else str(getattr(permission, "value", permission)),
    }
    description = declared_op.description or _docstring(handler)
    if description:
        out["description"] = description
    if declared_op.cli:
        out["x-vbm-cli"] = declared_op.cli
    else:
        out["x-vbm-no-cli"] = declared_op.no_cli
    if public:
        out["security"] = []
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for name in _PATH_PARAM.findall(path)
    ]
    params += [_param(p) for p in declared_op.query]
    if params:
        out["parameters"] = params
    if declared_op.body is not None:
        out["requestBody"] = {
            "required": declared_op.body_required,
            "content": {"application/json": {"schema": schemas[(declared_op.body, "validation")]}},
        }
    out["responses"] = _responses(path, declared_op, schemas, public)
    return out


def _responses(
    path: str, declared_op: Operation, schemas: dict[tuple[Any, Mode], Any], public: bool
) -> dict[str, Any]:
    success: dict[str, Any] = {"description": "done"}
    if declared_op.answer is not None:
        success["content"] = {declared_op.media: {"schema": schemas[(declared_op.answer, "serialization")]}}
    elif declared_op.status != 204:
        success["content"] = {declared_op.media: {}}
    for media in declared_op.other_media:
        success.setdefault("content", {})[media] = {}
    codes = {400, 500, *declared_op.errors}
    if not public:
        # the common ones (apidoc.Operation.errors): a route may miss an object its body or the
        # settings name (POST /restores: the restore point; GET /smtp: none set), or refuse a field
        codes |= {401, 403, 404, 422}
    if "{" in path:
        codes.add(404)
    if declared_op.body is not None:
        codes |= {413, 422}
    if declared_op.query:
        codes.add(422)
    problem_ref = {PROBLEM: {"schema": schemas[(Problem, "serialization")]}}
    answers: dict[str, Any] = {str(declared_op.status): success}
    for code in sorted(codes):
        answers[str(code)] = {"description": ERRORS.get(code, "an error"), "content": problem_ref}
    return answers


def _param(p: Param) -> dict[str, Any]:
    return {
        "name": p.name,
        "in": p.where,
        "required": p.required,
        "description": p.description,
        "schema": p.schema,
    }


def _tag(path: str) -> str:
    parts = path.split("/")
    return parts[3] if len(parts) > 3 and parts[1:3] == ["api", "v1"] else "service"


def _docstring(handler: Any) -> str:
    doc = (handler.__doc__ or "").strip()
    return re.sub(r"\s*\n\s*", " ", doc)


@routes.get("/api/v1/openapi.json")
@needs(PUBLIC)
@op("The OpenAPI 3.1 document of this API", no_cli="the document itself: fetch it with any client")
async def openapi_json(request: web.Request) -> web.Response:
    if request.app not in _DOCS:
        _DOCS[request.app] = document(request.app)
    return json_response(_DOCS[request.app])


REFERENCE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vbm REST API reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><redoc spec-url="/api/v1/openapi.json"></redoc>
<script src="/static/vendor/redoc/redoc.standalone.js"></script></body></html>
"""


# The page loads nothing from outside the gateway. Redoc's bundle names no font host (its fonts are
# CSS names with sans-serif after them), but its side menu shows a logo from Redocly's CDN: img-src
# refuses it, and Redoc then leaves the logo out. Redoc styles itself inline (styled-components),
# runs its search in a worker made from a blob: URL, and its schema code compiles functions (eval).
REFERENCE_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self';"
    " object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@routes.get("/api/v1/docs")
@needs(PUBLIC)
@op("The API reference, a page for people (Redoc)", media="text/html", no_cli="a page for a browser")
async def reference(_request: web.Request) -> web.Response:
    return web.Response(
        text=REFERENCE, content_type="text/html", headers={"Content-Security-Policy": REFERENCE_CSP}
    )


@routes.get("/static/{path:.+}")
@needs(PUBLIC)
@op(
    "The gateway's own static files (vendored front-end libraries)",
    media="application/octet-stream",
    no_cli="files for a browser",
)
async def static(request: web.Request) -> web.StreamResponse:
    """A file under services/gateway/static: nothing outside it, no listing."""
    wanted = (STATIC / request.match_info["path"]).resolve()
    if not wanted.is_relative_to(STATIC.resolve()) or not wanted.is_file():
        raise web.HTTPNotFound(text=f"no such file: {request.path}")
    return web.FileResponse(wanted, headers={"Cache-Control": "public, max-age=3600"})
