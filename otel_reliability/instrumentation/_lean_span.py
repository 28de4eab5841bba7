"""Spans for the SDK's processors without the SDK span's per-span machinery: each request's SERVER span and each
statement's CLIENT span.

Why: the SDK's ``Tracer.start_span`` + ``Span.end`` cost ~35 µs per request span with 12 attributes here: each
attribute type-checked and copied into a ``BoundedAttributes`` under a lock, events and links in bounded lists,
a second, read-only copy of the span made at ``end()`` for the processors. Our attributes are strings and
numbers we built ourselves. ``LeanSpan`` is both the API span the request code sees (``set_attribute``,
``add_event``, ``record_exception``, ``set_status`` behave as the SDK's: values checked, limits applied) and
the ``ReadableSpan`` the processors get at ``end()``, with the same fields the SDK's would have (the trace flags
too: sampled, and random-trace-id as the SDK's id generator says). tests/test_server_span.py and
tests/test_lean_spans.py compare them with the SDK's, field for field.

What it takes from an SDK ``Tracer``: its public ``sampler``, ``id_generator``, ``resource`` and
``span_processor``, and (not public) its span limits, scope and ``_is_enabled``; any other tracer, or the SDK's
span self-metrics switched on, gets the SDK's own spans instead (``LeanTracer.for_tracer`` returns None).
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable, Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from otel_reliability import semconv, upstream
from otel_reliability.instrumentation import _samplers
from otel_reliability.instrumentation._unsampled import NO_STATE as _NO_STATE
from otel_reliability.instrumentation._unsampled import Unsampled

_UNSET = Status(StatusCode.UNSET)
_Attributes = Callable[[Any], dict[str, Any]]  # a span's attributes, built from the request's scope when needed


class LeanTracer:
    """Starts ``LeanSpan``s for one SDK ``Tracer`` (its provider's sampler, ids, resource, processors, limits)."""

    def __init__(self, tracer: Any) -> None:
        self._sampler = tracer.sampler
        self._ids = tracer.id_generator
        self._random_ids = bool(self._ids.is_trace_id_random())
        self._sdk_ids = type(self._ids) is RandomIdGenerator
        self._root_unsampled = _FLAGS[False, self._random_ids]
        self._root_sampled = _FLAGS[True, self._random_ids]
        self._resource = tracer.resource
        self._processor = tracer.span_processor
        self._limits = tracer._span_limits
        self._scope = tracer._instrumentation_scope
        self._enabled = tracer._is_enabled  # a tracer configurator may switch it off at any time
        self._sdk = tracer
        # The SDK's own samplers decide on the trace id and the parent alone, and give the attributes back as they
        # got them: for them the request's attributes are built only when the span records.
        self._blind = _samplers.attribute_blind(self._sampler)
        # ParentBased with its default delegates: a valid parent's sampled flag is the decision, its trace state
        # the child's (what the SDK's sampler would answer, without asking it).
        self._parent_decides = _samplers.parent_decides(self._sampler)
        # ... and its root sampler, when it is one of the SDK's three: the root's decision, from the trace id alone.
        self._root_bound = _samplers.root_bound(self._sampler) if self._parent_decides else None
        # Attributes as the SDK would keep them: our own values pass as they are unless a limit could cut them.
        self._plain_limit = tracer._span_limits.max_span_attributes if _unbounded_values(tracer._span_limits) else -1

    @classmethod
    def for_tracer(cls, tracer: Any) -> LeanTracer | None:
        """For an SDK ``Tracer`` (None for any other, or when the SDK's own span metrics are switched on: then its
        spans, which count themselves)."""
        needed = ("sampler", "id_generator", "resource", "span_processor", "_span_limits", "_instrumentation_scope",
                  "_is_enabled")  # fmt: skip
        if not upstream.usable("sdk.lean_span") or not all(hasattr(tracer, name) for name in needed):
            return None  # otel_reliability.upstream.tracing: the SDK's tracing internals are not as checked
        if not _readable_as_set():
            return None
        if type(getattr(tracer, "_tracer_metrics", None)).__name__ != "NoOpTracerMetrics":
            return None
        try:
            return cls(tracer)
        except Exception:  # an SDK whose parts do not look as expected: its own spans
            return None

    def start(self, name: str, parent: Any, kind: SpanKind, attributes: _Attributes, scope: Any) -> trace.Span:
        """As ``Tracer.start_span``: the sampler decides; unsampled, a non-recording span carrying the context.
        ``attributes(scope)`` is called only when the sampler looks at them or the span records (a new dict: the
        span keeps it)."""
        if not self._enabled():
            return self._sdk.start_span(name, parent, kind, attributes(scope))  # type: ignore[no-any-return]
        parent_context: SpanContext | None = trace.get_current_span(parent).get_span_context()
        if parent_context is None or not parent_context.is_valid:
            return self._root(name, parent, kind, attributes, scope)
        flags = parent_context.trace_flags
        decided = bool(flags & _SAMPLED) if self._parent_decides else None
        return self._decide(name, parent, parent_context, kind, attributes, scope, parent_context.trace_id,
                            bool(flags & _RANDOM), decided)  # fmt: skip

    def start_root(
        self, name: str, parent: Any, kind: SpanKind, attributes: _Attributes, scope: Any, trace_id: int | None = None
    ) -> trace.Span:
        """``start`` for a ``parent`` context its caller knows holds no span (a request without trace context);
        ``trace_id``, if given, drawn by the caller as ``root_drop`` says."""
        if not self._enabled():
            return self._sdk.start_span(name, parent, kind, attributes(scope))  # type: ignore[no-any-return]
        return self._root(name, parent, kind, attributes, scope, trace_id)

    def root_drop(self) -> tuple[int, Callable[[], bool], TraceFlags, Any] | None:
        """How a caller may drop a root itself, as ``start_root`` would: draw ``getrandbits(128)`` as the trace id
        (the SDK's ``RandomIdGenerator``); if it is not 0, ``trace_id & TRACE_ID_LIMIT >= bound`` and ``enabled()``,
        the span is ``Unsampled(trace_id, flags, _NO_STATE, ids)``; else pass the id to ``start_root``. Returned as
        (bound, enabled, flags, ids); None when the decision is not the root's ratio bound or the ids are not the
        SDK's."""
        if not self._sdk_ids or self._root_bound is None:
            return None
        return self._root_bound, self._enabled, self._root_unsampled, self._ids

    def _root(
        self, name: str, parent: Any, kind: SpanKind, attributes: _Attributes, scope: Any, trace_id: int | None = None
    ) -> trace.Span:
        if not trace_id:
            if self._sdk_ids:  # the SDK's RandomIdGenerator, its own arithmetic without its two calls
                trace_id = _random.getrandbits(128) or self._ids.generate_trace_id()
            else:
                trace_id = self._ids.generate_trace_id()
        bound = self._root_bound
        if bound is None:
            return self._decide(name, parent, None, kind, attributes, scope, trace_id, self._random_ids, None)
        if trace_id & _TRACE_ID_LIMIT >= bound:  # dropped, as the root sampler would answer
            return Unsampled(trace_id, self._root_unsampled, _NO_STATE, self._ids)
        return self._decide(name, parent, None, kind, attributes, scope, trace_id, self._random_ids, True)

    def _decide(
        self,
        name: str,
        parent: Any,
        parent_context: SpanContext | None,
        kind: SpanKind,
        attributes: _Attributes,
        scope: Any,
        trace_id: int,
        random: bool,
        decided: bool | None,
    ) -> trace.Span:
        if decided is None:
            given = None if self._blind else attributes(scope)
            result = self._sampler.should_sample(parent, trace_id, name, kind, given, None)
            sampled, recording, state = result.decision.is_sampled(), result.decision.is_recording(), result.trace_state
        else:
            given = None
            sampled = recording = decided
            state = _NO_STATE if parent_context is None else parent_context.trace_state
        if not recording:  # its span id is drawn only if someone reads its context (propagation, a child)
            return Unsampled(trace_id, _FLAGS[sampled, random], state, self._ids)
        recorded = attributes(scope) if given is None else dict(result.attributes)
        return self._recording(name, parent, parent_context, kind, recorded, trace_id, _FLAGS[sampled, random], state)

    def sampled_root(self, name: str, parent: Any, trace_id: int, recorded: dict[str, Any]) -> LeanSpan:
        """The SERVER span of a root that ``root_drop``'s rule samples, with ``recorded`` (a new dict) as its
        attributes: ``start_root``'s span without its decision."""
        return self._recording(name, parent, None, SpanKind.SERVER, recorded, trace_id, self._root_sampled, _NO_STATE)

    def _recording(
        self, name: str, parent: Any, parent_context: SpanContext | None, kind: SpanKind, recorded: Any,
        trace_id: int, flags: TraceFlags, state: TraceState,
    ) -> LeanSpan:  # fmt: skip
        context = SpanContext(trace_id, self._ids.generate_span_id(), False, flags, state)
        if len(recorded) > self._plain_limit:  # -1: a value limit is set; else more attributes than allowed
            limits = self._limits
            recorded = BoundedAttributes(limits.max_span_attributes, recorded, False, limits.max_attribute_length)
        span = LeanSpan(name, context, parent_context, self._resource, recorded, kind, self)
        self._processor.on_start(span, parent_context=parent)
        return span

    def start_span(
        self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL, attributes: Any = None
    ) -> trace.Span:
        """As ``Tracer.start_span``, for a span its caller never makes current (a statement's): where a parent's
        flag decides that it is not sampled, the invalid span, which no one else sees (no processor hears of a
        non-recording span, and no context carries it)."""
        if self._parent_decides:
            current = trace.get_current_span(context)
            if type(current) is Unsampled:
                return trace.INVALID_SPAN
            parent = current.get_span_context()
            if parent.is_valid and not parent.trace_flags & _SAMPLED:
                return trace.INVALID_SPAN
        return self.start(name, context, kind, dict, attributes or {})


_SAMPLED = TraceFlags.SAMPLED
_TRACE_ID_LIMIT = _samplers.TRACE_ID_LIMIT
_RANDOM = TraceFlags.RANDOM_TRACE_ID
_FLAGS = {  # (sampled, random trace id) -> the span's trace flags, as the SDK's tracer sets them
    (s, r): TraceFlags((TraceFlags.SAMPLED if s else TraceFlags.DEFAULT) | (TraceFlags.RANDOM_TRACE_ID if r else 0))
    for s in (False, True)
    for r in (False, True)
}


def _unbounded_values(limits: Any) -> bool:
    return limits.max_attribute_length is None


_layout_ok: bool | None = None


def _readable_as_set() -> bool:
    """Whether ``ReadableSpan``'s properties read the fields ``LeanSpan`` fills (checked once on a probe span)."""
    global _layout_ok
    if _layout_ok is None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import SpanLimits

            class _Probe:
                _scope = InstrumentationScope("probe")
                _limits = SpanLimits()

            resource = Resource({"probe": 1})
            context = SpanContext(1, 2, False, _FLAGS[True, False])
            span = LeanSpan("probe", context, None, resource, {"a": 1}, SpanKind.SERVER, _Probe)  # type: ignore[arg-type]
            span.add_event("e")
            span._end_time = 5
            _layout_ok = (
                span.name == "probe" and span.context is context and span.kind is SpanKind.SERVER
                and span.resource is resource and dict(span.attributes or {}) == {"a": 1} and span.end_time == 5
                and span.instrumentation_scope is _Probe._scope and span.parent is None
                and span.status.status_code is StatusCode.UNSET and [e.name for e in span.events] == ["e"]
                and span.dropped_attributes == 0 and span.dropped_events == 0 and span.to_json() != ""
            )  # fmt: skip
        except Exception:
            _layout_ok = False
    return _layout_ok


class LeanSpan(trace.Span, ReadableSpan):
    """One request's span: recording until ``end()``, then handed to the processors as it is."""

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        resource: Any,
        attributes: dict[str, Any],
        kind: SpanKind,
        tracer: LeanTracer,
    ) -> None:
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = None
        self._instrumentation_scope = tracer._scope
        self._parent = parent
        self._start_time: int | None = time_ns()
        self._end_time: int | None = None
        self._attributes: Any = attributes  # ours, valid by construction; checked from the first foreign value on
        self._events: Any = ()
        self._links: Any = ()
        self._resource = resource
        self._status = _UNSET
        self._tracer = tracer

    # --- the API span ---------------------------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]  # always set here (ReadableSpan allows None)

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_lean_attribute(self, key: str, value: str | float) -> None:
        """One of our own attributes (a string or a number we made): no check needed while no limit can cut it."""
        if self._end_time is None:
            attributes = self._attributes
            if type(attributes) is dict and len(attributes) < self._tracer._plain_limit:
                attributes[key] = value
            else:
                self._checked()[key] = value

    def end_named(self, name: str | None, attributes: dict[str, str | int]) -> None:
        """``update_name`` (unless None), ``set_lean_attribute`` for each of ``attributes`` and ``end``, in one call."""
        if self._end_time is not None:
            return
        if name is not None:
            self._name = name
        own = self._attributes
        if type(own) is dict and len(own) + len(attributes) <= self._tracer._plain_limit:
            own.update(attributes)
        else:
            checked = self._checked()
            for key, value in attributes.items():
                checked[key] = value
        self.end()

    def _checked(self) -> BoundedAttributes:
        attributes = self._attributes
        if type(attributes) is not BoundedAttributes:
            limits = self._tracer._limits
            attributes = BoundedAttributes(limits.max_span_attributes, attributes, False, limits.max_attribute_length)
            self._attributes = attributes
        return attributes

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_time is None:
            checked = self._checked()
            for key, value in attributes.items():
                checked[key] = value

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is None:
            self._checked()[key] = value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self._end_time is not None:
            return
        limits = self._tracer._limits
        if type(self._events) is not BoundedList:
            self._events = BoundedList(limits.max_events)
        checked = BoundedAttributes(limits.max_event_attributes, attributes, True, limits.max_attribute_length)
        self._events.append(Event(name, checked, timestamp))

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if self._end_time is not None or context is None or not context.is_valid:
            return
        limits = self._tracer._limits
        if type(self._links) is not BoundedList:
            self._links = BoundedList(limits.max_links)
        checked = BoundedAttributes(limits.max_link_attributes, attributes, True, limits.max_attribute_length)
        self._links.append(Link(context, checked))

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """As the SDK's: UNSET is ignored, and so is anything once the status is OK."""
        if self._end_time is not None or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self, exception: BaseException, attributes: Any = None, timestamp: int | None = None, escaped: bool = False
    ) -> None:
        """The SDK's ``exception`` event, the same attributes."""
        import traceback

        event: dict[str, Any] = {
            semconv.ATTR_EXCEPTION_TYPE: semconv.error_type(exception),
            semconv.ATTR_EXCEPTION_MESSAGE: str(exception),
            semconv.ATTR_EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            semconv.ATTR_EXCEPTION_ESCAPED: str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else time_ns()
        if type(self._attributes) is BoundedAttributes:
            self._attributes._immutable = True
        processor = self._tracer._processor
        ending = getattr(processor, "_on_ending", None)  # the SDK's hook for processors that act just before
        if ending is not None:
            ending(self)
        processor.on_end(self)

    # --- what the processors and exporters read (ReadableSpan's properties read the fields above) ---------

    @property
    def events(self) -> Sequence[Event]:
        return tuple(self._events)

    def readable_fields(self) -> tuple[Any, ...]:
        """The properties an OTLP encoder reads (``otlp_spans._readable_fields``), in one call."""
        attributes, events, links = self._attributes, self._events, self._links
        return (self._context, self._parent, self._name, self._kind, self._start_time, self._end_time,
                attributes, attributes.dropped if type(attributes) is BoundedAttributes else 0, tuple(events),
                events.dropped if type(events) is BoundedList else 0, tuple(links),
                links.dropped if type(links) is BoundedList else 0, self._status)  # fmt: skip

    @property
    def links(self) -> Sequence[Link]:
        return tuple(self._links)
