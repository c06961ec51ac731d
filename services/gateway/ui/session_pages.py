"""The web UI's doors: log in, log out, and the first admin (the setup token `vbm up` prints).
They take the same steps as the REST API's /api/v1/session and /api/v1/setup
(services/gateway/api_session.py), with forms that work without JavaScript."""

from __future__ import annotations

import math

from aiohttp import web

from services.gateway.access import needs
from services.gateway.api_session import first_admin, open_session, set_session_cookie, try_login
from services.gateway.common import CTX, in_session
from services.gateway.ui.render import page, render, safe_next
from shared.catalog import sessions, users
from shared.errors import Conflict, Invalid
from shared.model.access import PUBLIC, Permission

routes = web.RouteTableDef()


async def _form(request: web.Request) -> dict[str, str]:
    data = await request.post()
    return {k: v for k, v in data.items() if isinstance(v, str)}


async def _nobody_yet(request: web.Request) -> bool:
    return not await in_session(request, users.any_exist)


@routes.get("/login")
@needs(PUBLIC)
@page
async def login_page(request: web.Request) -> web.Response:
    if await _nobody_yet(request):
        raise web.HTTPSeeOther("/setup")
    return render(request, "login.html", name="", error=None, next=safe_next(request.query.get("next")))


@routes.post("/login")
@needs(PUBLIC)
@page
async def login_form(request: web.Request) -> web.Response:
    form = await _form(request)
    name, target = form.get("name", "").strip(), safe_next(form.get("next"))
    if not name or not form.get("password"):
        return render(
            request, "login.html", 422, name=name, next=target, error="Enter your user name and password."
        )
    outcome = await try_login(request, name, form["password"])
    if isinstance(outcome, users.LoginRefused):
        status, headers = 401, {}
        error = outcome.public
        if outcome.retry_after is not None:
            wait = math.ceil(outcome.retry_after)
            status, headers = 429, {"Retry-After": str(wait)}
            error = f"{outcome.public} Try again in {wait} s."
        answer = render(request, "login.html", status, name=name, next=target, error=error)
        answer.headers.update(headers)
        return answer
    token, _ = await open_session(request, outcome)
    done = web.HTTPSeeOther(target)
    set_session_cookie(done, request, token)
    raise done


@routes.post("/logout")
@needs(Permission.SELF)
@page
async def logout_form(request: web.Request) -> web.Response:
    """The session ends (the form repeats its CSRF token: no other site can log anyone out)."""
    token = request.cookies.get(sessions.COOKIE)
    ctx = request.app[CTX]
    found, _ = await in_session(
        request, lambda s: sessions.lookup(s, token or "", ctx.clock(), ctx.settings.security)
    )
    if found is not None:
        await in_session(request, lambda s: sessions.end(s, found.id, ctx.clock()), write=True)
    done = web.HTTPSeeOther("/login")
    done.del_cookie(sessions.COOKIE, path="/")
    raise done


@routes.get("/setup")
@needs(PUBLIC)
@page
async def setup_page(request: web.Request) -> web.Response:
    if not await _nobody_yet(request):
        raise web.HTTPSeeOther("/login")
    return render(request, "setup.html", values={}, errors={})


@routes.post("/setup")
@needs(PUBLIC)
@page
async def setup_form(request: web.Request) -> web.Response:
    form = await _form(request)
    values = {k: form.get(k, "") for k in ("token", "name", "display_name")}
    errors: dict[str, str] = {}
    for field, label in (("token", "the setup token"), ("name", "a user name"), ("password", "a password")):
        if not form.get(field, "").strip():
            errors[field] = f"Enter {label}."
    if not errors and form["password"] != form.get("password2", ""):
        errors["password2"] = "The two passwords differ: type the same password twice."
    if not errors:
        try:
            user = await first_admin(
                request, form["token"].strip(), form["name"].strip(), form["password"], values["display_name"]
            )
        except Invalid as exc:
            errors[exc.field if exc.field in ("name", "password") else "name"] = str(exc.message)
        except Conflict:
            raise web.HTTPSeeOther("/login") from None
        except web.HTTPForbidden as exc:
            errors["token"] = exc.text or "wrong or expired setup token"
        else:
            token, _ = await open_session(request, user)
            done = web.HTTPSeeOther("/dashboard")
            set_session_cookie(done, request, token)
            raise done
    return render(request, "setup.html", 422, values=values, errors=errors)
