"""A SERVER span for the SDK's processors without the SDK span's per-span machinery.

Why: the SDK's ``Tracer.start_span`` + ``Span.end`` cost ~35 µs per request span with 12 attributes here: each
attribute type-checked and copied into a ``BoundedAttributes`` under a lock, events and links in bounded lists,
a second, read-only copy of the span made at ``end()`` for the processors. Our attributes are strings and
integers we built ourselves. ``LeanSpan`` is both the API span the request code sees (``set_attribute``,
``add_event``, ``record_exception``, ``set_status`` behave as the SDK's: values checked, limits applied) and
the ``ReadableSpan`` the processors get at ``end()``, with the same fields the SDK's would have.

What it takes from the SDK provider: its public ``sampler``, ``id_generator`` and ``resource``, and (not
public) its span processor and span limits; a provider without them gets the SDK's own spans instead
(``LeanTracer.for_provider`` returns None).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otel_reliability import semconv

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)


class LeanTracer:
    """Starts ``LeanSpan``s on one SDK TracerProvider."""

    def __init__(self, provider: Any, processor: Any, limits: Any, scope: InstrumentationScope) -> None:
        self._sampler = provider.sampler
        self._ids = provider.id_generator
        self._resource = provider.resource
        self._processor = processor
        self._limits = limits
        self._scope = scope
        # The SDK's own samplers decide on the trace id and the parent alone, and give the attributes back as they
        # got them: for them the request's attributes are built only when the span records.
        self._blind = _attribute_blind(self._sampler)

    @classmethod
    def for_provider(cls, provider: Any, scope: InstrumentationScope) -> LeanTracer | None:
        processor = getattr(provider, "_active_span_processor", None)
        limits = getattr(provider, "_span_limits", None)
        needed = ("sampler", "id_generator", "resource")
        if processor is None or limits is None or not all(hasattr(provider, name) for name in needed):
            return None
        if getattr(provider, "_disabled", False) or not _readable_as_set():
            return None
        return cls(provider, processor, limits, scope)

    def start_span(
        self, name: str, parent: Any, kind: SpanKind, attributes: Callable[[Any], dict[str, Any]], scope: Any
    ) -> trace.Span:
        """As ``Tracer.start_span``: the sampler decides; unsampled, a non-recording span carrying the context.
        ``attributes(scope)`` is called only when the sampler looks at them or the span records."""
        parent_context: SpanContext | None = trace.get_current_span(parent).get_span_context()
        if parent_context is None or not parent_context.is_valid:
            parent_context = None
            trace_id = self._ids.generate_trace_id()
        else:
            trace_id = parent_context.trace_id
        given = None if self._blind else attributes(scope)
        result = self._sampler.should_sample(parent, trace_id, name, kind, given, None)
        sampled = result.decision.is_sampled()
        context = SpanContext(
            trace_id, self._ids.generate_span_id(), False, _SAMPLED if sampled else _NOT_SAMPLED, result.trace_state
        )
        if not result.decision.is_recording():
            return trace.NonRecordingSpan(context)
        recorded = attributes(scope) if given is None else dict(result.attributes)
        span = LeanSpan(name, context, parent_context, self._resource, recorded, kind, self)
        self._processor.on_start(span, parent_context=parent)
        return span


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
            context = SpanContext(1, 2, False, _SAMPLED)
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


_BLIND_SAMPLERS = re.compile(
    r"(ParentBased|TraceIdRatioBased|AlwaysOnSampler|AlwaysOffSampler|root|remoteParent"
    r"Sampled|remoteParentNotSampled|localParentSampled|localParentNotSampled|[{}:,.0-9e-])+"
)


def _attribute_blind(sampler: Any) -> bool:
    """Whether ``sampler`` is made of the SDK's samplers only (its description says), which ignore attributes."""
    try:
        return _BLIND_SAMPLERS.fullmatch(sampler.get_description()) is not None
    except Exception:
        return False


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

    def set_lean_attribute(self, key: str, value: str | int) -> None:
        """One of our own attributes (a string or an int we made): no check needed."""
        if self._end_time is None:
            self._attributes[key] = value

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

    @property
    def links(self) -> Sequence[Link]:
        return tuple(self._links)
