"""The non-recording span of a request the sampler dropped (``LeanTracer``, ``ServerSpans``), and the question
every request's exemplar asks of its span.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags, TraceState

NO_STATE = TraceState()  # a root span's (immutable; the SDK makes an empty one per span)


class Unsampled(trace.NonRecordingSpan):
    """The non-recording span of a request the sampler dropped: the SDK's ``NonRecordingSpan`` with a new span id,
    except that the id is drawn when its context is first read (an outgoing call's ``traceparent``, a child's
    sampler), not for every request whose context nobody reads."""

    def __init__(self, trace_id: int, flags: TraceFlags, state: TraceState, ids: Any) -> None:
        self._context = None  # type: ignore[assignment]  # NonRecordingSpan's one field, filled when first read
        self._lazy = (trace_id, flags, state, ids)

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            trace_id, flags, state, ids = self._lazy
            made = SpanContext(trace_id, ids.generate_span_id(), False, flags, state)
            context = self.__dict__.setdefault("_context_made", made)  # two threads reading at once: one id
            self._context = context
        return context

    def __repr__(self) -> str:
        return f"NonRecordingSpan({self.get_span_context()!r})"


def sampled_context(span: Any) -> SpanContext | None:
    """The span's context if it is sampled (an exemplar points at it), without drawing an ``Unsampled`` one's id."""
    if type(span) is Unsampled:
        return None
    context = span.get_span_context()
    return context if context is not None and context.trace_flags.sampled else None
