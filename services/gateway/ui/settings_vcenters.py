"""Settings: the index (/settings) and the vCenters (/settings/vcenters): list, add, edit, test
the connection, remove, through the same catalog functions and connection test as
/api/v1/vcenters (services/gateway/api_vcenters.py). Configured vCenters are read only here;
passwords are write-only (a blank password field on edit leaves the stored one)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from services.gateway.access import needs
from services.gateway.api_vms import VCENTERS
from services.gateway.common import CTX, in_session
from services.gateway.ui.render import page, render
from services.gateway.ui.settings_common import removed
from shared.catalog import vcenters as vcstore
from shared.errors import Conflict, Invalid, NotFound, StoreError
from shared.model.access import Permission
from shared.settings import VCenterSettings
from shared.vsphere.probe import Probe, probe

routes = web.RouteTableDef()

FIELDS = ("name", "url", "username", "ca_pem", "ca_file", "hotadd_proxy")
LABELS = {"name": "Name", "url": "SDK URL", "username": "User name", "password": "Password",
          "ca_pem": "CA certificate (PEM)", "ca_file": "CA file", "hotadd_proxy": "HotAdd proxy",
          "verify_tls": "Verify TLS"}  # fmt: skip


@routes.get("/settings")
@needs(Permission.STATUS_READ)
@page
async def settings_index(request: web.Request) -> web.Response:
    return render(request, "settings/index.html")


async def _views(request: web.Request) -> list[dict[str, Any]]:
    settings = request.app[CTX].settings
    return await in_session(request, lambda s: vcstore.list_views(s, settings))


async def _list(
    request: web.Request, values: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
    status: int = 200, tested: dict[str, Any] | None = None, refused: dict[str, str] | None = None,
) -> web.Response:  # fmt: skip
    return render(
        request, "settings/vcenters.html", status, vcenters=await _views(request),
        values=values or {"verify_tls": True}, errors=errors or {}, tested=tested or {},
        refused=refused or {}, labels=LABELS,
    )  # fmt: skip


@routes.get("/settings/vcenters")
@needs(Permission.VCENTERS_READ)
@page
async def vcenters_page(request: web.Request) -> web.Response:
    return await _list(request)


def _form_values(form: Any) -> dict[str, Any]:
    """The form's values (the password apart: it is never sent back)."""
    values: dict[str, Any] = {k: str(form.get(k, "")).strip() for k in FIELDS}
    values["verify_tls"] = form.get("verify_tls") == "on"
    values["skip_test"] = form.get("skip_test") == "on"
    return values


def _body(values: dict[str, Any], password: str) -> dict[str, Any]:
    body: dict[str, Any] = {k: (values[k] or None) for k in FIELDS if k != "name"}
    body["verify_tls"] = values["verify_tls"]
    if password:
        body["password"] = password
    return body


def _error(exc: StoreError, values: dict[str, Any]) -> tuple[str, str]:
    if isinstance(exc, Invalid):
        field = exc.field.split(".")[0]
        field = field if field in LABELS else "name"
        return field, f"{LABELS[field]}: {exc.message}"
    return "name", str(exc)


async def _test(vc: VCenterSettings) -> Probe:
    return await asyncio.to_thread(probe, vc)


def _failed(result: Probe) -> tuple[str, str]:
    field = result.field if result.field in LABELS else "url"
    return field, f"Connection test failed ({result.kind}): {result.message}; nothing was saved"


@routes.post("/settings/vcenters")
@needs(Permission.VCENTERS_WRITE)
@page
async def add_vcenter(request: web.Request) -> web.Response:
    """Add a vCenter (as POST /api/v1/vcenters): tested first unless "save without testing"."""
    ctx, form = request.app[CTX], await request.post()
    values = _form_values(form)
    password = str(form.get("password", ""))
    body = {"name": values["name"], **_body(values, password), "password": password or None}
    errors: dict[str, str] = {}
    try:
        vc = await in_session(request, lambda s: vcstore.candidate_new(s, ctx.settings, body))
        result = None if values["skip_test"] else await _test(vc)
        if result is not None and not result.ok:
            field, message = _failed(result)
            errors[field] = message
        else:

            def save(s: Session) -> None:
                vcstore.candidate_new(s, ctx.settings, body)
                vcstore.save(s, ctx.settings, vc, ctx.clock())

            await in_session(request, save, write=True)
            request.app[VCENTERS].forget(vc.name)
            raise web.HTTPSeeOther("/settings/vcenters")
    except (Invalid, Conflict) as exc:
        field, message = _error(exc, values)
        errors[field] = message
    return await _list(request, values, errors, 422)


async def _stored(request: web.Request, name: str) -> dict[str, Any]:
    view = next((v for v in await _views(request) if v["name"] == name), None)
    if view is None:
        raise NotFound(f"no vCenter {name!r}")
    return view


@routes.get("/settings/vcenters/{name}/edit")
@needs(Permission.VCENTERS_WRITE)
@page
async def edit_form(request: web.Request) -> web.Response:
    view = await _stored(request, request.match_info["name"])
    if view["source"] != vcstore.API:
        raise Conflict(
            f"vCenter {view['name']!r} is configured (VBM_VCENTERS or the TOML file): change it there"
        )
    values = {k: view.get(k) or "" for k in FIELDS} | {"verify_tls": view["verify_tls"]}
    return render(request, "settings/vcenter_edit.html", vc=view, values=values, errors={}, labels=LABELS)


@routes.post("/settings/vcenters/{name}/edit")
@needs(Permission.VCENTERS_WRITE)
@page
async def change_vcenter(request: web.Request) -> web.Response:
    """Change an added vCenter (as PUT /api/v1/vcenters/{name}): a blank password keeps it."""
    ctx, name, form = request.app[CTX], request.match_info["name"], await request.post()
    view = await _stored(request, name)
    values = _form_values(form) | {"name": name}
    body = _body(values, str(form.get("password", "")))
    errors: dict[str, str] = {}
    try:
        vc = await in_session(request, lambda s: vcstore.candidate_change(s, ctx.settings, name, body))
        result = None if values["skip_test"] else await _test(vc)
        if result is not None and not result.ok:
            field, message = _failed(result)
            errors[field] = message
        else:
            await in_session(request, lambda s: vcstore.save(s, ctx.settings, vc, ctx.clock()), write=True)
            request.app[VCENTERS].forget(name)
            raise web.HTTPSeeOther("/settings/vcenters")
    except (Invalid, Conflict) as exc:
        field, message = _error(exc, values)
        errors[field] = message
    return render(
        request, "settings/vcenter_edit.html", 422, vc=view, values=values, errors=errors, labels=LABELS
    )


@routes.post("/settings/vcenters/{name}/test")
@needs(Permission.VCENTERS_WRITE)
@page
async def test_vcenter(request: web.Request) -> web.Response:
    """Test a saved vCenter's connection (as POST /api/v1/vcenters/{name}/test): htmx gets the
    result beside the button, a plain form the list with the result in place."""
    ctx, name = request.app[CTX], request.match_info["name"]

    result = {
        "name": name,
        **(
            await _test(await in_session(request, lambda s: vcstore.find_usable(s, ctx.settings, name)))
        ).view(),
    }
    if request.headers.get("HX-Request") == "true":
        return render(request, "settings/vc_tested.html", r=result)
    return await _list(request, tested={name: result})


@routes.post("/settings/vcenters/{name}/delete")
@needs(Permission.VCENTERS_WRITE)
@page
async def delete_vcenter(request: web.Request) -> web.Response:
    """Remove an added vCenter (as DELETE /api/v1/vcenters/{name}); refused while jobs use it."""
    ctx, name = request.app[CTX], request.match_info["name"]
    refused = await removed(request, "vCenter", lambda s: vcstore.remove(s, ctx.settings, name), _list)
    if refused is not None:
        return refused
    request.app[VCENTERS].forget(name)
    raise web.HTTPSeeOther("/settings/vcenters")
