"""One HTTP layer per FastAPI request, ours by default (``reliability_http``).

Usage: nothing; ``opentelemetry-instrument uvicorn app:app`` loads it. ``OTEL_RELIABILITY_HTTP_LAYER``
overrides the choice (see ``choose_layer``); ``otel_reliability.configure(app=app)`` applies it to an app
created before instrumentation.

Why: the contrib FastAPI/ASGI instrumentation matches every route twice, builds span attributes from the scope,
starts a span (non-recording while spans go nowhere), wraps ``send`` and records four instruments per request:
about half of a small route's throughput without spans, two thirds with them. The lean middleware
(``_lean_middleware.py``) records ``http.server.request.duration`` with the same unit, buckets and attributes
and, while a span may be sampled, the same SERVER span (``_server_span.py``: propagation in and out, exemplars,
errors). contrib is chosen for what only it does: the old HTTP conventions, captured headers, the per-message
``http send`` / ``http receive`` spans (``OTEL_RELIABILITY_HTTP_MESSAGE_SPANS``), FastAPI < 0.165.

One layer at a time: FastAPI >= 0.165 has its own layer (``FastAPI(telemetry=...)``), on as soon as global
providers exist. Under the lean and contrib layers it is switched off through that public argument (the
app's own ``telemetry=`` keys win), so its wrapper does not run at all; under ``native`` the contrib
instrumentor and the lean middleware stay out, and FastAPI's operation spans are on only while spans are
exported.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from collections.abc import Collection, Mapping
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_reliability import config
from otel_reliability.instrumentation import _server_span, fastapi_app, on_import
from otel_reliability.instrumentation._excluded_urls import _url, excluded_urls
from otel_reliability.instrumentation._lean_middleware import (
    DURATION,
    DURATION_BUCKETS,
    ASGIApp,
    LeanHTTPMiddleware,
    _request_record_class,
)
from otel_reliability.instrumentation.spans import exported as spans_exported

__all__ = ["DURATION", "DURATION_BUCKETS", "LeanHTTPMiddleware", "choose_layer", "current_layer", "instrument_app"]

_logger = logging.getLogger("otel_reliability")


_lean_apps: weakref.WeakSet[Any] = weakref.WeakSet()  # beside the apps, not in their __dict__


# --- which layer -------------------------------------------------------------------------------------------------


def _stable_http_only(env: Mapping[str, str]) -> bool:
    """The lean layer emits the stable conventions only; a user asking for the old ones (or both) gets contrib."""
    modes = {m.strip().lower() for m in env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}
    return "http" in modes and "http/dup" not in modes


def has_native_layer() -> bool:
    # Not the signature of FastAPI.__init__: other instrumentors (ours too) wrap it in (*args, **kwargs). Nor
    # find_spec("fastapi.telemetry"), which imports FastAPI.
    return on_import.has_submodule("fastapi", "telemetry")


def choose_layer(env: Mapping[str, str], settings: config.Settings) -> str:
    """``lean``, ``contrib``, ``native`` or ``off``: the one layer that wraps each FastAPI request."""
    return choose_layer_why(env, settings)[0]


def choose_layer_why(env: Mapping[str, str], settings: config.Settings) -> tuple[str, str]:
    """The layer (``choose_layer``) and why, in a few words for the start-up line.

    The user's ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` is honoured: without ``reliability_http`` (this
    entry point) nothing can install the lean layer, so the contrib one stays; without ``fastapi`` the user
    asked for no HTTP instrumentation, so we add none and leave FastAPI's own configuration alone (``off``).
    """
    requested = settings.http_layer
    disabled = {name.strip() for name in env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    if "reliability_http" in disabled:
        return "contrib", "reliability_http disabled"
    if "fastapi" in disabled and requested == "auto":
        return "off", "fastapi instrumentation disabled"
    lean_possible = _lean_possible()
    if requested == "lean" and not lean_possible:
        _logger.warning("otel-reliability: the lean HTTP layer needs FastAPI >= 0.165; using contrib instead")
        return "contrib", "lean asked for, FastAPI < 0.165"
    if requested == "native" and not has_native_layer():
        _logger.warning("otel-reliability: this FastAPI has no native telemetry layer; using contrib instead")
        return "contrib", "native asked for, FastAPI < 0.165"
    if requested != "auto":
        return requested, f"{config.HTTP_LAYER.name}={requested}"
    if settings.http_message_spans:
        return "contrib", f"auto: {config.HTTP_MESSAGE_SPANS.name}=true"
    if not _stable_http_only(env):
        return "contrib", "auto: old HTTP semantic conventions asked for"
    if not lean_possible:
        return "contrib", "auto: FastAPI < 0.165 or not installed"
    if _captures_headers(env):
        return "contrib", "auto: headers captured"
    if spans_exported(env) and not _server_span.available():
        return "contrib", "auto: contrib's attribute builder moved"  # its own layer makes the spans
    return "lean", "auto: " + ("spans exported" if spans_exported(env) else "spans not exported")


def _lean_possible() -> bool:
    """Whether FastAPI can tell the lean layer each request's route. Before the program imports FastAPI, a
    version with ``fastapi.telemetry`` is taken at its word (importing it to look would cost every program all
    of FastAPI); ``verify_lean`` checks the record itself when FastAPI is imported."""
    if "fastapi" in sys.modules:
        return _request_record_class() is not None
    return has_native_layer()


def verify_lean() -> None:
    """Once FastAPI is imported: if the lean layer was chosen but this FastAPI's record is not the shape it reads,
    the contrib instrumentation takes over (one WARNING), so requests keep their routes."""
    global _layer, _why
    if _layer != "lean" or _request_record_class() is not None:
        return
    _logger.warning("otel-reliability: this FastAPI's telemetry record is not the one the lean HTTP layer reads; "
                    "using contrib instead")  # fmt: skip
    _layer, _why = "contrib", "FastAPI's telemetry record unknown"
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    messages = config.settings().http_message_spans
    FastAPIInstrumentor().instrument(exclude_spans=None if messages else ["receive", "send"])


_CAPTURED_HEADERS = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
)


def _captures_headers(env: Mapping[str, str]) -> bool:
    """Headers as span attributes are contrib's feature, not the lean layer's: asking for them picks contrib."""
    return any(env.get(name, "").strip() for name in _CAPTURED_HEADERS)


_layer: str | None = None
_why = ""
_our_distro = False


def current_layer() -> str:
    """The layer chosen for this process (decided once, after the distro's defaults are applied).

    Under another distro (upstream's ``opentelemetry-distro`` chosen by ``OTEL_PYTHON_DISTRO``) the contrib
    instrumentor is loaded whatever we decide, so the layer is ``contrib``: a lean layer beside it would be a
    second one (and contrib, finding our middleware where it expects Starlette's, would skip the app)."""
    global _layer, _why
    if _layer is None:
        if _our_distro:
            _layer, _why = choose_layer_why(os.environ, config.settings())
        else:
            _layer, _why = "contrib", "another distro"
    return _layer


def layer_reason() -> str:
    """Why ``current_layer()`` is what it is (for the start-up line)."""
    current_layer()
    return _why


def our_distro() -> bool:
    """Whether our distro (or ``configure()``) set this process up."""
    return _our_distro


def our_distro_configured() -> None:
    """Called by our distro (and ``configure()``) once the environment defaults are in place: decide now."""
    global _our_distro, _layer
    _our_distro = True
    _layer = None


# --- applying the choice to FastAPI apps -------------------------------------------------------------------------


def native_defaults(layer: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``FastAPI(telemetry=...)`` keys we default (the app's own keys win)."""
    env = os.environ if env is None else env
    if layer == "off":
        return {}
    if layer != "native":
        return {"tracing": False, "metrics": False, "logs": False}
    excluded = excluded_urls()
    exported = spans_exported(env)
    defaults: dict[str, Any] = {"tracing": exported, "operation_spans": exported}
    if excluded is not None:
        defaults["exclude"] = lambda scope: excluded.url_disabled(_url(scope))
    return defaults


def install_lean(app: Any) -> None:
    """Put the lean middleware outside the app's middleware stack (outside ServerErrorMiddleware, so a route's
    exception is seen as the 500 it becomes). Idempotent."""
    if app in _lean_apps:
        return
    fastapi_app.add(_LEAN_STACK)
    _lean_apps.add(app)
    app.middleware_stack = None  # rebuilt on the next request


def lean_installed(app: Any) -> bool:
    """Whether ``app`` has the lean layer."""
    return app in _lean_apps


def _outside_stack(app: Any, stack: ASGIApp) -> ASGIApp:
    return LeanHTTPMiddleware(stack) if app in _lean_apps else stack


# Kept after uninstrument(): an app given the lean layer keeps it (its stack may not be built yet).
_LEAN_STACK = fastapi_app.Hook(fastapi_app.BUILD, after=_outside_stack)


def instrument_app(app: Any) -> None:
    """Apply the chosen layer to an app that already exists (``otel_reliability.configure(app)``)."""
    layer = current_layer()
    telemetry = getattr(app, "_telemetry", None)
    if isinstance(telemetry, dict) and layer in ("lean", "contrib"):
        telemetry.update(native_defaults(layer))  # created before us: FastAPI keeps its config in this dict
    if layer == "lean":
        install_lean(app)
    elif layer == "contrib" and not getattr(app, "_is_instrumented_by_opentelemetry", False):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        messages = config.settings().http_message_spans
        FastAPIInstrumentor.instrument_app(app, exclude_spans=None if messages else ["receive", "send"])


_instruments = ("fastapi >= 0.110",)
"""The framework whose apps get the HTTP layer (the contrib convention: instrument() skips it when absent)."""


class HttpLayerInstrumentor(BaseInstrumentor):
    """Entry point ``reliability_http``: FastAPI apps created from now on get the chosen layer, and only it.

    The contrib ``fastapi`` entry point is skipped by the distro unless the layer is ``contrib``.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        # FastAPI is patched when the program imports it: a program that never does pays nothing for it.
        self._pending = on_import.when_imported("fastapi", _patch)

    def _uninstrument(self, **kwargs: Any) -> None:
        on_import.cancel(getattr(self, "_pending", None))
        if "fastapi" in sys.modules:
            fastapi_app.remove(_LAYER)


def _patch(_fastapi: Any) -> None:
    verify_lean()
    fastapi_app.add(_LAYER)


def _telemetry_defaults(keywords: dict[str, Any]) -> None:
    """Before an app's ``__init__``: the ``telemetry=`` keys of the chosen layer (the app's own keys win)."""
    layer = current_layer()
    if layer != "off" and has_native_layer():
        keywords["telemetry"] = {**native_defaults(layer), **(keywords.get("telemetry") or {})}


def _after_init(app: Any, _: Any) -> None:
    if current_layer() == "lean":
        install_lean(app)


_LAYER = fastapi_app.Hook(fastapi_app.INIT, before=_telemetry_defaults, after=_after_init)
