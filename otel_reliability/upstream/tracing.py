"""The SDK tracing internals the lean tracer's spans rely on (see ``otel_reliability.upstream``): a
``ReadableSpan`` filled in place, fed to an SDK ``Tracer``'s own processors under its limits and scope."""

from __future__ import annotations

import contextlib
from typing import Any

from otel_reliability.upstream._registry import guard

TRACER = ("_span_limits", "_instrumentation_scope", "_is_enabled")
FIELDS = (
    "_name",
    "_context",
    "_kind",
    "_parent",
    "_start_time",
    "_end_time",
    "_attributes",
    "_events",
    "_links",
    "_resource",
    "_status",
    "_instrumentation_scope",
    "_instrumentation_info",
)


@guard(
    "sdk.lean_span",
    "opentelemetry.sdk.trace",
    (
        *(f"Tracer.{name}" for name in TRACER),
        "SpanProcessor._on_ending",
        "BoundedAttributes._immutable",
        *(f"ReadableSpan.{name}" for name in FIELDS),
    ),
    "a Tracer's span_processor (told on_start, _on_ending, on_end of each span, as the SDK's own span tells it), its "
    "span limits, scope and _is_enabled(); ReadableSpan's properties reading the fields a span is filled with",
    "the SDK's own tracer for the SERVER and statement spans (the same spans, ~100 µs more CPU a span)",
)
def _check_lean_span() -> bool:
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    told: list[tuple[str, str]] = []

    class Told(SpanProcessor):  # type: ignore[misc]
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            told.append(("on_start", span.name))

        def _on_ending(self, span: Any) -> None:
            told.append(("_on_ending", span.name))

        def on_end(self, span: Any) -> None:
            told.append(("on_end", span.name))

    # Sampled whatever OTEL_TRACES_SAMPLER says (the distro turns it off where no span is exported).
    provider = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    provider.add_span_processor(Told())
    tracer: Any = provider.get_tracer("otel_reliability.upstream.check")  # the SDK Tracer
    tracer.start_span("sdk").end()
    processor = tracer.span_processor
    limits, enabled = tracer._span_limits, tracer._is_enabled()
    named = tracer._instrumentation_scope.name == "otel_reliability.upstream.check"
    span = ReadableSpan.__new__(ReadableSpan)  # filled in place, as LeanSpan is
    resource, scope = Resource({"probe": 1}), InstrumentationScope("probe")
    context = SpanContext(1, 2, False, TraceFlags(TraceFlags.SAMPLED))
    values = (
        "filled",
        context,
        SpanKind.SERVER,
        None,
        3,
        5,
        {"a": 1},
        (),
        (),
        resource,
        Status(StatusCode.OK),
        scope,
        None,
    )
    for name, value in zip(FIELDS, values, strict=True):
        setattr(span, name, value)
    processor.on_start(span, parent_context=None)  # type: ignore[arg-type]  # as LeanSpan (a ReadableSpan) is
    getattr(processor, "_on_ending", lambda _span: None)(span)  # as LeanSpan.end calls it: where the SDK has it
    processor.on_end(span)
    frozen = BoundedAttributes(4, {"a": 1}, False)
    frozen._immutable = True
    with contextlib.suppress(TypeError):  # the SDK's own span freezes its attributes so: writes are refused
        frozen["b"] = 2
    hooks = [hook for hook, _ in told]
    # Every hook the SDK's span calls is one LeanSpan.end calls: _on_ending where the SDK has it, no other.
    others = [name for name in vars(SpanProcessor) if name.startswith("_on") and name != "_on_ending"]
    ending = hasattr(SpanProcessor, "_on_ending") == ("_on_ending" in hooks)
    return (
        not others
        and ending
        and isinstance(limits, SpanLimits)
        and enabled is True
        and named
        and hooks[: len(hooks) // 2] == hooks[len(hooks) // 2 :]
        and "on_start" in hooks
        and "on_end" in hooks
        and [name for _, name in told] == ["sdk"] * (len(hooks) // 2) + ["filled"] * (len(hooks) // 2)
        and dict(frozen) == {"a": 1}
        and (span.name, span.context, span.kind, span.parent) == ("filled", context, SpanKind.SERVER, None)
        and (span.start_time, span.end_time, dict(span.attributes or {})) == (3, 5, {"a": 1})
        and span.resource is resource
        and span.instrumentation_scope is scope
        and span.status.status_code is StatusCode.OK
        and span.to_json() != ""
    )
