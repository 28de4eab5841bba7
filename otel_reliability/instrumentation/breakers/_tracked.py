"""One breaker as the registry tracks it: a weak reference, its adapter, its counts, its spans.

``TrackedBreaker`` is what the library adapters report calls and transitions to (cheaply: plain integers,
published at collection); the helpers tag a refusal error with its breaker for the HTTP 503 mapping and
annotate the current span.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import threading
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from otel_reliability import changes, semconv
from otel_reliability.instrumentation import spans
from otel_reliability.instrumentation._published import count_value, counter
from otel_reliability.instrumentation.breakers._model import (
    ATTR_NAME,
    ATTR_PREVIOUS_STATE,
    ATTR_STATE,
    CLOSED,
    EVENT_REJECTED,
    EVENT_STATE_CHANGE,
    HALF_OPEN,
    OPEN,
    OUTCOMES,
    STATES,
    UNKNOWN,
    Reading,
)

_logger = logging.getLogger("otel_reliability.breakers")


class Adapter(Protocol):
    """How one kind of breaker is read. Implemented once per library and for hand-written breakers."""

    library: str
    # True when the library emits no transition events: transitions are derived from observed states.
    derive_transitions: bool
    # True when no call path of the breaker is seen (hand-registered breakers): states observed when it is read
    # are the only source of transitions. Libraries we wrap derive them on the call path instead, so their
    # counts never depend on how often someone collects.
    derive_on_read: bool

    def name_of(self, breaker: Any) -> str | None: ...

    def read(self, breaker: Any, tracked: TrackedBreaker) -> Reading: ...

    def retry_after(self, breaker: Any, tracked: TrackedBreaker) -> float | None: ...


class SelfNamed:
    """``name_of`` for libraries whose breakers carry their own ``name`` (pybreaker, circuitbreaker): that name,
    when it is set; else the registry names the breaker after where it was created."""

    def name_of(self, breaker: Any) -> str | None:
        name = breaker.name
        return str(name) if name else None


class TrackedBreaker:
    """One known breaker: how to reach and read it, and its call and transition counts."""

    __slots__ = (
        "__weakref__",
        "_lock",
        "_ref",
        "_unreadable_logged",
        "adapter",
        "calls",
        "counts_calls",
        "explicit_name",
        "extra",
        "fallback_name",
        "key",
        "last_state",
        "seq",
        "transitions",
    )

    def __init__(
        self,
        *,
        key: Hashable,
        ref: Callable[[], Any],
        adapter: Adapter,
        seq: int,
        explicit_name: str | None,
        fallback_name: str,
        counts_calls: bool,
        initial_state: str | None = CLOSED,
    ) -> None:
        self.key = key
        self._ref = ref
        self.adapter = adapter
        self.seq = seq
        self.explicit_name = explicit_name
        self.fallback_name = fallback_name
        self.counts_calls = counts_calls
        # Calls by outcome, in OUTCOMES order: lock-free counters (itertools.count, whose next() is atomic in
        # CPython), so the call path takes no lock (a lock round-trip cost more than a third of a pybreaker call).
        self.calls = (counter(), counter(), counter())
        self.transitions = dict.fromkeys(STATES, 0)
        self.last_state: str | None = initial_state
        self._lock = threading.Lock()
        self._unreadable_logged = False
        self.extra: dict[str, Any] = {}  # adapter-owned state (e.g. purgatory's event-derived values)

    # --- identity -------------------------------------------------------------------------------------------
    @property
    def breaker(self) -> Any:
        """The breaker object, or None once it has been garbage-collected."""
        return self._ref()

    @property
    def name(self) -> str:
        if self.explicit_name:
            return self.explicit_name
        breaker = self._ref()
        if breaker is not None:
            try:
                found = self.adapter.name_of(breaker)
            except Exception:
                found = None
            if found:
                return str(found)
        return self.fallback_name

    # --- what happened --------------------------------------------------------------------------------------
    def record_call(self, outcome: str) -> None:
        next(self.calls[OUTCOMES.index(outcome)])

    def record_success(self) -> None:
        next(self.calls[0])

    def record_failure(self) -> None:
        next(self.calls[1])

    def record_rejected(self, error: BaseException | None = None) -> None:
        """A call refused while open: counted, and an event plus error status on the current span."""
        next(self.calls[2])
        if error is not None:
            tag_error(error, self)
        span = trace.get_current_span()
        if span.is_recording():
            name = self.name
            error_type = semconv.error_type(error, qualified=False) if error is not None else "CircuitBreakerOpen"
            span.set_attributes({ATTR_NAME: name, ATTR_STATE: OPEN, semconv.ATTR_ERROR_TYPE: error_type})
            span.add_event(EVENT_REJECTED, {ATTR_NAME: name, semconv.ATTR_ERROR_TYPE: error_type})
            span.set_status(Status(StatusCode.ERROR, f"circuit breaker {name} is open"))

    def record_transition(self, new_state: str | None, previous: str | None = None) -> None:
        """The breaker entered ``new_state`` (canonical). Counted, and an event on the current span."""
        if new_state is None:
            return
        with self._lock:
            old = self.last_state if previous is None else previous
            self.last_state = new_state
            if old == new_state:
                return
            self.transitions[new_state] += 1
        changes.mark_changed()
        span = trace.get_current_span()
        if span.is_recording():
            attrs = {ATTR_NAME: self.name, ATTR_STATE: new_state}
            if old is not None:
                attrs[ATTR_PREVIOUS_STATE] = old
            span.add_event(EVENT_STATE_CHANGE, attrs)

    def observe(self, state: str | None) -> None:
        """For libraries without transition events: a state seen now that differs from the last is a transition.

        A breaker that went open -> (half_open) -> closed between two observations only ever passes through
        half_open, so the step is filled in: each recovery counts one half_open transition.
        """
        if state is None or not self.adapter.derive_transitions:
            return
        last = self.last_state
        if last is None:  # first sight: a baseline, not a transition
            self.last_state = state
            return
        if state == last:
            return
        if last == OPEN and state == CLOSED:
            self.record_transition(HALF_OPEN)
        self.record_transition(state)

    def counts(self) -> tuple[tuple[int, int, int], dict[str, int]]:
        with self._lock:
            transitions = dict(self.transitions)
        return (count_value(self.calls[0]), count_value(self.calls[1]), count_value(self.calls[2])), transitions

    # --- live state -----------------------------------------------------------------------------------------
    def read(self) -> Reading | None:
        """The live state; None if the breaker is gone; ``UNKNOWN`` if reading it raised."""
        breaker = self._ref()
        if breaker is None:
            return None
        try:
            reading = self.adapter.read(breaker, self)
        except Exception as exc:
            if not self._unreadable_logged:
                self._unreadable_logged = True
                _logger.warning(
                    "otel-reliability: the state of circuit breaker %r cannot be read (%s); it shows as unknown",
                    self.name,
                    type(exc).__name__,
                )
            return UNKNOWN
        if reading.state == OPEN and self._trial_allowed(breaker):
            reading = dataclasses.replace(reading, state=HALF_OPEN)
        if self.adapter.derive_on_read:
            self.observe(reading.state)
        return reading

    def _trial_allowed(self, breaker: Any) -> bool:
        """Open, but its reset timeout has passed: the next call is a trial, so it is half-open in all but name.

        pybreaker and purgatory enter half-open lazily, on the first call after the timeout; an idle service
        makes no call, and "open" would stay on the scrape (and ``CircuitBreakerOpen`` firing) long after the
        dependency recovered. circuitbreaker computes this itself; the same rule holds for it.
        """
        try:
            remaining = self.adapter.retry_after(breaker, self)
        except Exception:
            return False
        return remaining is not None and remaining <= 0

    def retry_after(self) -> float | None:
        breaker = self._ref()
        if breaker is None:
            return None
        try:
            return self.adapter.retry_after(breaker, self)
        except Exception:
            return None


def spans_possible() -> bool:
    """False when the global tracer provider can never record a span (``spans``): the call path then skips
    looking up the current span."""
    return not spans.global_provider_drops_every_span()


_TAG = "_otel_reliability_breaker"


class _Tag:
    """What an exception carries for the HTTP mapping: the breaker it tripped or was refused by. An exception
    cannot be weakly referenced, so the tag sits on it; pickled (an exception sent to another process: a
    ``ProcessPoolExecutor``, a task queue's result) it becomes an empty tag, never an error: the tracked record
    holds locks and means nothing in another process."""

    __slots__ = ("tracked",)

    def __init__(self, tracked: TrackedBreaker | None) -> None:
        self.tracked = tracked

    def __reduce__(self) -> tuple[type[_Tag], tuple[None]]:
        return (_Tag, (None,))

    def __repr__(self) -> str:
        return f"<otel-reliability breaker tag {self.tracked.name if self.tracked is not None else None!r}>"


def tag_error(error: BaseException, tracked: TrackedBreaker) -> None:
    """Remember on an exception which breaker raised (or tripped on) it, for the HTTP mapping."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, _TAG, _Tag(tracked))


def tagged(error: BaseException | None) -> TrackedBreaker | None:
    """The breaker an exception (or the exception it was raised while handling) is tagged with."""
    seen = 0
    while error is not None and seen < 3:
        found = getattr(error, _TAG, None)
        if isinstance(found, _Tag) and found.tracked is not None:
            return found.tracked
        error = error.__context__
        seen += 1
    return None


def annotate_span(name: str, state: str | None, span: trace.Span | None = None) -> None:
    """A call through a breaker: its name and state on the current span (nothing when not recording)."""
    span = trace.get_current_span() if span is None else span
    if span.is_recording():
        span.set_attributes({ATTR_NAME: name, ATTR_STATE: state or "unknown"})


_SKIP_MODULES = ("otel_reliability.", "pybreaker", "circuitbreaker", "purgatory", "wrapt", "functools", "contextlib")


def creation_site(depth: int = 2) -> str:
    """``module:line`` of the first frame outside the breaker libraries and us: a stable name for a breaker
    created without one (the same code creates the same name in every process and after every restart)."""
    frame = sys._getframe(depth)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(_SKIP_MODULES) and module not in ("pybreaker", "circuitbreaker", "purgatory"):
            return f"{module}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "unnamed"
