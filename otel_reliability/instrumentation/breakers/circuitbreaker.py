"""circuitbreaker (2.x): breakers made with ``@circuit(...)``, ``CircuitBreaker(...)`` or a subclass.

How, and why this way:

- ``CircuitBreakerMonitor`` knows every breaker that decorated a function, including those created before
  instrumentation: it is synced before each collection. ``CircuitBreaker.__init__`` is wrapped too, so a
  breaker used only as a context manager (``with breaker:``) or through ``breaker.call`` is known as well
  (weakly; the monitor itself holds decorated breakers for the life of the process).
- The library has no listeners. Outcomes are taken where it decides them: ``__exit__`` (every call through
  ``call``, the decorators and ``with`` ends there). A failure is what the library counted as one (its
  ``expected_exception`` matched: it stored the exception as ``last_failure``); anything else, including an
  exception it does not expect, is a success, as the library itself treats it (it resets the breaker).
- A refused call constructs ``CircuitBreakerError(breaker)`` (its decorators do this, and nothing else
  does), so its ``__init__`` counts the rejection. A refused call served by a ``fallback_function`` raises
  nothing: the fallback is wrapped to count it as rejected too (the dependency was not called).
- Half-open is computed by the library (open and the recovery timeout has passed), not an event.
  Transitions are therefore derived from the states seen at each call and each collection; a recovery
  (open -> closed) always passes through half_open, so that step is counted even when no collection fell
  inside the half-open period.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from otel_reliability.instrumentation.breakers._registry import (
    REGISTRY,
    BreakerRegistry,
    Reading,
    TrackedBreaker,
    annotate_span,
    canonical_state,
    creation_site,
)

LIBRARY = "circuitbreaker"
_ORIGINALS = "_otel_reliability_originals"
_COUNTED = "_otel_reliability_counted_fallback"


class CircuitbreakerAdapter:
    library = LIBRARY
    derive_transitions = True  # no events: derived from observed states
    derive_on_read = False

    def name_of(self, breaker: Any) -> str | None:
        name = breaker.name
        return str(name) if name else None

    def read(self, breaker: Any, tracked: TrackedBreaker) -> Reading:
        return Reading(
            canonical_state(breaker.state),
            float(breaker.failure_count),
            float(breaker._failure_threshold),
            float(breaker._recovery_timeout),
        )

    def retry_after(self, breaker: Any, tracked: TrackedBreaker) -> float | None:
        remaining = (breaker._opened + breaker._recovery_timeout) - time.monotonic()
        return max(0.0, float(remaining))


ADAPTER = CircuitbreakerAdapter()


def _count_fallback(breaker: Any, tracked: TrackedBreaker) -> None:
    fallback = breaker.__dict__.get("_fallback_function")
    if fallback is None or getattr(fallback, _COUNTED, False):
        return

    @functools.wraps(fallback)
    def counted(*args: Any, **kwargs: Any) -> Any:
        tracked.record_rejected(None)
        return fallback(*args, **kwargs)

    setattr(counted, _COUNTED, True)
    breaker._fallback_function = counted


def _restore_fallback(breaker: Any) -> None:
    fallback = breaker.__dict__.get("_fallback_function")
    if fallback is not None and getattr(fallback, _COUNTED, False):
        breaker._fallback_function = fallback.__wrapped__


def adopt(breaker: Any, registry: BreakerRegistry = REGISTRY, name: str | None = None) -> TrackedBreaker:
    """Know one circuitbreaker breaker and count the rejections its fallback serves."""
    tracked = registry.track(
        breaker,
        ADAPTER,
        name=name,
        fallback_name=creation_site(1),
        initial_state=canonical_state(breaker.state) or "closed",
    )
    _count_fallback(breaker, tracked)
    return tracked


def instrument(registry: BreakerRegistry = REGISTRY) -> None:
    import circuitbreaker

    cls = circuitbreaker.CircuitBreaker
    error_cls = circuitbreaker.CircuitBreakerError
    if _ORIGINALS in cls.__dict__:
        return
    original_init = cls.__init__
    original_exit = cls.__exit__
    original_error_init = error_cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        adopt(self, registry)

    def __exit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> Any:
        before = canonical_state(self.state)
        result = original_exit(self, exc_type, exc, tb)
        tracked = registry.lookup(self) or adopt(self, registry)
        if exc_type is not None and exc is not None and self._last_failure is exc:
            tracked.record_failure()
        else:
            tracked.record_success()
        annotate_span(tracked.name, before)
        tracked.observe(before)
        tracked.observe(canonical_state(self.state))
        return result

    def error_init(self: Any, circuit_breaker: Any, *args: Any, **kwargs: Any) -> None:
        original_error_init(self, circuit_breaker, *args, **kwargs)
        if isinstance(circuit_breaker, cls):
            tracked = registry.lookup(circuit_breaker) or adopt(circuit_breaker, registry)
            tracked.record_rejected(self)

    def sync_monitor() -> None:
        for breaker in list(circuitbreaker.CircuitBreakerMonitor.get_circuits()):
            if registry.lookup(breaker) is None:
                adopt(breaker, registry)

    setattr(cls, _ORIGINALS, (original_init, original_exit, original_error_init, sync_monitor))
    cls.__init__ = __init__  # type: ignore[method-assign]
    cls.__exit__ = __exit__  # type: ignore[method-assign]
    error_cls.__init__ = error_init  # type: ignore[method-assign]
    registry.before_collect.append(sync_monitor)


def uninstrument(registry: BreakerRegistry = REGISTRY) -> None:
    import circuitbreaker

    cls = circuitbreaker.CircuitBreaker
    originals = cls.__dict__.get(_ORIGINALS)
    if originals is None:
        return
    original_init, original_exit, original_error_init, sync_monitor = originals
    cls.__init__ = original_init  # type: ignore[method-assign]
    cls.__exit__ = original_exit  # type: ignore[method-assign]
    circuitbreaker.CircuitBreakerError.__init__ = original_error_init  # type: ignore[method-assign]
    delattr(cls, _ORIGINALS)
    if sync_monitor in registry.before_collect:
        registry.before_collect.remove(sync_monitor)
    for tracked in registry.tracked(LIBRARY):
        breaker = tracked.breaker
        if breaker is not None:
            _restore_fallback(breaker)
    registry.clear(LIBRARY)
