"""The dashboard's HTTP side: an aiohttp application inside `dockyard serve`, behind nginx.

Routes (every one is in `ROUTES`, and the attacker tests walk that table):

    GET  /login                      sign-in page (its script posts the link's fragment)
    POST /login                      redeem a one-time link → session cookie
    POST /logout                     end this session (CSRF)
    GET  /                           app list
    GET  /apps/{app}                 one app
    POST /apps/{app}/rollback        `releases:rollback` through `dispatch` (CSRF)
    GET  /server                     doctor, engine, nginx, disk, events (admin)
    GET  /api/apps                   the app list as JSON
    GET  /api/apps/{app}             one app as JSON
    GET  /api/apps/{app}/metrics     ?range=1h|6h|1d
    GET  /api/apps/{app}/builds/{build}/log   ?offset=N (a push as it happens)
    GET  /api/apps/{app}/config/{key}         one config value (session only, recorded)
    GET  /api/server                 the server page as JSON (admin)
    GET  /static/{file}              our script and style, and the vendored uPlot

Invariants:
- Who: a session cookie (HttpOnly, SameSite=Strict, `Secure` and `__Host-` on HTTPS) for
  every route, or `Authorization: Bearer` (a `dashboard:token`) for GET /api/* only; the
  identity is the key's, and access is `dockyard.access` through `dashboard.data`.
- The one write (rollback) needs a session, a CSRF token derived from it and a same-origin
  request; it runs the same `releases:rollback` handler through `dockyard.registry.dispatch`
  with the key's identity, so its access check, lock and event are the command's own.
- Every page is rendered by Jinja2 with autoescape and a strict CSP (`script-src 'self'`, no
  inline script or style), so no value an app or a user controls can become markup or code.
- Blocking work (SQLite, the engine, files) runs in `run_blocking`; the event loop only
  parses, renders and answers. No request, token, cookie or session id is logged
  (aiohttp's access log is off; nginx logs paths without query strings).
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import structlog
from aiohttp import web

from dashboard import data
from dashboard.auth import SECRET_RE, AuthStore, Session, csrf_ok
from dashboard.engine import VIEW_MAX_AGE, VIEW_MAX_STALE, EngineView, read_view
from dockyard.access import Access, Identity, check_access
from dockyard.bridge import run_blocking as _run_on_bridge
from dockyard.errors import AccessDenied, DockyardError, NotFound, UsageError
from dockyard.names import is_whole_number
from dockyard.registry import dispatch
from dockyard.services import Services

log = structlog.get_logger("dockyard.dashboard")

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
UPLOT_DIR = "vendor/uplot-1.6.32"
COOKIE_HTTP = "dockyard_session"
COOKIE_HTTPS = "__Host-dockyard_session"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".md": "text/plain",
                 "": "text/plain"}  # fmt: skip
MAX_FORM_BYTES = 4096

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Who:
    identity: Identity
    session: Session | None  # None when a bearer token was presented

    @property
    def csrf(self) -> str:
        return self.session.csrf if self.session else ""


class Dashboard:
    """The running dashboard's shared state: services, the auth store, the engine view."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.auth = AuthStore(services)
        self._view: EngineView | None = None
        self._view_task: asyncio.Future[EngineView] | None = None
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(PACKAGE_DIR / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["ago"] = ago
        self.templates.filters["size"] = size
        self.templates.globals["uplot"] = UPLOT_DIR
        self.static = {
            str(p.relative_to(STATIC_DIR)): p for p in STATIC_DIR.rglob("*") if p.is_file()
        }

    async def engine_view(self) -> EngineView:
        """The engine's listing, read at most once per VIEW_MAX_AGE for all requests. A
        request never waits for the engine while a listing younger than VIEW_MAX_STALE
        exists: that one is answered and a fresh one is read in the background."""
        view = self._view
        if view is not None and time.time() - view.at < VIEW_MAX_AGE:
            return view
        task = self._view_task
        if task is None:
            task = self._view_task = asyncio.ensure_future(run_blocking(read_view, self.services))
            task.add_done_callback(self._keep_view)
        if view is not None and time.time() - view.at < VIEW_MAX_STALE:
            return view
        return await asyncio.shield(task)

    def _keep_view(self, task: asyncio.Future[EngineView]) -> None:
        self._view_task = None
        if not task.cancelled() and task.exception() is None:
            self._view = task.result()


def ago(ts: float | None) -> str:
    if ts is None:
        return ""
    delta = max(0, int(time.time() - ts))
    for unit, seconds in (("d", 86400), ("h", 3600), ("min", 60)):
        if delta >= seconds:
            return f"{delta // seconds} {unit} ago"
    return f"{delta} s ago"


def size(n: int | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


# ---------------------------------------------------------------- request helpers


def is_https(request: web.Request) -> bool:
    """nginx, our only client (unix socket or loopback), says how it was reached."""
    return request.headers.get("X-Forwarded-Proto", "") == "https"


def cookie_name(request: web.Request) -> str:
    return COOKIE_HTTPS if is_https(request) else COOKIE_HTTP


def is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def same_origin(request: web.Request) -> bool:
    """A state-changing request must come from our own pages: its Origin (browsers send one
    with every POST) must be ours; with no Origin, Fetch Metadata must not say cross-site."""
    origin = request.headers.get("Origin")
    if origin is not None:
        scheme = "https" if is_https(request) else "http"
        return origin == f"{scheme}://{request.host}"
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


# The dashboard shares the bridge's worker threads with SSH commands and pushes: at most
# this many of them do its work at once, so no flood of page views can hold up a deploy.
MAX_BLOCKING = 8
_lanes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


async def run_blocking(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    loop = asyncio.get_running_loop()
    lane = _lanes.setdefault(loop, asyncio.Semaphore(MAX_BLOCKING))
    async with lane:
        return await _run_on_bridge(fn, *args, **kwargs)


def same_site_read(request: web.Request) -> bool:
    """Fetch Metadata: our own pages' reads are same-origin; a browser without it sends
    none (older browsers, tools), which is let through as any tool's request is."""
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


DASHBOARD_KEY = web.AppKey("dashboard", Dashboard)


def dash(request: web.Request) -> Dashboard:
    return request.app[DASHBOARD_KEY]


async def who(request: web.Request) -> Who | None:
    d = dash(request)
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        # Tokens are read-only and for the API; anywhere else they mean nothing.
        if scheme.lower() != "bearer" or not is_api(request) or request.method != "GET":
            return None
        identity = await run_blocking(d.auth.token, value.strip())
        return Who(identity, None) if identity else None
    name = cookie_name(request)
    secret = request.cookies.get(name)
    if not secret or not SECRET_RE.fullmatch(secret):
        return None
    if sum(h.count(f"{name}=") for h in request.headers.getall("Cookie", [])) > 1:
        return None  # a second cookie of that name was tossed in from a sibling host
    if is_api(request) and not same_site_read(request):
        return None  # another site's page embedding our API must not act as the viewer
    session = await run_blocking(d.auth.session, secret)
    return Who(session.identity, session) if session else None


async def require(request: web.Request) -> Who:
    found = await who(request)
    if found is None:
        raise Unauthorized()
    return found


class Unauthorized(Exception):
    pass


async def require_write(request: web.Request) -> tuple[Who, dict[str, str]]:
    """A session (never a token), a same-origin request and the session's CSRF token."""
    found = await require(request)
    if found.session is None:
        raise AccessDenied("API tokens are read-only")
    if not same_origin(request):
        raise AccessDenied("Cross-site request refused")
    form = await read_form(request)
    if not csrf_ok(found.session.secret, form.get("csrf", "")):
        raise AccessDenied("The form's CSRF token is missing or wrong; reload the page")
    return found, form


async def read_form(request: web.Request) -> dict[str, str]:
    if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
        raise UsageError("Form too large")
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    text = dash(request).templates.get_template(template).render(**values)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


# `<`, `>` and `&` as JSON escapes: the same value for any JSON parser, and no markup even
# for a client that puts an answer into a page unescaped.
_JSON_HTML_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def json_response(value: object, status: int = 200) -> web.Response:
    text = json.dumps(value, ensure_ascii=False).translate(_JSON_HTML_SAFE)
    return web.Response(text=text, status=status, content_type="application/json", charset="utf-8")


# ---------------------------------------------------------------- middleware

STATUS_OF = ((AccessDenied, 403), (NotFound, 404), (UsageError, 400))


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors become answers (JSON under /api/, a page elsewhere); every answer gets the
    security headers."""
    try:
        response = await handler(request)
    except Unauthorized:
        response = _refusal(request, 401, "Sign in first: run `ssh HOST dashboard:login` and "
                                          "open the link it prints.")  # fmt: skip
        if is_api(request):
            response.headers["WWW-Authenticate"] = 'Bearer realm="dockyard"'
    except DockyardError as exc:
        status = next((s for kind, s in STATUS_OF if isinstance(exc, kind)), 400)
        response = _refusal(request, status, exc.message)
    except web.HTTPException as exc:
        response = exc
    except Exception:
        log.exception("dashboard request failed", route=request.match_info.route.name)
        response = _refusal(request, 500, "Internal error; the server log has details")
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"  # "no-referrer" would make POSTs say Origin: null
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if not request.path.startswith("/static/"):
        headers["Cache-Control"] = "no-store"
    return response


def _refusal(request: web.Request, status: int, message: str) -> web.Response:
    if is_api(request):
        return json_response({"error": message}, status)
    return page(request, "message.html", status, title=_TITLES.get(status, "Error"),
                message=message, me=None)  # fmt: skip


_TITLES = {400: "Bad request", 401: "Sign in", 403: "Not allowed", 404: "Not found",
           500: "Error"}  # fmt: skip


# ---------------------------------------------------------------- handlers


async def login_page(request: web.Request) -> web.Response:
    return page(request, "login.html", me=None)


async def login_post(request: web.Request) -> web.Response:
    if not same_origin(request):
        raise AccessDenied("Cross-site sign-in refused")
    form = await read_form(request)
    d = dash(request)
    offered = form.get("token", "")
    session = (
        await run_blocking(d.auth.redeem_login, offered) if SECRET_RE.fullmatch(offered) else None
    )
    if session is None:
        return page(request, "message.html", 403, title="Link refused", me=None,
                    message="This sign-in link has expired or was already used. "
                    "Run `dashboard:login` again for a new one.")  # fmt: skip
    await run_blocking(d.services.state.record_event, session.identity.name, "dashboard:sign-in")
    response = web.Response(status=303, headers={"Location": "/"})
    response.set_cookie(
        cookie_name(request), session.secret, max_age=int(session.expires_at - time.time()),
        path="/", secure=is_https(request), httponly=True, samesite="Strict",
    )  # fmt: skip
    return response


async def logout(request: web.Request) -> web.Response:
    found, _ = await require_write(request)
    assert found.session is not None
    await run_blocking(dash(request).auth.end_session, found.session.secret)
    response = page(request, "message.html", title="Signed out", me=None,
                    message="You are signed out of this browser.")  # fmt: skip
    response.del_cookie(cookie_name(request), path="/")
    return response


async def apps_page(request: web.Request) -> web.Response:
    found = await require(request)
    d = dash(request)
    view = await d.engine_view()
    listing = await run_blocking(data.app_list, d.services, found.identity, view)
    return page(request, "apps.html", me=found, **listing)


async def apps_api(request: web.Request) -> web.Response:
    found = await require(request)
    d = dash(request)
    view = await d.engine_view()
    return json_response(await run_blocking(data.app_list, d.services, found.identity, view))


async def app_page(request: web.Request) -> web.Response:
    found = await require(request)
    d = dash(request)
    detail = await run_blocking(
        data.app_detail, d.services, found.identity, request.match_info["app"]
    )
    return page(request, "app.html", me=found, app=detail)


async def app_api(request: web.Request) -> web.Response:
    found = await require(request)
    d = dash(request)
    detail = await run_blocking(
        data.app_detail, d.services, found.identity, request.match_info["app"]
    )
    return json_response(detail)


async def metrics_api(request: web.Request) -> web.Response:
    found = await require(request)
    d = dash(request)
    range_name = request.query.get("range", "1h")
    result = await run_blocking(
        data.app_metrics, d.services, found.identity, request.match_info["app"], range_name
    )
    return json_response(result)


async def build_log_api(request: web.Request) -> web.Response:
    found = await require(request)
    d = dash(request)
    given = request.query.get("offset", "0")
    if not is_whole_number(given):
        raise UsageError("offset is a whole number of bytes")
    offset = int(given)
    result = await run_blocking(
        data.build_log, d.services, found.identity, request.match_info["app"],
        request.match_info["build"], offset,
    )  # fmt: skip
    return json_response(result)


async def config_api(request: web.Request) -> web.Response:
    found = await require(request)
    if found.session is None:
        raise AccessDenied("API tokens see config keys, never their values")
    d = dash(request)
    value = await run_blocking(
        data.config_value, d.services, found.identity, request.match_info["app"],
        request.match_info["key"],
    )  # fmt: skip
    return json_response({"key": request.match_info["key"], "value": value})


async def rollback(request: web.Request) -> web.Response:
    found, form = await require_write(request)
    d = dash(request)
    name, version = request.match_info["app"], form.get("version", "")
    ctx, out, err = data.context_with_output(d.services, found.identity)
    # The same command an SSH client runs: its access check, lock, messages and event.
    status = await run_blocking(dispatch, ctx, ["releases:rollback", name, version])
    output = (out.getvalue() + err.getvalue()).decode("utf-8", "replace")
    # The command's exit status as HTTP: refused 13 → 403, no such app or release 20 → 404.
    code = {0: 200, AccessDenied.exit_code: 403, NotFound.exit_code: 404}.get(status, 409)
    return page(request, "rollback.html", code, me=found, app_name=name, version=version,
                ok=status == 0, output=output)  # fmt: skip


async def server_page(request: web.Request) -> web.Response:
    found = await require(request)
    check_access(found.identity, Access.ADMIN, action="see the server page")
    d = dash(request)
    view = await d.engine_view()
    info = await run_blocking(data.server_info, d.services, found.identity, view)
    return page(request, "server.html", me=found, server=info)


async def server_api(request: web.Request) -> web.Response:
    found = await require(request)
    check_access(found.identity, Access.ADMIN, action="read the server's state")
    d = dash(request)
    view = await d.engine_view()
    return json_response(await run_blocking(data.server_info, d.services, found.identity, view))


async def static(request: web.Request) -> web.StreamResponse:
    path = dash(request).static.get(request.match_info["file"])
    if path is None:
        raise NotFound("No such file")
    response = web.FileResponse(path)
    response.content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


# (method, path, handler, needs): the attacker tests walk this table.
ROUTES: list[tuple[str, str, Handler, str]] = [
    ("GET", "/login", login_page, "nobody"),
    ("POST", "/login", login_post, "link"),
    ("POST", "/logout", logout, "session+csrf"),
    ("GET", "/", apps_page, "session"),
    ("GET", "/apps/{app}", app_page, "session+app"),
    ("POST", "/apps/{app}/rollback", rollback, "session+csrf+app"),
    ("GET", "/server", server_page, "session+admin"),
    ("GET", "/api/apps", apps_api, "reader"),
    ("GET", "/api/apps/{app}", app_api, "reader+app"),
    ("GET", "/api/apps/{app}/metrics", metrics_api, "reader+app"),
    ("GET", "/api/apps/{app}/builds/{build}/log", build_log_api, "reader+app"),
    ("GET", "/api/apps/{app}/config/{key}", config_api, "session+app"),
    ("GET", "/api/server", server_api, "reader+admin"),
    ("GET", "/static/{file:.+}", static, "nobody"),
]


def make_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=64 * 1024)
    app[DASHBOARD_KEY] = Dashboard(services)
    for method, path, handler, _ in ROUTES:
        app.router.add_route(method, path, handler, name=handler.__name__)
    return app
