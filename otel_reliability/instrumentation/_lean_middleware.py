"""The lean HTTP layer: ``http.server.request.duration`` for each FastAPI request and, while spans may be sampled,
its SERVER span (``_server_span.py``), nothing else on the request path. ``http_server.py`` decides when it runs.

The histogram has contrib's name, unit, buckets and attributes:

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
templates, not paths), and capped anyway. Each series queues its durations and hands them to the SDK when a
reader collects (``BufferedHistogram``: the same histogram as a ``record()`` per request, for ~0.1 µs instead of
~10); a sampled request's duration is queued with its span's context, for the exemplars (the trace-based
filter, the SDK's default; with the always_on filter each value is recorded at once in the request's context).
Lifespan passes through untouched, and websockets too unless spans may be sampled (then: one span per
connection).

In a prefork worker each request is also added to the worker's tally (``otel_reliability.crash_safe``: the same
histogram in a shared file mapping, two float additions), before the SDK records it, so a worker killed with
SIGKILL loses none of the requests it completed. In a single process there is no tally: a ``None`` test.
"""

from __future__ import annotations

import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.util.http import sanitize_method

from otel_reliability import crash_safe, semconv
from otel_reliability.instrumentation._excluded_urls import _url, excluded_urls
from otel_reliability.instrumentation._published import BufferedHistogram, HistogramSeries
from otel_reliability.instrumentation._server_span import ServerSpans
from otel_reliability.instrumentation._unsampled import Unsampled, sampled_context
from otel_reliability.instrumentation.spans import drops_every_span

_logger = logging.getLogger("otel_reliability")
SCOPE_NAME = (
    "otel_reliability.instrumentation.http_server"  # the scope of its metric and span (the module's name before)
)

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


def _request_record_class() -> Any:
    """FastAPI's per-request telemetry record, which its router fills with the selected route template (None
    while the program has not imported FastAPI: looking would import it)."""
    if "fastapi" not in sys.modules:
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
            tuple[Any, ...], tuple[HistogramSeries | dict[str, Any], crash_safe.Table | None, int | None]
        ] = {}
        self._broken = False
        from otel_reliability.version import __version__

        meter = metrics.get_meter(SCOPE_NAME, __version__, meter_provider, semconv.SCHEMA_URL)
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
            "scope": [SCOPE_NAME, __version__, None],
            "unit": semconv.UNIT_SECONDS,
            "description": description,
        }
        # While a span may be sampled, each request gets its SERVER span here (contrib's, made cheaper).
        untraced = drops_every_span(tracer_provider or trace.get_tracer_provider())
        self._spans = None if untraced else ServerSpans(tracer_provider)
        # Durations queued per series and handed to the SDK at collection, those of sampled spans with their span
        # (the exemplars of the trace-based filter, the SDK's default); with another filter, recorded at once in
        # the request's context.
        kept = _exemplar_filter(meter_provider or metrics.get_meter_provider())
        self._queued = untraced or kept in ("trace_based", "always_off")
        self._exemplars = not untraced and kept == "trace_based"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (kind != "http" and (kind != "websocket" or self._spans is None)) or _SCOPE_KEY in scope:
            await self.app(scope, receive, send)  # lifespan, an inner (mounted) app; websockets while untraced
            return
        if self._excluded is not None and self._excluded.url_disabled(_url(scope)):
            await self.app(scope, receive, send)
            return
        scope[_SCOPE_KEY] = True
        record = None
        if self._record_class is not None:
            record = self._record_class(span=None, span_method="", data=None)
            scope[_FASTAPI_KEY] = record
        spans = self._spans
        span = token = None
        if spans is not None:
            span, token = spans.start(scope)
        if kind == "websocket":
            await self._websocket(scope, receive, send, record, span, token)
            return
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = perf_counter()
        failure: str | None = None
        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            # Before the response started, Starlette's ServerErrorMiddleware (inside us) has sent the 500;
            # after it started (a stream that broke), the status says nothing: the exception's type does.
            error = exc
            if status is not None and status < 500:
                failure = semconv.error_type(exc)
            raise
        finally:
            elapsed = perf_counter() - started  # a streaming body has been sent by now: the span ends here
            route = None
            if record is not None:
                scope.pop(_FASTAPI_KEY, None)
                route = record.route
            if failure is None and status is not None and status >= 500:
                failure = str(status)
            self._record(elapsed, scope, route, status, failure, span)  # with the span: its exemplar
            if spans is not None:
                spans.end(span, token, scope, route, status, failure, error)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, record: Any, span: Any, token: Any) -> None:
        """A traced websocket: one span from the handshake to the close, status 200 once a message was sent (as
        contrib); no request duration (not an HTTP request)."""
        sent = False

        async def send_marked(message: Message) -> None:
            nonlocal sent
            if message["type"] == "websocket.send":
                sent = True
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_marked)
        except Exception as exc:
            error = exc
            raise
        finally:
            route = record.route if record is not None else None
            scope.pop(_FASTAPI_KEY, None)
            self._spans.end(span, token, scope, route, 200 if sent else None, None, error)  # type: ignore[union-attr]

    def _record(
        self, elapsed: float, scope: Scope, route: str | None, status: int | None, failure: str | None, span: Any
    ) -> None:
        if self._broken:
            return
        try:
            raw = scope.get("method", "")
            method = self._methods.get(raw)
            if method is None:
                method = sanitize_method(raw.strip()) or ""
                if len(self._methods) < 64:
                    self._methods[raw] = method
            key = (method, scope.get("scheme"), scope.get("http_version"), route, status, failure)
            series = self._attributes.get(key)
            if series is None:
                series = self._attributes_for(key)
            target, table, slot = series
            elapsed = max(elapsed, 0.0)
            if slot is not None:  # a prefork worker: counted in shared memory first, so a kill loses nothing
                table.add(slot, elapsed)  # type: ignore[union-attr]
            if isinstance(target, HistogramSeries):
                sampled = None
                if span is not None and self._exemplars and type(span) is not Unsampled:
                    sampled = sampled_context(span)
                if sampled is not None:
                    target.record_sampled(elapsed, sampled)
                else:
                    target.record(elapsed)
            else:
                self._duration.record(elapsed, target)
        except Exception:
            # A broken SDK must never break a request: say so once and stop recording.
            self._broken = True
            _logger.exception("otel-reliability: recording %s failed; HTTP request metrics are off", DURATION)

    def _attributes_for(
        self, key: tuple[Any, ...]
    ) -> tuple[HistogramSeries | dict[str, Any], crash_safe.Table | None, int | None]:
        """A series' queue (or its attributes, while a span may be sampled) and its tally slot (a prefork worker's
        crash-safe copy of the histogram, in the host directory; None in a single process). Looked up once per
        series, not per request."""
        method, scheme, version, route, status, failure = key
        attributes: dict[str, Any] = {semconv.ATTR_HTTP_REQUEST_METHOD: method}
        if scheme:
            attributes[semconv.ATTR_URL_SCHEME] = scheme
        if version:
            attributes[semconv.ATTR_NETWORK_PROTOCOL_VERSION] = version
        if route:
            attributes[semconv.ATTR_HTTP_ROUTE] = route
        if status is not None:
            attributes[semconv.ATTR_HTTP_RESPONSE_STATUS_CODE] = status
        if failure is not None:
            attributes[semconv.ATTR_ERROR_TYPE] = failure
        table = crash_safe.histogram(DURATION, DURATION_BUCKETS, self._tally_meta)
        slot = table.slot(attributes) if table is not None else None
        if len(self._attributes) >= _CACHE_LIMIT:  # bounded anyway; past the cap, straight to the SDK
            return (attributes, table, slot)
        series = (self._duration.series(key, attributes) if self._queued else attributes, table, slot)
        self._attributes[key] = series
        return series


def _exemplar_filter(meter_provider: Any) -> str:
    """``trace_based``, ``always_on`` or ``always_off``: which measurements the SDK offers as exemplars."""
    chosen = getattr(getattr(meter_provider, "_sdk_config", None), "exemplar_filter", None)
    names = {"TraceBasedExemplarFilter": "trace_based", "AlwaysOnExemplarFilter": "always_on",
             "AlwaysOffExemplarFilter": "always_off"}  # fmt: skip
    if chosen is not None:
        return names.get(type(chosen).__name__, "unknown")
    return os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER", "trace_based").strip().lower()  # the SDK's default
