"""The health and admin routes on a FastAPI (Starlette) app.

Routes, under OTEL_RELIABILITY_HEALTH_PATH (default /api/health):
- ``GET {path}``: every view aggregated (unhealthy > degraded > healthy; 503 when unhealthy);
  ``Accept: application/health+json`` gives the draft-inadarei-api-health-check format.
- ``GET {path}/live``: the process answers; no check runs.
- ``GET {path}/ready``: 503 while a readiness view is unhealthy.
- ``GET {path}/<view>``: one view's details (protected views need the health token).
- ``GET {path}/ui``: the status page (health token; a browser logs in with HTTP Basic, any user name, the token
  as the password); ``Accept: application/json`` gives the sections it redraws (``health.page``); ``GET {path}``
  answers the page, too, to a client that prefers ``text/html``. ``{path}/ui/page.js`` is its script.
and under OTEL_RELIABILITY_ADMIN_PATH the admin actions, behind the admin token only.

Tokens are compared in constant time; with no token configured a protected route answers 401 and says which
variable to set. The admin routes never accept the health token, nor HTTP Basic: a browser that keeps Basic
credentials would send them with any cross-site form, and the admin actions change things.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import weakref
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Message, Receive, Scope, Send

from otel_reliability import config, host
from otel_reliability.health.model import (
    HEALTH_ENDPOINTS,
    AdminAction,
    CheckContext,
    HealthRegistry,
    HealthView,
    Status,
    ViewResult,
    run_views,
)

_logger = logging.getLogger(__name__)

HEALTH_JSON = "application/health+json"
_mounted: weakref.WeakSet[Any] = weakref.WeakSet()  # the apps mounted, beside them (not in their __dict__)


def _context() -> CheckContext:
    # In a prefork worker the views read the host's readings (every worker's), else this process's.
    return CheckContext(readings=host.health_readings(), settings=config.settings())


def _workers(ctx: CheckContext) -> int:
    """How many worker processes the answer covers: 1 for a single process."""
    count = getattr(ctx.readings, "workers", None)
    return count() if callable(count) else 1


def _authorized(request: Request, token: str | None, basic: bool = False) -> bool:
    """``Authorization: Bearer <token>``, or with ``basic`` also HTTP Basic with the token as the password."""
    if token is None:
        return False
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if basic and scheme.lower() == "basic" and presented:
        try:
            presented = base64.b64decode(presented, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    elif scheme.lower() != "bearer":
        return False
    return bool(presented) and hmac.compare_digest(presented.encode(), token.encode())


def _unauthorized(variable: str, configured: bool) -> JSONResponse:
    if configured:
        message = "missing or wrong bearer token"
    else:
        message = f"this endpoint is closed: set {variable} and send 'Authorization: Bearer <token>'"
    return JSONResponse(
        {"error": {"code": "unauthorized", "message": message}},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


_PAGE_HEADERS = {  # and Cache-Control: no-store, as on every answer of ours (_LiteralFirst.handle)
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_REALM = 'Basic realm="otel-reliability health", charset="UTF-8"'


def _login_required(configured: bool) -> Response:
    """The status page's 401: a Basic challenge, so that a browser asks for the token (as the password)."""
    if configured:
        text = "Log in with any user name and the health token (OTEL_RELIABILITY_HEALTH_TOKEN) as the password."
    else:
        text = f"The status page is closed: set {config.HEALTH_TOKEN.name} in the app's environment."
    body = f"<!doctype html><title>401</title><p>{text}</p>"
    headers = {**_PAGE_HEADERS, "WWW-Authenticate": _REALM, "Content-Security-Policy": "default-src 'none'"}
    return HTMLResponse(body, 401, headers=headers)


def _prefers_html(accept: str) -> bool:
    """A browser's ``text/html,...,*/*;q=0.8``: yes; ``*/*``, JSON or nothing (probes, curl, scripts): no."""
    weights: dict[str, float] = {}
    for part in accept.lower().split(","):
        kind, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        weights[kind.strip()] = max(quality, weights.get(kind.strip(), 0.0))
    html = weights.get("text/html", 0.0)
    return html > 0 and html > weights.get("application/json", 0.0)


def _stamp(ctx: CheckContext) -> dict[str, Any]:
    """``service``, ``observed_at`` and ``workers`` for a response: the collection its views just read (no new
    one); under a prefork server that is this worker's collection combined with the others' last ones."""
    try:
        snap = ctx.readings.latest or ctx.readings.snapshot()
        return {"service": snap.service, "observed_at": snap.observed_at_text, "workers": _workers(ctx)}
    except Exception:
        return {"service": {"name": "unknown_service", "instance_id": None}, "observed_at": None, "workers": None}


def _health_json(status: Status, results: dict[str, ViewResult], views: list[HealthView], stamp: dict[str, Any]):
    service = stamp["service"]
    now = stamp["observed_at"] or datetime.now(timezone.utc).isoformat()
    checks: dict[str, list[dict[str, Any]]] = {}
    for view in views:
        result = results[view.name]
        entry: dict[str, Any] = {
            "componentId": view.name,
            "componentType": view.component_type,
            "status": result.status.health_json,
            "time": now,
        }
        if result.observed is not None:
            entry["observedValue"], entry["observedUnit"] = result.observed
        if result.output:
            entry["output"] = result.output
        checks[f"{view.name}:status"] = [entry]
    return {
        "status": status.health_json,
        "serviceId": service.get("instance_id"),
        "description": service.get("name"),
        "observed_at": stamp["observed_at"],
        "workers": stamp["workers"],
        "checks": checks,
    }


class _LiteralFirst(BaseRoute):
    """A route that looks for its path's leading literal text in the request path before Starlette's regex match.

    Our routes sit in front of the app's own (``mount``), so every request of the app walks past them: the regex
    match costs ~0.85 µs per route here, a substring test ~0.1. Conservative: the request path includes any
    ``root_path``, so a route path that matches always contains the literal; a path that contains it still
    goes through the regex."""

    def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)  # type: ignore[call-arg]  # Route's and Mount's path
        self._literal = path.split("{", 1)[0]

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self._literal not in scope.get("path", ""):
            return Match.NONE, {}
        return super().matches(scope)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every answer of ours (health, admin, their 401/404) says ``Cache-Control: no-store``: it is a reading
        of now, and a proxy or browser that kept it would show a recovered service as down, or the reverse."""

        async def no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"cache-control"]
                message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        await super().handle(scope, receive, no_store)  # type: ignore[misc]  # Route's and Mount's handle


class _HealthRoute(_LiteralFirst, Route):
    pass


class _HealthMount(_LiteralFirst, Mount):
    pass


def build_routes(
    settings: config.Settings,
    registry: HealthRegistry = HEALTH_ENDPOINTS,
    context: Callable[[], CheckContext] = _context,
) -> list[BaseRoute]:
    """The Starlette routes for the configured paths and the views and actions of ``registry``."""
    base = settings.health_path

    async def aggregate(request: Request) -> Response:
        if _prefers_html(request.headers.get("accept", "")):
            return await page(request, aggregate_code=True)
        ctx = context()
        views = registry.views()
        results = await run_views(views, ctx)
        status = Status.worst([r.status for r in results.values()])
        code = 503 if status is Status.UNHEALTHY else 200
        stamp = _stamp(ctx)
        if HEALTH_JSON in request.headers.get("accept", ""):
            return JSONResponse(_health_json(status, results, views, stamp), code, media_type=HEALTH_JSON)
        show_protected = _authorized(request, settings.health_token, basic=True)
        checks: dict[str, Any] = {}
        for view in views:
            result = results[view.name]
            detail = dict(result.summary) if (show_protected or not view.protected) else {}
            checks[view.name] = {"status": result.status.value, **detail}
        return JSONResponse({"status": status.value, **stamp, "checks": checks}, code)

    async def live(request: Request) -> Response:
        return JSONResponse({"status": Status.HEALTHY.value, **_stamp(context())})

    async def ready(request: Request) -> Response:
        ctx = context()
        views = [v for v in registry.views() if v.readiness]
        results = await run_views(views, ctx)
        failing = sorted(n for n, r in results.items() if r.status is Status.UNHEALTHY)
        status = Status.UNHEALTHY if failing else Status.HEALTHY
        body = {"status": status.value, **_stamp(ctx), "failing": failing}
        return JSONResponse(body, 503 if failing else 200)

    async def detail(request: Request) -> Response:
        view = registry.view(request.path_params["view"])
        if view is None:
            return JSONResponse({"error": {"code": "not_found", "message": "no such health view"}}, 404)
        if view.protected and not _authorized(request, settings.health_token, basic=True):
            return _unauthorized(config.HEALTH_TOKEN.name, settings.health_token is not None)
        ctx = context()
        result = (await run_views([view], ctx))[view.name]
        body = {"status": result.status.value, **result.body, **_stamp(ctx)}
        return JSONResponse(body, 200)

    async def page(request: Request, aggregate_code: bool = False) -> Response:
        """The status page; served at ``{base}`` too (``aggregate_code``), where it keeps that route's 503."""
        if not _authorized(request, settings.health_token, basic=True):
            return _login_required(settings.health_token is not None)
        from otel_reliability.health.page import model, render

        ctx = context()
        parts = render.payload(await model.gather(ctx, registry, _stamp(ctx)))
        code = 503 if aggregate_code and parts["status"] == Status.UNHEALTHY.value else 200
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(parts, headers=_PAGE_HEADERS)
        body = render.document(
            parts["html"], parts["title"], parts["status"], parts["observed_at"],
            poll_url=f"{base}/ui", script_url=f"{base}/ui/page.js",
        )  # fmt: skip
        return HTMLResponse(body, code, headers={**_PAGE_HEADERS, "Content-Security-Policy": render.LIVE_CSP})

    async def script(request: Request) -> Response:
        from otel_reliability.health.page import render

        return Response(render.SCRIPT, media_type="text/javascript; charset=utf-8", headers=_PAGE_HEADERS)

    # Two prefix matches (a Route and a Mount) in front of the app's own routes, not one per endpoint: every
    # request of the app walks past them (each first tests its literal prefix: _LiteralFirst).
    health_routes = [
        Route("/live", live, methods=["GET"], name="otel_reliability_live"),
        Route("/ready", ready, methods=["GET"], name="otel_reliability_ready"),
        Route("/ui", page, methods=["GET"], name="otel_reliability_ui"),
        Route("/ui/page.js", script, methods=["GET"], name="otel_reliability_ui_script"),
        Route("/{view}", detail, methods=["GET"], name="otel_reliability_view"),
    ]
    admin_routes = [
        Route(
            f"/{action.path}",
            _admin_endpoint(action, settings, context),
            methods=[action.method.upper()],
            name=f"otel_reliability_admin_{action.method.lower()}_{action.path}",
        )
        for action in registry.actions()
    ]
    routes: list[BaseRoute] = [
        _HealthRoute(base, aggregate, methods=["GET"], name="otel_reliability_health"),
        _HealthMount(base, routes=health_routes, name="otel_reliability_health_views"),
    ]
    if admin_routes:
        routes.append(_HealthMount(settings.admin_path, routes=admin_routes, name="otel_reliability_admin"))
    return routes


def _admin_endpoint(
    action: AdminAction, settings: config.Settings, context: Callable[[], CheckContext]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        if not _authorized(request, settings.admin_token):
            return _unauthorized(config.ADMIN_TOKEN.name, settings.admin_token is not None)
        ctx = context()
        try:
            body = await anyio.to_thread.run_sync(action.handle, ctx, dict(request.query_params))
        except ValueError as exc:  # bad query parameters
            return JSONResponse({"error": {"code": "bad_request", "message": str(exc)}}, 400)
        except Exception as exc:  # a failing action is reported, never a 500 with a traceback
            _logger.warning("otel-reliability: admin action %s failed", action.path, exc_info=True)
            message = f"action failed: {type(exc).__name__}"
            return JSONResponse({"error": {"code": "action_failed", "message": message}}, 503)
        return JSONResponse({**body, **_stamp(ctx)})

    return endpoint


def mount(app: Any, settings: config.Settings | None = None, registry: HealthRegistry = HEALTH_ENDPOINTS) -> bool:
    """Add the health and admin routes to a FastAPI/Starlette app once. Returns False if already mounted."""
    if app in _mounted:
        return False
    from otel_reliability.health import builtin

    if registry is HEALTH_ENDPOINTS:
        builtin.register_all()
    settings = settings or config.settings()
    _mounted.add(app)
    # Inserted first so that an app's catch-all route cannot shadow them.
    app.router.routes[0:0] = build_routes(settings, registry)
    host.publish_at_shutdown(app)  # a prefork worker hands over its last counts when the app stops
    return True
