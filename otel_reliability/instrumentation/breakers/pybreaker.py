"""pybreaker (1.x): every ``pybreaker.CircuitBreaker`` created after instrumentation is known.

How, and why this way:

- ``CircuitBreaker.__init__`` is wrapped: each new breaker is registered (weakly) and gets one listener
  (pybreaker's public ``CircuitBreakerListener`` API; it shows in ``breaker.listeners``). pybreaker has no
  registry of its own, so a breaker created *before* instrumentation is only known through
  ``register_breaker(name, breaker)``.
- The listener counts ``success`` and ``failure`` and the transitions. pybreaker calls ``success`` for an
  excluded exception too (an excluded exception is a business error, not a failing dependency): that is a
  success here as well. The call that trips the breaker raises ``CircuitBreakerError`` but has run and
  failed: the listener saw the ``failure``, so it is a failure, not a rejection.
- A refused call raises in ``CircuitOpenState.before_call`` before any listener runs, so that method is
  wrapped: a ``CircuitBreakerError`` leaving it while the breaker is still in that same open state is a
  ``rejected`` call. When the reset timeout has passed, the same method moves the breaker to half-open and
  makes the trial call (pybreaker enters half-open lazily, on the first call after the timeout); whatever
  that trial raises is a success or failure seen by the listener, never a rejection.
- Works for ``breaker.call``, ``@breaker`` and ``with breaker.calling()`` (all go through ``call``), and for
  ``call_async`` (Tornado), the only async form pybreaker has.
- The state is read at collection time from ``current_state`` and ``fail_counter`` (with a Redis storage
  that is a Redis round-trip per collection per breaker). Private state (the cached state object a call runs
  in, the storage's ``opened_at``, a state's breaker) is read through ``otel_reliability.upstream.breakers``,
  which checks its shape first and falls back to the public attributes.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.trace import get_current_span

from otel_reliability.instrumentation._instrumented import is_wrapped
from otel_reliability.instrumentation.breakers._registry import (
    BREAKERS,
    BreakerRegistry,
    Reading,
    TrackedBreaker,
    annotate_span,
    canonical_state,
    creation_site,
    spans_possible,
    tag_error,
)
from otel_reliability.upstream import breakers as upstream

LIBRARY = "pybreaker"


class PybreakerAdapter:
    library = LIBRARY
    derive_transitions = False  # pybreaker tells us through the listener
    derive_on_read = False

    def name_of(self, breaker: Any) -> str | None:
        name = breaker.name
        return str(name) if name else None

    def read(self, breaker: Any, tracked: TrackedBreaker) -> Reading:
        return Reading(
            canonical_state(breaker.current_state),
            float(breaker.fail_counter),
            float(breaker.fail_max),
            float(breaker.reset_timeout),
        )

    def retry_after(self, breaker: Any, tracked: TrackedBreaker) -> float | None:
        opened_at = upstream.pybreaker_opened_at(breaker)
        if opened_at is None:
            seen = tracked.extra.get(_OPENED)  # the storage cannot be read: when our listener saw it open
            return None if seen is None else max(0.0, float(breaker.reset_timeout) - (time.monotonic() - seen))
        if opened_at.tzinfo is None:
            opened_at = opened_at.replace(tzinfo=timezone.utc)
        elapsed = (datetime.now(timezone.utc) - opened_at).total_seconds()
        return max(0.0, float(breaker.reset_timeout) - elapsed)


ADAPTER = PybreakerAdapter()
_OPENED = "pybreaker.opened_monotonic"


def _listener_class() -> type:
    import pybreaker

    state_name = upstream.pybreaker_state_name()

    class _Listener(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
        """Counts calls and transitions of one breaker. Holds the tracked record, never the breaker."""

        __slots__ = ("tracked",)

        def __init__(self, tracked: TrackedBreaker) -> None:
            self.tracked = tracked

        # The span is annotated when the call ends (success / failure), not in ``before_call``: same span, one
        # listener call fewer per call. The state shown is the one the call ran in.
        def success(self, cb: Any) -> None:
            self.tracked.record_success()
            if spans_possible():  # nothing else is paid when no span can record (metrics-only set-ups)
                span = get_current_span()
                if span.is_recording():
                    annotate_span(self.tracked.name, canonical_state(state_name(cb)), span)

        def failure(self, cb: Any, exc: BaseException) -> None:
            self.tracked.record_failure()
            annotate_span(self.tracked.name, canonical_state(state_name(cb)))
            # If this failure trips the breaker, pybreaker raises CircuitBreakerError from inside the handling
            # of ``exc``: the tag on ``exc`` (its __context__) tells the HTTP mapping which breaker opened.
            tag_error(exc, self.tracked)

        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            old = canonical_state(old_state.name) if old_state is not None else None
            new = canonical_state(new_state.name)
            if new == "open":
                self.tracked.extra[_OPENED] = time.monotonic()
            self.tracked.record_transition(new, old)

    return _Listener


_listener_cls: type | None = None


def adopt(breaker: Any, registry: BreakerRegistry = BREAKERS, name: str | None = None) -> TrackedBreaker:
    """Know one pybreaker breaker (created before instrumentation, or from ``__init__``): register it and
    attach the counting listener once."""
    global _listener_cls
    if _listener_cls is None:
        _listener_cls = _listener_class()
    existing = registry.lookup(breaker)
    tracked = registry.track(
        breaker,
        ADAPTER,
        name=name,
        fallback_name=creation_site(1),
        initial_state=canonical_state(breaker.current_state) or "closed",
    )
    if existing is None or not any(isinstance(x, _listener_cls) for x in breaker.listeners):
        breaker.add_listener(_listener_cls(tracked))
    return tracked


def instrument(registry: BreakerRegistry = BREAKERS) -> None:
    """Wrap ``CircuitBreaker.__init__`` (adopt every new breaker) and ``CircuitOpenState.before_call`` (count
    refusals) with wrapt; ``uninstrument`` unwraps both."""
    import pybreaker
    from wrapt import wrap_function_wrapper

    if is_wrapped(pybreaker.CircuitBreaker, "__init__"):
        return
    upstream.pybreaker_state_name()  # checks pybreaker's private state now, before a scratch breaker is adopted
    error_cls = pybreaker.CircuitBreakerError

    def candidates() -> list[Any]:
        return [b for b in (t.breaker for t in registry.tracked(LIBRARY)) if b is not None]

    def init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        adopt(instance, registry)

    def before_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except error_cls as exc:
            # Still in this very open state: refused without calling. (A failed half-open trial has moved the
            # breaker to a new open state object and was counted as a failure by the listener.)
            breaker = upstream.pybreaker_still_refusing(instance, candidates)
            if breaker is not None:
                tracked = registry.lookup(breaker)
                if tracked is not None:
                    tracked.record_rejected(exc)
            raise

    wrap_function_wrapper(pybreaker, "CircuitBreaker.__init__", init)
    wrap_function_wrapper(pybreaker, "CircuitOpenState.before_call", before_call)


def uninstrument(registry: BreakerRegistry = BREAKERS) -> None:
    import pybreaker

    unwrap(pybreaker.CircuitBreaker, "__init__")
    unwrap(pybreaker.CircuitOpenState, "before_call")
    for tracked in registry.tracked(LIBRARY):
        breaker = tracked.breaker
        if breaker is not None and _listener_cls is not None:
            for listener in breaker.listeners:
                if isinstance(listener, _listener_cls):
                    breaker.remove_listener(listener)
    registry.clear(LIBRARY)
