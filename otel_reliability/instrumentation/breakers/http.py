"""An unhandled breaker-open error in a FastAPI app: 503 + ``Retry-After`` + a JSON body, not a 500.

A refused call means "this dependency is down, try again in N seconds": a 500 says "we have a bug" and
pages somebody, and the client learns nothing about when to retry. The response::

    HTTP/1.1 503 Service Unavailable
    Retry-After: 27
    {"error": {"code": "dependency_unavailable", "message": "gemini is temporarily unavailable ...",
               "retryable": true, "dependency": "gemini"}}

``Retry-After`` is the whole seconds until the breaker lets a trial call through (0 when that moment has
passed). The message never contains the exception text (circuitbreaker's includes the last failure's
``repr``, which may hold a URL with credentials).

Installed by ``BreakersInstrumentor`` on ``FastAPI.build_middleware_stack`` (the moment the app's handlers
are final, at its first request), for pybreaker's ``CircuitBreakerError``, circuitbreaker's
``CircuitBreakerError`` and purgatory's ``OpenedState``. The app's own handlers win: nothing is added for
an error class for which the app has a handler (for that class or a base class of it other than
``Exception``; a catch-all ``Exception`` handler is the app's 500 page, not a decision about breakers).
Switched off with ``OTEL_RELIABILITY_BREAKER_HTTP_MAPPING=false``. The hook goes through the package's one
FastAPI patch (``instrumentation/fastapi_app.py``), beside the health mount and the HTTP layer: removing one
never undoes another.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

from otel_reliability import config
from otel_reliability.instrumentation import fastapi_app
from otel_reliability.instrumentation.breakers._registry import tagged

_GENERIC = (Exception, BaseException, object)


def error_classes() -> list[type[BaseException]]:
    """The breaker-open error classes of the breaker libraries the program has imported (one it never imported
    raises nothing; asking for the others would import them)."""
    classes: list[type[BaseException]] = []
    if "pybreaker" in sys.modules:
        classes.append(sys.modules["pybreaker"].CircuitBreakerError)
    if "circuitbreaker" in sys.modules:
        classes.append(sys.modules["circuitbreaker"].CircuitBreakerError)
    if "purgatory" in sys.modules:
        from purgatory.domain.model import OpenedState

        classes.append(OpenedState)
    return classes


def has_handler(handlers: Mapping[Any, Any], error_class: type) -> bool:
    return any(k in handlers for k in error_class.__mro__ if k not in _GENERIC)


def add_handlers(app: Any, classes: list[type[BaseException]] | None = None) -> list[type[BaseException]]:
    """Add the 503 handler to ``app`` for each breaker error class it has no handler for; returns those."""
    added = []
    for error_class in error_classes() if classes is None else classes:
        if not has_handler(app.exception_handlers, error_class):
            app.exception_handlers[error_class] = breaker_open_handler
            added.append(error_class)
    return added


def describe(error: BaseException) -> tuple[str, float | None]:
    """The breaker's name and the seconds until it lets a call through (None if unknown)."""
    tracked = tagged(error)
    if tracked is not None:
        retry = tracked.retry_after()
        if retry is None:
            reading = tracked.read()
            retry = None if reading is None else reading.reset_timeout
        return tracked.name, retry
    breaker = getattr(error, "_circuit_breaker", None)  # circuitbreaker's error carries its breaker
    if breaker is not None:
        return str(breaker.name or "unknown"), max(0.0, float(breaker.open_remaining))
    name = getattr(error, "circuit_name", None)  # purgatory's OpenedState
    return str(name or "unknown"), None


def breaker_open_response(error: BaseException) -> Any:
    from starlette.responses import JSONResponse

    name, retry = describe(error)
    headers = {}
    message = f"{name} is temporarily unavailable (circuit breaker open)"
    if retry is not None:
        seconds = max(0, math.ceil(retry))
        headers["Retry-After"] = str(seconds)
        message += f"; retry in {seconds} s"
    body = {"error": {"code": "dependency_unavailable", "message": message, "retryable": True, "dependency": name}}
    return JSONResponse(body, status_code=503, headers=headers)


async def breaker_open_handler(request: Any, error: BaseException) -> Any:
    return breaker_open_response(error)


# Before an app builds its middleware stack (its first request): the libraries imported by now get handlers.
_HANDLERS = fastapi_app.Hook(fastapi_app.BUILD, before=add_handlers)


def install(settings: config.Settings) -> None:
    """Add the handlers to every app's stack from now on (undone by ``uninstall``) unless the mapping is off."""
    if settings.breaker_http_mapping:
        fastapi_app.add(_HANDLERS)


def uninstall() -> None:
    fastapi_app.remove(_HANDLERS)
