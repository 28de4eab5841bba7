"""The breaker instruments: all observable, read from the registry at collection time.

The state gauge is created first, so it is the first callback of every collection: it reads each breaker
once, and the other instruments of the same collection reuse that read (one state read per breaker per
collection, which matters for breakers whose state lives in Redis).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_reliability.instrumentation.breakers._registry import (
    ATTR_NAME,
    ATTR_OUTCOME,
    ATTR_STATE,
    OUTCOMES,
    STATES,
    BreakerRegistry,
)

STATE = "circuit_breaker.state"
CALLS = "circuit_breaker.calls"
TRANSITIONS = "circuit_breaker.transitions"
CONSECUTIVE_FAILURES = "circuit_breaker.consecutive_failures"
FAILURE_THRESHOLD = "circuit_breaker.failure_threshold"
RESET_TIMEOUT = "circuit_breaker.reset_timeout"

_SHARED_READ_SECONDS = 1.0


def create_instruments(meter: Meter, registry: BreakerRegistry, active: Callable[[], bool]) -> None:
    """Create the six instruments on ``meter``; they report nothing once ``active()`` is False."""

    def state(options: CallbackOptions) -> Iterable[Observation]:
        if not active():
            return []
        out = []
        for entry in registry.collect(max_age=0.0):
            current = entry.reading.state  # None (unknown): every state 0
            for value in STATES:
                out.append(Observation(1 if value == current else 0, {ATTR_NAME: entry.name, ATTR_STATE: value}))
        return out

    def consecutive_failures(options: CallbackOptions) -> Iterable[Observation]:
        if not active():
            return []
        return [
            Observation(e.reading.consecutive_failures, {ATTR_NAME: e.name})
            for e in registry.collect(_SHARED_READ_SECONDS)
            if e.reading.consecutive_failures is not None
        ]

    def failure_threshold(options: CallbackOptions) -> Iterable[Observation]:
        if not active():
            return []
        return [
            Observation(e.reading.failure_threshold, {ATTR_NAME: e.name})
            for e in registry.collect(_SHARED_READ_SECONDS)
            if e.reading.failure_threshold is not None
        ]

    def reset_timeout(options: CallbackOptions) -> Iterable[Observation]:
        if not active():
            return []
        return [
            Observation(e.reading.reset_timeout, {ATTR_NAME: e.name})
            for e in registry.collect(_SHARED_READ_SECONDS)
            if e.reading.reset_timeout is not None
        ]

    def calls(options: CallbackOptions) -> Iterable[Observation]:
        if not active():
            return []
        out = []
        for entry in registry.collect(_SHARED_READ_SECONDS):
            if not entry.tracked.counts_calls:
                continue
            for outcome, count in zip(OUTCOMES, entry.calls, strict=True):
                out.append(Observation(count, {ATTR_NAME: entry.name, ATTR_OUTCOME: outcome}))
        return out

    def transitions(options: CallbackOptions) -> Iterable[Observation]:
        if not active():
            return []
        out = []
        for entry in registry.collect(_SHARED_READ_SECONDS):
            for value in STATES:
                out.append(Observation(entry.transitions[value], {ATTR_NAME: entry.name, ATTR_STATE: value}))
        return out

    meter.create_observable_gauge(
        STATE,
        [state],
        unit="{state}",
        description="1 for the state the circuit breaker is in, 0 for the other states (all 0: unreadable).",
    )
    meter.create_observable_counter(
        CALLS,
        [calls],
        unit="{call}",
        description="Calls through the circuit breaker by outcome: success, failure, rejected (refused while open).",
    )
    meter.create_observable_counter(
        TRANSITIONS,
        [transitions],
        unit="{transition}",
        description="State changes of the circuit breaker, by the state entered.",
    )
    meter.create_observable_gauge(
        CONSECUTIVE_FAILURES,
        [consecutive_failures],
        unit="{failure}",
        description="Failures since the last success, as the circuit breaker counts them.",
    )
    meter.create_observable_gauge(
        FAILURE_THRESHOLD,
        [failure_threshold],
        unit="{failure}",
        description="Consecutive failures at which the circuit breaker opens (its configuration).",
    )
    meter.create_observable_gauge(
        RESET_TIMEOUT,
        [reset_timeout],
        unit="s",
        description="Seconds the circuit breaker stays open before it lets a trial call through (configuration).",
    )
