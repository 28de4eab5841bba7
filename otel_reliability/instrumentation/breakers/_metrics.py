"""The breaker instruments: synchronous, published from the registry at the start of each collection.

Each breaker is read once per collection (which matters for breakers whose state lives in Redis); its state,
configuration and counts are compared with what was published last, and only differences reach the SDK
(``otel_reliability.instrumentation._published`` says why this is ~6x cheaper than observable instruments).
Calls are counted on the call path in plain integers (one SDK measurement would cost more than the call);
transitions are counted on the call path as the library reports or as our wrappers see them, never derived
at collection (except for hand-registered breakers, whose calls we do not see).

A breaker that is garbage-collected or unregistered disappears from every series at the next collection.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.metrics import Meter

from otel_reliability import collection, gil, semconv
from otel_reliability.instrumentation._published import Published
from otel_reliability.instrumentation.breakers._registry import (
    ATTR_NAME,
    ATTR_OUTCOME,
    ATTR_STATE,
    OUTCOMES,
    STATES,
    BreakerRegistry,
)

STATE = semconv.METRIC_CIRCUIT_BREAKER_STATE
CALLS = semconv.METRIC_CIRCUIT_BREAKER_CALLS
TRANSITIONS = semconv.METRIC_CIRCUIT_BREAKER_TRANSITIONS
CONSECUTIVE_FAILURES = semconv.METRIC_CIRCUIT_BREAKER_CONSECUTIVE_FAILURES
FAILURE_THRESHOLD = semconv.METRIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD
RESET_TIMEOUT = semconv.METRIC_CIRCUIT_BREAKER_RESET_TIMEOUT

PUBLISH_HOOK = "otel_reliability.breakers.publish"
_POINTS_PER_BREAKER = 12  # what one breaker adds to a collection (3 states x 2, 3 outcomes, 3 numbers)


class BreakerInstruments:
    """The six instruments and what was last published into them."""

    def __init__(self, meter: Meter, registry: BreakerRegistry, active: Callable[[], bool]) -> None:
        self._registry = registry
        self._active = active
        self.state = Published.gauge(
            meter,
            STATE,
            "{state}",
            "1 for the state the circuit breaker is in, 0 for the other states (all 0: unreadable).",
        )
        self.calls = Published.counter(
            meter,
            CALLS,
            "{call}",
            "Calls through the circuit breaker by outcome: success, failure, rejected (refused while open).",
        )
        self.transitions = Published.counter(
            meter, TRANSITIONS, "{transition}", "State changes of the circuit breaker, by the state entered."
        )
        self.failures = Published.gauge(
            meter,
            CONSECUTIVE_FAILURES,
            "{failure}",
            "Failures since the last success, as the circuit breaker counts them.",
        )
        self.threshold = Published.gauge(
            meter,
            FAILURE_THRESHOLD,
            "{failure}",
            "Consecutive failures at which the circuit breaker opens (its configuration).",
        )
        self.reset_timeout = Published.gauge(
            meter,
            RESET_TIMEOUT,
            semconv.UNIT_SECONDS,
            "Seconds the circuit breaker stays open before it lets a trial call through (configuration).",
        )
        self._all = (self.state, self.calls, self.transitions, self.failures, self.threshold, self.reset_timeout)
        # Attribute dicts per breaker name, built once (the SDK copies them; we never mutate them).
        self._attrs: dict[str, tuple[dict[str, str], dict[str, dict[str, str]], dict[str, dict[str, str]]]] = {}
        collection.before_collect(meter, PUBLISH_HOOK, self.publish)

    def _attributes(self, name: str) -> tuple[dict[str, str], dict[str, dict[str, str]], dict[str, dict[str, str]]]:
        found = self._attrs.get(name)
        if found is None:
            found = (
                {ATTR_NAME: name},
                {s: {ATTR_NAME: name, ATTR_STATE: s} for s in STATES},
                {o: {ATTR_NAME: name, ATTR_OUTCOME: o} for o in OUTCOMES},
            )
            self._attrs[name] = found
        return found

    def publish(self) -> None:
        """Bring every series up to date with the registry (called at the start of each collection)."""
        if not self._active():
            self.forget(None)
            return
        seen: set[str] = set()
        for entry in self._registry.collect(max_age=0.0):
            name = entry.name
            seen.add(name)
            plain, by_state, by_outcome = self._attributes(name)
            current = entry.reading.state  # None (unknown): every state 0
            for value in STATES:
                self.state.set((name, value), 1 if value == current else 0, by_state[value])
                self.transitions.set((name, value), entry.transitions[value], by_state[value])
            if entry.tracked.counts_calls:
                for outcome, count in zip(OUTCOMES, entry.calls, strict=True):
                    self.calls.set((name, outcome), count, by_outcome[outcome])
            for published, number in (
                (self.failures, entry.reading.consecutive_failures),
                (self.threshold, entry.reading.failure_threshold),
                (self.reset_timeout, entry.reading.reset_timeout),
            ):
                if number is None:
                    published.forget((name,))
                else:
                    published.set((name,), number, plain)
            gil.pause_point(_POINTS_PER_BREAKER)
        self.forget(seen)

    def forget(self, keep: set[str] | None) -> None:
        """End the series of every breaker not in ``keep`` (all of them when None)."""
        for published in self._all:
            for key in published.series():
                if keep is None or key[0] not in keep:  # type: ignore[index]
                    published.forget(key)
        if keep is None:
            self._attrs.clear()
        else:
            for name in [n for n in self._attrs if n not in keep]:
                del self._attrs[name]


def create_instruments(meter: Meter, registry: BreakerRegistry, active: Callable[[], bool]) -> BreakerInstruments:
    """Create the six instruments on ``meter``; they report nothing once ``active()`` is False."""
    return BreakerInstruments(meter, registry, active)
