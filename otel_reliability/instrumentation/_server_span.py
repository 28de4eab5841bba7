"""The SERVER span the lean HTTP layer makes for each request while spans are exported.

Why not the contrib middleware: for the one span a request needs, it matches every route a second time to
name it, builds its attributes from the scope on every request, wraps ``send`` and records four instruments
(~200 µs of CPU per request here, more than a small route itself). This span carries what contrib's carries,
attribute for attribute (tests/test_server_span.py compares them for the same requests):

- its name ``{method} {route}`` (the method alone when no route matched; ``HTTP`` for an unknown method), kind
  SERVER (INTERNAL when a span is already current, as contrib), the W3C trace context (any global propagator)
  extracted from the request headers and the span made current, so child spans (statements, breakers,
  transactions) and outgoing calls carry it;
- the stable HTTP attributes: ``url.scheme``, ``server.address``/``server.port`` (from the ASGI ``server``, as
  contrib: ``host:port`` unless the port is 80), ``network.protocol.version``, ``url.path``, ``url.query``,
  ``http.request.method`` (and ``_original``), ``user_agent.original`` (and its synthetic type),
  ``client.address``/``client.port``, ``http.route``, ``http.response.status_code``, ``error.type``;
- status ERROR for a 5xx and an ``exception`` event for an exception raised through the app.

What is built once instead of per request: the attributes that depend only on (scheme, server, protocol,
method, user agent) are computed by contrib's own ``collect_request_attributes`` the first time such a request
is seen and copied afterwards; the path, query and client are added per request.

Websockets get a SERVER span too (named by the route, status 200 once a message was sent, as contrib). A
streaming response's span ends when its body has been sent: the layer's call returns only then.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from random import getrandbits as _getrandbits
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_reliability import semconv, upstream
from otel_reliability.instrumentation import _context
from otel_reliability.instrumentation._lean_span import LeanSpan, LeanTracer
from otel_reliability.instrumentation._samplers import TRACE_ID_LIMIT as _TRACE_ID_LIMIT
from otel_reliability.instrumentation._unsampled import NO_STATE as _NO_STATE
from otel_reliability.instrumentation._unsampled import Unsampled

Scope = MutableMapping[str, Any]

_CACHE_LIMIT = 1024
_SCHEMA_URL = semconv.SCHEMA_URL


class _HeaderGetter:
    """The propagators' view of ASGI headers, as contrib's ``asgi_getter``: every value of a (lower-case) name."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        found = [value.decode("latin-1") for name, value in carrier.get("headers") or () if name.lower() == wanted]
        return found or None

    def keys(self, carrier: Scope) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier.get("headers") or ()]


GETTER = _HeaderGetter()


def available() -> bool:
    """Whether contrib's attribute builder can be called here (else the contrib layer makes the spans)."""
    return upstream.usable("contrib.http_semconv")


class ServerSpans:
    """Starts and ends the SERVER span of each request on ``tracer_provider`` (the global one by default)."""

    def __init__(self, tracer_provider: Any = None) -> None:
        from otel_reliability.version import __version__

        name = "otel_reliability.instrumentation.http_server"
        self._tracer = trace.get_tracer(name, __version__, tracer_provider, schema_url=_SCHEMA_URL)
        # The SDK's processors fed directly when the tracer is the SDK's; else that tracer's own spans.
        self._lean = LeanTracer.for_tracer(self._tracer)
        self._fields: tuple[Any, frozenset[bytes]] | None = None
        self._collect = upstream.contrib.request_attributes()
        self._static: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._names: dict[tuple[str, str | None], str] = {}
        self._context = _context.runtime()
        # The variable, the span key and the root's drop rule, when both are known (see start).
        rule = self._lean.root_drop() if self._lean is not None else None
        self._drop = (*self._context, *rule) if rule is not None and self._context is not None else None

    def _static_attributes(self, scope: Scope) -> dict[str, Any]:
        """Attributes of (scheme, server, protocol, method, user agent): contrib's, computed once per shape."""
        agent = None
        for name, value in scope.get("headers") or ():
            if name == b"user-agent":
                agent = value
                break
        server = scope.get("server")
        key = (scope.get("type"), scope.get("scheme"), tuple(server) if server else None, scope.get("http_version"),
               scope.get("method"), agent)  # fmt: skip
        found = self._static.get(key)
        if found is None:
            shape = {k: scope[k] for k in ("type", "scheme", "server", "http_version", "method") if k in scope}
            shape["headers"] = [(b"user-agent", agent)] if agent is not None else []
            found = self._collect(shape)
            if len(self._static) >= _CACHE_LIMIT:  # user agents are the client's choice: bounded anyway
                self._static.clear()
            self._static[key] = found
        return found

    def attributes(self, scope: Scope) -> dict[str, Any]:
        """The span's request attributes, as contrib's ``collect_request_attributes`` gives them."""
        attributes = dict(self._static_attributes(scope))
        path = scope.get("path")
        if path:
            attributes[semconv.ATTR_URL_PATH] = path
        query = scope.get("query_string")
        if query:
            attributes[semconv.ATTR_URL_QUERY] = query.decode("utf8") if isinstance(query, bytes) else query
        client = scope.get("client")
        if client is not None:
            if client[0] is not None:
                attributes[semconv.ATTR_CLIENT_ADDRESS] = client[0]
            if client[1] is not None:
                attributes[semconv.ATTR_CLIENT_PORT] = client[1]
        return attributes

    def start(self, scope: Scope) -> tuple[Any, Any]:
        """The request's span, started and made current; pass both to ``end``.

        The common case, a request without trace context outside any span, is the fewest calls: the context's
        variable read and set directly (``_context``), the root's trace id drawn and decided here
        (``LeanTracer.root_drop``); a dropped root (nine in ten at a 0.1 ratio) gets no name and no attributes.
        Everything else goes through the API's functions (another runtime context) or ``LeanTracer``."""
        drop = self._drop
        if drop is not None:
            var, key, bound, enabled, flags, ids = drop
            current = var.get()
            if key not in current and not self._carries_context(scope):
                trace_id = _getrandbits(128)
                if not trace_id or not enabled():  # an id of 0 (the SDK draws again), or tracing switched off
                    return self._started(scope, current, True, current, trace_id)
                span: Any
                if trace_id & _TRACE_ID_LIMIT >= bound:
                    span = Unsampled(trace_id, flags, _NO_STATE, ids)
                else:  # sampled: the span the lean tracer's start_root makes, without asking again
                    name = self.name(scope, None)
                    span = self._lean.sampled_root(name, current, trace_id, self.attributes(scope))  # type: ignore[union-attr]
                return span, var.set(Context({**current, key: span}))
        found = self._context
        if found is None:
            current = context.get_current()
            root = trace.get_current_span(current) is trace.INVALID_SPAN
        else:
            current = found[0].get()
            outer = current.get(found[1])
            root = outer is None or outer is trace.INVALID_SPAN or not isinstance(outer, trace.Span)
        # Inside a span already (a server-side layer of its own): a child, as contrib does.
        parent = current
        if root and self._carries_context(scope):
            parent = propagate.extract(scope, getter=GETTER)  # type: ignore[arg-type]  # duck-typed getter
        return self._started(scope, current, root, parent, None)

    def _started(self, scope: Scope, current: Any, root: bool, parent: Any, trace_id: int | None) -> tuple[Any, Any]:
        kind = SpanKind.SERVER if root else SpanKind.INTERNAL
        name = self.name(scope, None)
        lean = self._lean
        if lean is None:
            span = self._tracer.start_span(name, parent, kind, self.attributes(scope))
        elif root and parent is current:  # no trace context came in: a root
            span = lean.start_root(name, parent, kind, self.attributes, scope, trace_id)
        else:  # the attributes are built only for a span that records
            span = lean.start(name, parent, kind, self.attributes, scope)
        found = self._context
        if found is None:
            return span, context.attach(trace.set_span_in_context(span, parent))
        var, key = found
        return span, var.set(Context({**parent, key: span}))

    def _carries_context(self, scope: Scope) -> bool:
        """Whether the request has a header the global propagator reads (every request may, when it does not say
        which headers it reads)."""
        propagator = propagate.get_global_textmap()
        known = self._fields
        if known is None or known[0] is not propagator:
            known = self._fields = (propagator, _encoded_fields(propagator))
        fields = known[1]
        if not fields:
            return True
        for name, _ in scope.get("headers") or ():  # noqa: SIM110 - a loop: any() and its generator cost more
            if name in fields:
                return True
        return False

    def name(self, scope: Scope, route: str | None) -> str:
        """contrib's span name: ``{method} {route}``, the route alone for a websocket, else the method."""
        method = scope.get("method", "")
        key = (method, route)
        found = self._names.get(key)
        if found is None:
            sanitized = _sanitize_method(method.strip())
            if sanitized == "_OTHER":
                sanitized = "HTTP"
            found = f"{sanitized} {route}" if sanitized and route else (route or sanitized)
            if len(self._names) < _CACHE_LIMIT:
                self._names[key] = found
        return found

    def end(
        self,
        span: Any,
        token: Any,
        scope: Scope,
        route: str | None,
        status: int | None,
        failure: str | None,
        error: BaseException | None,
    ) -> None:
        """Name, route, status and error of the request, then the span ended and the context restored.

        ``failure`` is the layer's ``error.type`` (the status for a 5xx, or the exception's type when the response
        had started); ``error`` the exception that went through the layer, if any."""
        try:
            kind = type(span)
            if kind is not Unsampled and (kind is LeanSpan or span.is_recording()):
                if error is not None:
                    span.record_exception(error)
                    if status is None or status < 500:  # as contrib's exception handler: the type and message
                        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                if status is not None and status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                attributes: dict[str, str | int] = {}
                if route:
                    attributes[semconv.ATTR_HTTP_ROUTE] = route
                if status is not None:
                    attributes[semconv.ATTR_HTTP_RESPONSE_STATUS_CODE] = status
                if failure is not None:
                    attributes[semconv.ATTR_ERROR_TYPE] = failure
                name = self.name(scope, route) if route else None
                if kind is LeanSpan:  # name, attributes and end in one call (a no-op once ended)
                    span.end_named(name, attributes)
                else:
                    if name is not None:
                        span.update_name(name)
                    span.set_attributes(attributes)
                    span.end()
        finally:
            found = self._context
            if found is None:
                context.detach(token)
            else:
                try:
                    found[0].reset(token)
                except Exception:  # ended in another context than it started in: the API's retry and its log line
                    context.detach(token)


def _encoded_fields(propagator: Any) -> frozenset[bytes]:
    """The header names ``propagator`` reads, as ASGI spells them (empty when it does not say: always extract)."""
    try:
        return frozenset(name.lower().encode("latin-1") for name in propagator.fields)
    except Exception:
        return frozenset()


def _sanitize_method(method: str) -> str:
    from opentelemetry.util.http import sanitize_method

    return sanitize_method(method) or ""
