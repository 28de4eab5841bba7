"""One HTTP layer per FastAPI request, and a lean one while spans go nowhere (``reliability_http``).

Usage: nothing; ``opentelemetry-instrument uvicorn app:app`` loads it. ``OTEL_RELIABILITY_HTTP_LAYER``
overrides the choice (see ``choose_layer``); ``otel_reliability.configure(app=app)`` applies it to an app
created before instrumentation.

Why: without an OTLP endpoint the distro exports no spans (``OTEL_TRACES_EXPORTER=none``, sampler
``always_off``), yet the contrib FastAPI/ASGI instrumentation still matches every route twice, builds span
attributes, starts a non-recording span, wraps ``send`` and records four instruments per request: about half
of a small route's throughput, for one histogram the error-rate view and the dashboards read. The lean
middleware records that histogram, ``http.server.request.duration`` with the same unit, buckets and
attributes, and nothing else:

- ``http.route``: the route template FastAPI's router selected (never a raw path; absent when no route
  matched, as today). FastAPI >= 0.165 reports its selection through a hook of its native telemetry layer;
  the middleware puts an inert request record (no span, no logger, no tracer) in the scope to receive it,
  so the router does the matching once, as it does anyway. Mounted apps get the full template
  (``/sub/things/{thing_id}``) and count once, at the outermost app;
- ``http.request.method`` (unknown methods as ``_OTHER``), ``url.scheme``, ``network.protocol.version``;
- ``http.response.status_code`` from ``http.response.start``; ``error.type`` the status for 5xx (an
  exception in a route is a 500 sent by Starlette's ServerErrorMiddleware, inside this layer), or the
  exception's type when a route fails after its response started (a broken stream), so every request that
  raised counts as an error;
- the excluded URLs of ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS`` / ``OTEL_PYTHON_EXCLUDED_URLS`` (the health,
  admin and metrics paths the distro sets), matched on the same URL the contrib middleware matches.

Attribute dicts are cached per (method, scheme, protocol, route, status, error type): all bounded (route
templates, not paths), and capped anyway. While no span can be sampled (the distro's default here), each
series queues its durations and hands them to the SDK when a reader collects (``BufferedHistogram``: the same
histogram as a ``record()`` per request, for ~0.1 µs instead of ~10). Websockets and lifespan pass through
untouched.

In a prefork worker each request is also added to the worker's tally (``otel_reliability.tally``: the same
histogram in a shared file mapping, two float additions), before the SDK records it, so a worker killed with
SIGKILL loses none of the requests it completed. In a single process there is no tally: a ``None`` test.

One layer at a time: FastAPI >= 0.165 has its own layer (``FastAPI(telemetry=...)``), on as soon as global
providers exist. Under the lean and contrib layers it is switched off through that public argument (the
app's own ``telemetry=`` keys win), so its wrapper does not run at all; under ``native`` the contrib
instrumentor and the lean middleware stay out, and FastAPI's operation spans are on only while spans are
exported.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from time import perf_counter
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.util.http import ExcludeList, parse_excluded_urls, sanitize_method

from otel_reliability import config, semconv, tally
from otel_reliability.instrumentation._published import BufferedHistogram, HistogramSeries, drops_every_span

_logger = logging.getLogger("otel_reliability")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DURATION = semconv.METRIC_HTTP_SERVER_REQUEST_DURATION
DURATION_BUCKETS = semconv.HTTP_SERVER_DURATION_BUCKETS
_SCOPE_KEY = "otel_reliability.http"
_FASTAPI_KEY = "fastapi.telemetry"
_CACHE_LIMIT = 4096
_ORIGINAL_INIT = "_otel_reliability_http_original_init"
_LEAN_MARK = "_otel_reliability_lean_http"


# --- which layer -------------------------------------------------------------------------------------------------


def spans_exported(env: Mapping[str, str]) -> bool:
    """Whether any span can leave the process: an exporter other than ``none`` and a sampler that samples."""
    raw = env.get("OTEL_TRACES_EXPORTER", "").strip() or "otlp"  # the SDK's own default
    exporters = [name.strip() for name in raw.split(",") if name.strip() and name.strip() != "none"]
    sampler = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    return bool(exporters) and sampler != "always_off" and env.get("OTEL_SDK_DISABLED", "").lower() != "true"


def _stable_http_only(env: Mapping[str, str]) -> bool:
    """The lean layer emits the stable conventions only; a user asking for the old ones (or both) gets contrib."""
    modes = {m.strip().lower() for m in env.get("OTEL_SEMCONV_STABILITY_OPT_IN", "").split(",")}
    return "http" in modes and "http/dup" not in modes


def _request_record_class() -> Any:
    """FastAPI's per-request telemetry record, which its router fills with the selected route template."""
    if importlib.util.find_spec("fastapi") is None:
        return None
    try:
        from fastapi.telemetry import _api
    except ImportError:  # FastAPI < 0.165: no route hook
        return None
    record = getattr(_api, "_RequestTelemetry", None)
    if record is None or not hasattr(_api, "_route_selected"):
        return None
    try:
        fields = inspect.signature(record).parameters
    except (TypeError, ValueError):
        return None
    return record if {"span", "span_method", "data", "route"} <= set(fields) else None


def has_native_layer() -> bool:
    if importlib.util.find_spec("fastapi") is None:
        return False
    # Not the signature of FastAPI.__init__: other instrumentors (ours too) wrap it in (*args, **kwargs).
    return importlib.util.find_spec("fastapi.telemetry") is not None


def choose_layer(env: Mapping[str, str], settings: config.Settings) -> str:
    """``lean``, ``contrib``, ``native`` or ``off``: the one layer that wraps each FastAPI request.

    The user's ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` is honoured: without ``reliability_http`` (this
    entry point) nothing can install the lean layer, so the contrib one stays; without ``fastapi`` the user
    asked for no HTTP instrumentation, so we add none and leave FastAPI's own configuration alone (``off``).
    """
    requested = settings.http_layer
    disabled = {name.strip() for name in env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    if "reliability_http" in disabled:
        return "contrib"
    if "fastapi" in disabled and requested == "auto":
        return "off"
    lean_possible = _request_record_class() is not None
    if requested == "lean" and not lean_possible:
        _logger.warning("otel-reliability: the lean HTTP layer needs FastAPI >= 0.165; using contrib instead")
        return "contrib"
    if requested == "native" and not has_native_layer():
        _logger.warning("otel-reliability: this FastAPI has no native telemetry layer; using contrib instead")
        return "contrib"
    if requested != "auto":
        return requested
    if spans_exported(env) or not _stable_http_only(env) or not lean_possible:
        return "contrib"
    return "lean"


_layer: str | None = None
_our_distro = False


def current_layer() -> str:
    """The layer chosen for this process (decided once, after the distro's defaults are applied).

    Under another distro (upstream's ``opentelemetry-distro`` chosen by ``OTEL_PYTHON_DISTRO``) the contrib
    instrumentor is loaded whatever we decide, so the layer is ``contrib``: a lean layer beside it would be a
    second one (and contrib, finding our middleware where it expects Starlette's, would skip the app)."""
    global _layer
    if _layer is None:
        _layer = choose_layer(os.environ, config.settings()) if _our_distro else "contrib"
    return _layer


def our_distro_configured() -> None:
    """Called by our distro (and ``configure()``) once the environment defaults are in place: decide now."""
    global _our_distro, _layer
    _our_distro = True
    _layer = None


# --- the lean middleware -----------------------------------------------------------------------------------------


def _url(scope: Scope) -> str:
    """The URL the contrib middleware matches excluded-URL regexes against: scheme://host + path."""
    host = None
    for name, value in scope.get("headers") or ():
        if name == b"host":
            host = value.decode("latin-1")
            break
    if host is None:
        address, port = scope.get("server") or ("0.0.0.0", 80)
        host = address if str(port) == "80" else f"{address}:{port}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}"


_METACHARACTERS = frozenset(".^$*+?{}[]()")


def required_literal(pattern: str) -> str:
    """Text that every match of ``pattern`` contains: its leading literal (``""`` when unsure).

    Conservative: an alternation outside any group, a leading metacharacter or an escape class gives ``""``; a
    literal followed by a quantifier that may repeat it zero times ends the prefix before it.
    """
    if _top_level_alternation(pattern):
        return ""
    literal: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1].isalnum():
                break  # \d, \b, \1 ...: a class or an assertion, not a character
            char, i = pattern[i + 1], i + 2
        elif char in _METACHARACTERS:
            break
        else:
            i += 1
        if i < len(pattern) and pattern[i] in "*?{":
            break
        literal.append(char)
    return "".join(literal)


def _top_level_alternation(pattern: str) -> bool:
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":  # "[]...]": a leading ] is part of the class
                i += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth <= 0:
            return True
        i += 1
    return False


class _Excluded:
    """``OTEL_PYTHON_*_EXCLUDED_URLS`` as the contrib middleware applies them (a regex search in
    scheme://host/path), with a cheap pre-check: the regex only runs when the URL contains the literal
    text one of the patterns requires. Searching the combined regex costs ~5 µs per request here; the
    pre-check a few hundred ns, and for most requests it is all that runs."""

    def __init__(self, patterns: list[str], regexes: ExcludeList) -> None:
        literals = [required_literal(p) for p in patterns]
        self._literals = tuple(literals) if all(literals) else None
        self._regexes = regexes

    def url_disabled(self, url: str) -> bool:
        if self._literals is None:
            return self._regexes.url_disabled(url)
        for literal in self._literals:  # a plain loop: any() over a generator costs twice as much here
            if literal in url:
                return self._regexes.url_disabled(url)
        return False


def excluded_urls() -> _Excluded | None:
    """The excluded URLs of the FastAPI instrumentation (its own variable, else the generic one)."""
    # Read exactly as opentelemetry.util.http.get_excluded_urls("FASTAPI") reads them.
    raw = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", ""))
    if not raw:
        return None
    return _Excluded([p.strip() for p in raw.split(",")], parse_excluded_urls(raw))


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class LeanHTTPMiddleware:
    """Records ``http.server.request.duration`` for each HTTP request; nothing else on the request path."""

    def __init__(self, app: ASGIApp, *, meter_provider: Any = None, tracer_provider: Any = None) -> None:
        self.app = app
        self._excluded = excluded_urls()
        self._record_class = _request_record_class()
        self._methods: dict[str, str] = {}
        # Per series: where its durations go (its queue, or its attributes for a record() at once) and, in a
        # prefork worker, its crash-safe tally slot (see _attributes_for).
        self._attributes: dict[
            tuple[Any, ...], tuple[HistogramSeries | dict[str, Any], tally.Table | None, int | None]
        ] = {}
        self._broken = False
        from otel_reliability.version import __version__

        meter = metrics.get_meter(__name__, __version__, meter_provider, semconv.SCHEMA_URL)
        description = "Duration of HTTP server requests."
        self._duration = BufferedHistogram(
            meter,
            meter.create_histogram(
                DURATION,
                unit=semconv.UNIT_SECONDS,
                description=description,
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            DURATION_BUCKETS,
        )
        self._tally_meta = {
            "scope": [__name__, __version__, None],
            "unit": semconv.UNIT_SECONDS,
            "description": description,
        }
        # Queued per series and handed to the SDK at collection, unless a span may be sampled (an exemplar needs
        # the context of the request): the lean layer runs while spans go nowhere, unless forced.
        self._queued = drops_every_span(tracer_provider or trace.get_tracer_provider())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _SCOPE_KEY in scope:  # websockets, lifespan, an inner (mounted) app
            await self.app(scope, receive, send)
            return
        if self._excluded is not None and self._excluded.url_disabled(_url(scope)):
            await self.app(scope, receive, send)
            return
        scope[_SCOPE_KEY] = True
        record = None
        if self._record_class is not None:
            record = self._record_class(span=None, span_method="", data=None)
            scope[_FASTAPI_KEY] = record
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = perf_counter()
        failure: str | None = None
        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            # Before the response started, Starlette's ServerErrorMiddleware (inside us) has sent the 500;
            # after it started (a stream that broke), the status says nothing: the exception's type does.
            if status is not None and status < 500:
                failure = _error_type(exc)
            raise
        finally:
            elapsed = perf_counter() - started
            if record is not None:
                scope.pop(_FASTAPI_KEY, None)
            self._record(elapsed, scope, record.route if record is not None else None, status, failure)

    def _record(self, elapsed: float, scope: Scope, route: str | None, status: int | None, failure: str | None) -> None:
        if self._broken:
            return
        try:
            raw = scope.get("method", "")
            method = self._methods.get(raw)
            if method is None:
                method = sanitize_method(raw.strip()) or ""
                if len(self._methods) < 64:
                    self._methods[raw] = method
            if failure is None and status is not None and status >= 500:
                failure = str(status)
            key = (method, scope.get("scheme"), scope.get("http_version"), route, status, failure)
            series = self._attributes.get(key)
            if series is None:
                series = self._attributes_for(key)
            target, table, slot = series
            elapsed = max(elapsed, 0.0)
            if slot is not None:  # a prefork worker: counted in shared memory first, so a kill loses nothing
                table.add(slot, elapsed)  # type: ignore[union-attr]
            if isinstance(target, HistogramSeries):
                target.record(elapsed)
            else:
                self._duration.record(elapsed, target)
        except Exception:
            # A broken SDK must never break a request: say so once and stop recording.
            self._broken = True
            _logger.exception("otel-reliability: recording %s failed; HTTP request metrics are off", DURATION)

    def _attributes_for(
        self, key: tuple[Any, ...]
    ) -> tuple[HistogramSeries | dict[str, Any], tally.Table | None, int | None]:
        """A series' queue (or its attributes, while a span may be sampled) and its tally slot (a prefork worker's
        crash-safe copy of the histogram, in the host directory; None in a single process). Looked up once per
        series, not per request."""
        method, scheme, version, route, status, failure = key
        attributes: dict[str, Any] = {semconv.ATTR_HTTP_REQUEST_METHOD: method}
        if scheme:
            attributes["url.scheme"] = scheme
        if version:
            attributes["network.protocol.version"] = version
        if route:
            attributes[semconv.ATTR_HTTP_ROUTE] = route
        if status is not None:
            attributes[semconv.ATTR_HTTP_RESPONSE_STATUS_CODE] = status
        if failure is not None:
            attributes[semconv.ATTR_ERROR_TYPE] = failure
        table = tally.histogram(DURATION, DURATION_BUCKETS, self._tally_meta)
        slot = table.slot(attributes) if table is not None else None
        if len(self._attributes) >= _CACHE_LIMIT:  # bounded anyway; past the cap, straight to the SDK
            return (attributes, table, slot)
        series = (self._duration.series(key, attributes) if self._queued else attributes, table, slot)
        self._attributes[key] = series
        return series


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
    if getattr(app, _LEAN_MARK, False):
        return
    original_build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        return LeanHTTPMiddleware(original_build())

    app.build_middleware_stack = build_middleware_stack
    setattr(app, _LEAN_MARK, True)
    app.middleware_stack = None  # rebuilt on the next request


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

        FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])


_instruments = ("fastapi >= 0.110",)
"""The framework whose apps get the HTTP layer (the contrib convention: instrument() skips it when absent)."""


class HttpLayerInstrumentor(BaseInstrumentor):
    """Entry point ``reliability_http``: FastAPI apps created from now on get the chosen layer, and only it.

    The contrib ``fastapi`` entry point is skipped by the distro unless the layer is ``contrib``.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        if importlib.util.find_spec("fastapi") is None:
            return
        from fastapi import applications

        cls = applications.FastAPI
        if _ORIGINAL_INIT in cls.__dict__:
            return
        original = cls.__init__
        native = has_native_layer()

        def __init__(self: Any, *args: Any, **kw: Any) -> None:
            layer = current_layer()
            if native and layer != "off":
                kw["telemetry"] = {**native_defaults(layer), **(kw.get("telemetry") or {})}
            original(self, *args, **kw)
            if layer == "lean":
                install_lean(self)

        __init__._otel_reliability_http = True  # type: ignore[attr-defined]
        setattr(cls, _ORIGINAL_INIT, original)
        cls.__init__ = __init__  # type: ignore[method-assign]

    def _uninstrument(self, **kwargs: Any) -> None:
        if importlib.util.find_spec("fastapi") is None:
            return
        from fastapi import applications

        cls = applications.FastAPI
        original = cls.__dict__.get(_ORIGINAL_INIT)
        if original is not None:
            if getattr(cls.__init__, "_otel_reliability_http", False):
                cls.__init__ = original  # type: ignore[method-assign]
            delattr(cls, _ORIGINAL_INIT)
