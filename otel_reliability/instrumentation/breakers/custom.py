"""Hand-written breakers: ``otel_reliability.register_breaker(name, breaker)``.

The protocol (what ``register_breaker`` reads, at every metric collection):

- ``breaker`` a **callable** (function, bound method, lambda): called with no argument, it returns the state
  (a string) or a mapping as below.
- ``breaker`` an **object**: ``breaker.get_state()`` if it has one (a string or a mapping), else the
  attribute ``state`` or ``current_state`` (a string or an Enum).
- A **mapping** has the state under ``"state"`` and may have the consecutive failures under
  ``"failure_count"`` (or ``"consecutive_failures"``, ``"fail_counter"``), the threshold under
  ``"fail_max"`` (or ``"failure_threshold"``) and the open period in seconds under ``"reset_timeout"`` (or
  ``"recovery_timeout"``). An object without a mapping may have the same names as attributes.
- State spellings: ``closed``; ``open``/``opened``; ``half_open``/``half-open``/``half-opened`` (any case).

A getter that raises, or returns a state we do not know, makes that breaker "unknown": on ``/metrics`` all
three ``circuit_breaker_state`` series are 0, in health its state is ``"unknown"``. It is never a 500.

Objects are held weakly (a breaker that is garbage-collected disappears); a bound method weakly through
its object; a plain function or lambda strongly (it may be the only reference) until
``unregister_breaker(name)``. Transitions of a hand-written breaker are seen at collection time only: call
``handle.record_transition(state)`` from the breaker, and ``handle.record_call(outcome)`` for the calls
counter, when the breaker can tell us itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from otel_reliability.instrumentation.breakers._registry import Reading, TrackedBreaker, canonical_state

_FAILURES = ("failure_count", "consecutive_failures", "fail_counter", "failures")
_THRESHOLD = ("fail_max", "failure_threshold", "threshold")
_TIMEOUT = ("reset_timeout", "recovery_timeout", "ttl")
_RETRY = ("seconds_until_retry", "retry_after", "open_remaining")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _first(source: Mapping[str, Any] | Any, names: tuple[str, ...]) -> float | None:
    for name in names:
        value = source.get(name) if isinstance(source, Mapping) else getattr(source, name, None)
        number = _number(value)
        if number is not None:
            return number
    return None


class CustomAdapter:
    """Reads an object with ``get_state()`` / ``state``."""

    library = "custom"
    derive_transitions = True
    derive_on_read = True

    def name_of(self, breaker: Any) -> str | None:
        return None  # register_breaker always gives a name

    def _raw(self, breaker: Any) -> Any:
        getter = getattr(breaker, "get_state", None)
        if callable(getter):
            return getter()
        for attribute in ("state", "current_state"):
            if hasattr(breaker, attribute):
                return getattr(breaker, attribute)
        raise TypeError("no get_state(), state or current_state")

    def read(self, breaker: Any, tracked: TrackedBreaker) -> Reading:
        raw = self._raw(breaker)
        return self._reading(raw, breaker)

    def _reading(self, raw: Any, breaker: Any) -> Reading:
        if isinstance(raw, Mapping):
            details: Any = raw
            state = canonical_state(raw.get("state"))
        else:
            details = breaker
            state = canonical_state(raw)
        return Reading(
            state,
            _first(details, _FAILURES),
            _first(details, _THRESHOLD),
            _first(details, _TIMEOUT),
        )

    def retry_after(self, breaker: Any, tracked: TrackedBreaker) -> float | None:
        raw = self._raw(breaker)
        return _first(raw if isinstance(raw, Mapping) else breaker, _RETRY)


class CallableAdapter(CustomAdapter):
    """Reads a callable that returns the state or a mapping."""

    def read(self, breaker: Any, tracked: TrackedBreaker) -> Reading:
        raw = breaker()
        return self._reading(raw, None if isinstance(raw, Mapping) else {})

    def retry_after(self, breaker: Any, tracked: TrackedBreaker) -> float | None:
        raw = breaker()
        return _first(raw, _RETRY) if isinstance(raw, Mapping) else None


CUSTOM = CustomAdapter()
CALLABLE = CallableAdapter()
