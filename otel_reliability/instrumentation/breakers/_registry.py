"""The breakers this process knows, held weakly, and what happened to each of them.

One ``TrackedBreaker`` per breaker: a weak reference to the breaker object (so the registry never keeps a
breaker alive: when the application drops it, it disappears from metrics and health), the adapter that
knows how to read its live state, and the counts of calls by outcome and of transitions by state entered.

The counts are plain integers under a small lock, exported by *observable* counters at collection time.
That makes a call through an instrumented breaker cost one lock round-trip instead of an SDK measurement,
and any reader added at any time (the Readings, a late exporter) sees the full counts.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from otel_reliability import changes, semconv

_logger = logging.getLogger("otel_reliability.breakers")

CLOSED, OPEN, HALF_OPEN = semconv.CIRCUIT_BREAKER_STATES
STATES: tuple[str, ...] = semconv.CIRCUIT_BREAKER_STATES
SUCCESS, FAILURE, REJECTED = semconv.CIRCUIT_BREAKER_OUTCOMES
OUTCOMES: tuple[str, ...] = semconv.CIRCUIT_BREAKER_OUTCOMES

# Attribute names (otel_reliability/semconv.py; Prometheus shows them with "_" for ".").
ATTR_NAME = semconv.ATTR_CIRCUIT_BREAKER_NAME
ATTR_STATE = semconv.ATTR_CIRCUIT_BREAKER_STATE
ATTR_OUTCOME = semconv.ATTR_CIRCUIT_BREAKER_OUTCOME
ATTR_PREVIOUS_STATE = semconv.ATTR_CIRCUIT_BREAKER_PREVIOUS_STATE
EVENT_STATE_CHANGE = "circuit_breaker.state_change"
EVENT_REJECTED = "circuit_breaker.rejected"

# The state names the libraries use, mapped onto ours.
_STATE_ALIASES = {
    "closed": CLOSED,
    "close": CLOSED,
    "open": OPEN,
    "opened": OPEN,
    "half_open": HALF_OPEN,
    "half-open": HALF_OPEN,
    "half_opened": HALF_OPEN,
    "half-opened": HALF_OPEN,
    "halfopen": HALF_OPEN,
    "half open": HALF_OPEN,
}


def canonical_state(raw: Any) -> str | None:
    """``closed``/``open``/``half_open`` for any library's spelling (str, bytes or Enum); None if unknown."""
    if isinstance(raw, Enum):
        raw = raw.value if isinstance(raw.value, str) else raw.name
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        return None
    return _STATE_ALIASES.get(raw.strip().lower())


@dataclass(frozen=True, slots=True)
class Reading:
    """A breaker's live state at one instant. ``state`` None means it could not be read ("unknown")."""

    state: str | None
    consecutive_failures: float | None = None
    failure_threshold: float | None = None
    reset_timeout: float | None = None


UNKNOWN = Reading(None)


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
        # Calls by outcome, in OUTCOMES order: itertools.count, whose next() is atomic in CPython, so the call path
        # takes no lock (a lock round-trip cost more than a third of a pybreaker call).
        self.calls = (itertools.count(), itertools.count(), itertools.count())
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
            error_type = type(error).__qualname__ if error is not None else "CircuitBreakerOpen"
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
        return (_value(self.calls[0]), _value(self.calls[1]), _value(self.calls[2])), transitions

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
        if self.adapter.derive_on_read:
            self.observe(reading.state)
        return reading

    def retry_after(self) -> float | None:
        breaker = self._ref()
        if breaker is None:
            return None
        try:
            return self.adapter.retry_after(breaker, self)
        except Exception:
            return None


def _value(counter: itertools.count[int]) -> int:
    """How many times ``next()`` was called on ``counter`` (its repr is ``count(N)``), without advancing it."""
    return int(repr(counter)[6:-1])


_spans_possible: bool | None = None


def spans_possible() -> bool:
    """False when the global tracer provider can never record a span (our default while traces go nowhere is
    the always_off sampler): the call path then skips looking up the current span. Final once an SDK provider
    is set (it can be set only once); while the global provider is still a proxy, spans are assumed."""
    global _spans_possible
    if _spans_possible is not None:
        return _spans_possible
    sampler = getattr(trace.get_tracer_provider(), "sampler", None)
    if sampler is None:
        return True
    description = sampler.get_description() if hasattr(sampler, "get_description") else ""
    _spans_possible = description != "AlwaysOffSampler"
    return _spans_possible


_TAG = "_otel_reliability_breaker"


def tag_error(error: BaseException, tracked: TrackedBreaker) -> None:
    """Remember on an exception which breaker raised (or tripped on) it, for the HTTP mapping."""
    with contextlib.suppress(AttributeError, TypeError):
        setattr(error, _TAG, tracked)


def tagged(error: BaseException | None) -> TrackedBreaker | None:
    """The breaker an exception (or the exception it was raised while handling) is tagged with."""
    seen = 0
    while error is not None and seen < 3:
        found = getattr(error, _TAG, None)
        if isinstance(found, TrackedBreaker):
            return found
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


@dataclass(frozen=True)
class Entry:
    """One breaker as a collection sees it: its (unique) name, its counts and its live reading."""

    name: str
    tracked: TrackedBreaker
    reading: Reading
    calls: tuple[int, int, int]
    transitions: dict[str, int]


class BreakerRegistry:
    """Every breaker this process knows, weakly held, in registration order."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[Hashable, TrackedBreaker] = {}
        self._seq = 0
        self._duplicates_logged: set[str] = set()
        self._cache: tuple[float, list[Entry]] | None = None
        # Called (without arguments) before each collection: libraries with their own registry sync here.
        self.before_collect: list[Callable[[], None]] = []

    def track(
        self,
        breaker: Any,
        adapter: Adapter,
        *,
        key: Hashable | None = None,
        name: str | None = None,
        fallback_name: str | None = None,
        counts_calls: bool = True,
        strong: bool = False,
        initial_state: str | None = CLOSED,
        ref_target: Any = None,
    ) -> TrackedBreaker:
        """Know ``breaker`` (idempotent per key). ``ref_target`` is what is held weakly (default: the breaker)."""
        target = breaker if ref_target is None else ref_target
        key = ("obj", id(target)) if key is None else key
        with self._lock:
            existing = self._entries.get(key)
            if existing is not None and existing.breaker is not None:
                if name:
                    existing.explicit_name = name
                return existing
            self._seq += 1
            ref = self._reference(target, key, strong)
            tracked = TrackedBreaker(
                key=key,
                ref=ref,
                adapter=adapter,
                seq=self._seq,
                explicit_name=name,
                fallback_name=fallback_name or f"{adapter.library}-{self._seq}",
                counts_calls=counts_calls,
                initial_state=initial_state,
            )
            self._entries[key] = tracked
            self._cache = None
        changes.mark_changed()
        return tracked

    def _reference(self, target: Any, key: Hashable, strong: bool) -> Callable[[], Any]:
        if strong:
            return lambda: target
        registry = weakref.ref(self)

        def gone(_: Any, key: Hashable = key) -> None:
            owner = registry()
            if owner is not None:
                owner._discard(key)

        try:
            if hasattr(target, "__self__") and hasattr(target, "__func__"):
                return weakref.WeakMethod(target, gone)
            return weakref.ref(target, gone)
        except TypeError:  # not weak-referenceable (e.g. a builtin): held for the life of the process
            return lambda: target

    def _discard(self, key: Hashable) -> None:
        with self._lock:
            tracked = self._entries.get(key)
            if tracked is not None and tracked.breaker is None:
                del self._entries[key]
                self._cache = None
        changes.mark_changed()

    def lookup(self, breaker: Any) -> TrackedBreaker | None:
        return self.get(("obj", id(breaker)))

    def get(self, key: Hashable) -> TrackedBreaker | None:
        tracked = self._entries.get(key)
        if tracked is None or tracked.breaker is None:
            return None
        return tracked

    def untrack(self, tracked: TrackedBreaker) -> None:
        with self._lock:
            if self._entries.get(tracked.key) is tracked:
                del self._entries[tracked.key]
                self._cache = None
        changes.mark_changed()

    def by_name(self, name: str) -> list[TrackedBreaker]:
        return [t for t in self.tracked() if t.explicit_name == name or t.name == name]

    def tracked(self, library: str | None = None) -> list[TrackedBreaker]:
        with self._lock:
            items = list(self._entries.values())
        return [t for t in items if t.breaker is not None and (library is None or t.adapter.library == library)]

    def clear(self, library: str | None = None) -> None:
        with self._lock:
            for key, tracked in list(self._entries.items()):
                if library is None or tracked.adapter.library == library:
                    del self._entries[key]
            self._cache = None

    def collect(self, max_age: float = 0.0) -> list[Entry]:
        """Read every live breaker once. Instruments of one collection share the read (``max_age``)."""
        now = time.monotonic()
        cached = self._cache
        if max_age > 0 and cached is not None and now - cached[0] <= max_age:
            return cached[1]
        for sync in list(self.before_collect):
            try:
                sync()
            except Exception:
                _logger.debug("otel-reliability: breaker registry sync failed", exc_info=True)
        entries: list[Entry] = []
        used: dict[str, int] = {}
        for tracked in sorted(self.tracked(), key=lambda t: t.seq):
            reading = tracked.read()
            if reading is None:
                continue
            name = tracked.name
            count = used.get(name, 0) + 1
            used[name] = count
            if count > 1:
                if name not in self._duplicates_logged:
                    self._duplicates_logged.add(name)
                    _logger.warning(
                        "otel-reliability: several live circuit breakers are named %r; the later ones are shown "
                        "as %r, ... Give each breaker its own name.",
                        name,
                        f"{name}#2",
                    )
                name = f"{name}#{count}"
            calls, transitions = tracked.counts()
            entries.append(Entry(name, tracked, reading, calls, transitions))
        self._cache = (now, entries)
        return entries


REGISTRY = BreakerRegistry()
