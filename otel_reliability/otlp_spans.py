"""OTLP span encoding without a Python message object per field: the bytes upstream's encoder produces, cheaper.

Why: upstream's ``encode_spans`` builds a protobuf message object for every span, attribute, value, event and
status, then serializes them (~110 µs per server span of 12 attributes here, in the export thread, which holds
the interpreter lock the requests need). This writes the same protobuf wire format directly: every
(key, value) attribute is encoded once and its bytes reused (a route, a method, a status repeat from span to
span), a resource once per batch. Same message, field for field (tests/test_otlp_spans.py parses both).

``install()`` (called by our configurator once the SDK is set up) puts it in front of the OTLP/HTTP and gRPC
span exporters (the name ``encode_spans`` in their modules, the one thing they call): for HTTP it hands the
bytes over as they are; for gRPC it parses them into the request message (C code, a fraction of the cost of
building it). It checks itself first on a probe batch against upstream's encoder and stays out when they
disagree; any batch it cannot encode goes to upstream's.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.trace import SpanKind

from otel_reliability import gil

_logger = logging.getLogger("otel_reliability")

_CACHE_LIMIT = 8192
_pack_fixed64 = struct.Struct("<Q").pack
_pack_fixed32 = struct.Struct("<I").pack
_pack_double = struct.Struct("<d").pack
_HAS_IS_REMOTE = 0x100  # SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_IS_REMOTE = 0x200  # SpanFlags.SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 as protobuf writes it: two's complement, 10 bytes
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


_LEN = [b""] + [_tag(n, 2) for n in range(1, 17)]  # length-delimited fields 1..16


def _len_field(field: int, data: bytes) -> bytes:
    return _LEN[field] + _varint(len(data)) + data


def _string(field: int, text: str) -> bytes:
    return _len_field(field, text.encode("utf-8")) if text else b""


def _uint(field: int, value: int) -> bytes:
    return _tag(field, 0) + _varint(value) if value else b""


def _any_value(value: Any) -> bytes:
    """AnyValue, as upstream's ``_encode_value`` chooses its member (bool before int: a bool is an int)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _len_field(1, value.encode("utf-8"))
    if isinstance(value, int):
        if not -(1 << 63) <= value < 1 << 63:
            raise ValueError(f"{value} does not fit in int64")
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _len_field(7, value)
    if isinstance(value, Sequence):
        return _len_field(5, b"".join(_len_field(1, _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _len_field(6, b"".join(_len_field(1, _key_value(str(k), v)) for k, v in value.items()))
    raise ValueError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return _string(1, key) + _len_field(2, _any_value(value))


class Encoder:
    """Encodes batches of SDK ``ReadableSpan`` into an ``ExportTraceServiceRequest``'s bytes."""

    def __init__(self) -> None:
        # (field, key, type, value) -> that attribute's whole field (tag, length and KeyValue), reused as it is.
        self._attributes: dict[tuple[int, str, type, Any], bytes] = {}
        # Span names and statuses repeat from span to span: their fields, made once.
        self._names: dict[str, bytes] = {}
        self._statuses: dict[tuple[Any, str | None], bytes] = {}
        self._readers: dict[type, Callable[[Any], tuple[Any, ...]]] = {}

    def _attribute_fields(self, attributes: Mapping[str, Any] | None, field: int) -> bytes:
        if not attributes:
            return b""
        cache = self._attributes
        parts = []
        for key, value in attributes.items():
            kind = type(value)
            if kind is str or kind is int or kind is bool or kind is float:
                cache_key = (field, key, kind, value)
                found = cache.get(cache_key)
                if found is None:
                    found = _len_field(field, _key_value(key, value))
                    if len(cache) >= _CACHE_LIMIT:
                        cache.clear()
                    cache[cache_key] = found
            else:
                found = _len_field(field, _key_value(key, value))
            parts.append(found)
        return b"".join(parts)

    def _span(self, span: Any) -> bytes:
        kind = type(span)
        read = self._readers.get(kind, _UNKNOWN)
        if read is _UNKNOWN:  # a span class may read its fields in one call (LeanSpan): the same values
            read = self._readers[kind] = getattr(kind, "readable_fields", None) or _readable_fields
        (context, parent, name, span_kind, start, end, attributes, dropped, events, dropped_events, links,
         dropped_links, status) = read(span)  # fmt: skip
        state = context.trace_state
        named = self._names.get(name)
        if named is None:
            named = _string(5, name)
            if len(self._names) >= _CACHE_LIMIT:
                self._names.clear()
            self._names[name] = named
        out = b"\x0a\x10" + context.trace_id.to_bytes(16, "big") + b"\x12\x08" + context.span_id.to_bytes(8, "big")
        if state:
            out += _string(3, ",".join(f"{k}={v}" for k, v in state.items()))
        if parent:
            out += b"\x22\x08" + parent.span_id.to_bytes(8, "big")
        out += named + _KINDS[span_kind]
        if start:
            out += b"\x39" + _pack_fixed64(start)
        if end:
            out += b"\x41" + _pack_fixed64(end)
        out += self._attribute_fields(attributes, 9)
        if dropped:
            out += _uint(10, dropped)
        if events:
            for event in events:
                body = b""
                if event.timestamp:
                    body += b"\x09" + _pack_fixed64(event.timestamp)
                body += _string(2, event.name) + self._attribute_fields(event.attributes, 3)
                body += _uint(4, event.dropped_attributes)
                out += _len_field(11, body)
        out += _uint(12, dropped_events)
        if links:
            for link in links:
                body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
                body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
                body += self._attribute_fields(link.attributes, 4) + _uint(5, link.dropped_attributes)
                body += b"\x35" + _pack_fixed32(_flags(link.context))
                out += _len_field(13, body)
        out += _uint(14, dropped_links)
        if status is not None:
            key = (status.status_code, status.description)
            found = self._statuses.get(key)
            if found is None:
                found = _len_field(15, _string(2, status.description or "") + _uint(3, status.status_code.value))
                if len(self._statuses) < _CACHE_LIMIT:
                    self._statuses[key] = found
            out += found
        return out + (_REMOTE_PARENT if parent is not None and parent.is_remote else _LOCAL_PARENT)

    def encode(self, spans: Sequence[Any]) -> bytes:
        """Spans grouped by resource, then by instrumentation scope, in the order first seen (as upstream)."""
        resources: list[tuple[Any, dict[Any, list[bytes]]]] = []
        by_id: dict[int, dict[Any, list[bytes]]] = {}
        # A batch's spans share a few resource and scope objects: each is looked up by identity, and only an
        # object not seen yet in this batch is compared with the others (equal ones are one group, as upstream's).
        lists: dict[tuple[int, int], list[bytes]] = {}
        for span in spans:
            resource, scope = span.resource, span.instrumentation_scope
            found = lists.get((id(resource), id(scope)))
            if found is None:
                scopes = by_id.get(id(resource))
                if scopes is None:
                    for known, known_scopes in resources:  # equal resources are one (usually there is one)
                        if known == resource:
                            scopes = known_scopes
                            break
                    else:
                        scopes = {}
                        resources.append((resource, scopes))
                    by_id[id(resource)] = scopes
                found = lists[id(resource), id(scope)] = scopes.setdefault(scope or None, [])
            found.append(self._span(span))
            gil.pause_point(4)  # a span costs ~four data points; waiting requests run between spans
        out = []
        for resource, scopes in resources:
            body = [_len_field(1, self._attribute_fields(resource.attributes, 1))]
            for scope, encoded in scopes.items():
                scope_spans = [_len_field(1, self._scope(scope))]
                scope_spans.extend(_len_field(2, data) for data in encoded)
                if scope is not None and scope.schema_url:
                    scope_spans.append(_string(3, scope.schema_url))
                body.append(_len_field(2, b"".join(scope_spans)))
            if resource.schema_url:
                body.append(_string(3, resource.schema_url))
            out.append(_len_field(1, b"".join(body)))
        return b"".join(out)

    def _scope(self, scope: Any) -> bytes:
        if scope is None:
            return b""
        return (
            _string(1, scope.name)
            + _string(2, scope.version or "")
            + self._attribute_fields(getattr(scope, "attributes", None), 3)
        )


_KINDS = {kind: b"\x30" + _varint(kind.value + 1) for kind in SpanKind}  # the API's INTERNAL=0, OTLP's =1
_LOCAL_PARENT = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE)  # the span's flags (field 16), by its parent
_REMOTE_PARENT = b"\x85\x01" + _pack_fixed32(_HAS_IS_REMOTE | _IS_REMOTE)


def _readable_fields(span: Any) -> tuple[Any, ...]:
    """What the encoder reads of a ``ReadableSpan``, through its properties (``LeanSpan.readable_fields``: the same
    tuple in one call)."""
    return (span.get_span_context(), span.parent, span.name, span.kind, span.start_time, span.end_time,
            span.attributes, span.dropped_attributes, span.events, span.dropped_events, span.links,
            span.dropped_links, span.status)  # fmt: skip


_UNKNOWN: Any = object()


def _flags(parent: Any) -> int:
    return _HAS_IS_REMOTE | _IS_REMOTE if parent is not None and parent.is_remote else _HAS_IS_REMOTE


class _Encoded:
    """What the OTLP/HTTP exporter calls on ``encode_spans(...)``'s result: the bytes, already made."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def SerializePartialToString(self) -> bytes:
        return self._data

    SerializeToString = SerializePartialToString


def encoder_for(upstream: Callable[[Sequence[Any]], Any], grpc: bool) -> Callable[[Sequence[Any]], Any]:
    """``encode_spans`` for an exporter module: ours, falling back to ``upstream`` for a batch ours refuses."""
    encoder = Encoder()
    if grpc:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        parse = ExportTraceServiceRequest.FromString

    def encode_spans(spans: Sequence[Any]) -> Any:
        try:
            with gil.yielding_to_requests():  # the export thread lets a waiting request run every SLICE (see gil)
                data = encoder.encode(spans)
        except (ValueError, TypeError, AttributeError, UnicodeError, OverflowError):
            return upstream(spans)  # a value ours does not take (upstream skips it and logs): upstream decides
        return parse(data) if grpc else _Encoded(data)

    encode_spans.otel_reliability = True  # type: ignore[attr-defined]
    return encode_spans


_EXPORTER_MODULES = (
    ("opentelemetry.exporter.otlp.proto.http.trace_exporter", False),
    ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", True),
)


def install() -> list[str]:
    """Our encoder in each OTLP span exporter module imported so far (the SDK's configuration imports the ones it
    uses); returns the modules it went into."""
    import sys

    modules = [(sys.modules[name], grpc) for name, grpc in _EXPORTER_MODULES if name in sys.modules]
    if not modules:
        return []
    try:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as upstream
    except ImportError:
        return []
    if not self_check(upstream):
        _logger.info("otel-reliability: OTLP span encoding differs from upstream's here; upstream's is used")
        return []
    done = []
    for module, grpc in modules:
        name = module.__name__
        current = getattr(module, "encode_spans", None)
        if current is upstream:
            module.encode_spans = encoder_for(upstream, grpc)  # type: ignore[attr-defined]
            done.append(name)
        elif not getattr(current, "otel_reliability", False):
            _logger.info("otel-reliability: %s does not call upstream's span encoder; left alone", name)
    return done


def self_check(upstream: Callable[[Sequence[Any]], Any]) -> bool:
    """Whether ours and upstream's encode a probe batch (every kind of field) into the same message."""
    try:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        spans = probe_spans()
        ours = ExportTraceServiceRequest.FromString(Encoder().encode(spans))
        return bool(ours == upstream(spans))
    except Exception:
        _logger.debug("otel-reliability: span encoder self-check failed", exc_info=True)
        return False


def probe_spans() -> list[Any]:
    """Spans with every field the encoder writes: events, links, a remote parent, trace state, all value types."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace import (
        Link,
        NonRecordingSpan,
        SpanContext,
        SpanKind,
        Status,
        StatusCode,
        TraceFlags,
        TraceState,
        set_span_in_context,
    )

    exporter = InMemorySpanExporter()
    resource = Resource({"service.name": "probe", "n": 3}, "https://example.com/r")
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, shutdown_on_exit=False)  # whatever the env's
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("probe", "1.0", schema_url="https://opentelemetry.io/schemas/1.21.0")
    remote = SpanContext(0xABC, 0xDEF, True, TraceFlags(1), TraceState([("k", "v"), ("a", "b")]))
    values: dict[str, Any] = {"s": "é", "empty": "", "b": False, "i": -7, "big": 1 << 40, "f": 0.5, "z": 0,
                              "bytes": b"\x00", "list": ("x", "y"), "ints": (1, 2), "none": None}  # fmt: skip
    link = Link(SpanContext(0x1, 0x2, True, TraceFlags(1)), {"l": 1})
    span = tracer.start_span("probe", set_span_in_context(NonRecordingSpan(remote)), SpanKind.SERVER, values, [link])
    span.add_event("event", {"e": True})
    span.set_status(Status(StatusCode.ERROR, "why"))
    span.end()
    with provider.get_tracer("other").start_as_current_span("child", kind=SpanKind.CLIENT):
        pass
    return list(exporter.get_finished_spans())
