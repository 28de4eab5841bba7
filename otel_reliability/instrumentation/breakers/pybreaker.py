"""pybreaker (1.x): every ``pybreaker.CircuitBreaker`` created after instrumentation is known.

How, and why this way:

- ``CircuitBreaker.__init__`` is wrapped: each new breaker is registered (weakly). pybreaker has no registry of
  its own, so a breaker created *before* instrumentation is only known through
  ``register_breaker(name, breaker)``.
- Outcomes and transitions are counted where pybreaker notifies its listeners, by wrapping those places on the
  classes, not with a listener of ours: a listener would show in the public ``breaker.listeners`` tuple, and
  ``CircuitBreaker(listeners=a.listeners)`` would copy it (each call on the copy counted for both). A failure
  is ``_inc_counter`` (where pybreaker calls ``failure``), a success ``CircuitBreakerState._handle_success``
  (``success``; pybreaker takes an excluded exception as a success, and so do we), a transition
  ``_create_new_state(notify=True)`` (``state_change``). The call that trips the breaker raises
  ``CircuitBreakerError`` but has run and failed: it is a failure, not a rejection.
- A refused call raises in ``CircuitOpenState.before_call`` before any listener runs, so that method is
  wrapped: a ``CircuitBreakerError`` leaving it while the breaker is still in that same open state is a
  ``rejected`` call. When the reset timeout has passed, the same method moves the breaker to half-open and
  makes the trial call (pybreaker enters half-open lazily, on the first call after the timeout); whatever
  that trial raises is counted as a success or failure, never as a rejection.
- Works for ``breaker.call``, ``@breaker`` and ``with breaker.calling()`` (all go through ``call``), and for
  ``call_async`` (Tornado), the only async form pybreaker has.
- The state is read at collection time from ``current_state`` and ``fail_counter`` (with a Redis storage
  that is a Redis round-trip per collection per breaker). Private state (the cached state object a call runs
  in, the storage's ``opened_at``, a state's breaker) is read through ``otel_reliability.upstream.breakers``,
  which checks its shape first and falls back to the public attributes.
"""

from __future__ import annotations

import sys
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
    SelfNamed,
    TrackedBreaker,
    annotate_span,
    canonical_state,
    spans_possible,
    tag_error,
)
from otel_reliability.upstream import breakers as upstream

LIBRARY = "pybreaker"


class PybreakerAdapter(SelfNamed):
    library = LIBRARY
    derive_transitions = False  # pybreaker tells its listeners, where we count them
    derive_on_read = False

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
            seen = tracked.extra.get(_OPENED)  # the storage cannot be read: when we saw it open
            return None if seen is None else max(0.0, float(breaker.reset_timeout) - (time.monotonic() - seen))
        if opened_at.tzinfo is None:
            opened_at = opened_at.replace(tzinfo=timezone.utc)
        elapsed = (datetime.now(timezone.utc) - opened_at).total_seconds()
        return max(0.0, float(breaker.reset_timeout) - elapsed)


ADAPTER = PybreakerAdapter()
_OPENED = "pybreaker.opened_monotonic"


def adopt(breaker: Any, registry: BreakerRegistry = BREAKERS, name: str | None = None) -> TrackedBreaker:
    """Know one pybreaker breaker (created before instrumentation, or from ``__init__``). Nothing is attached to
    it (its outcomes are counted by the class-level wrappers of ``instrument``), except where pybreaker's
    notification points changed shape: then our listener (``upstream.breakers``' fallback)."""
    tracked = registry.adopt(breaker, ADAPTER, breaker.current_state, name)
    listener = _listeners.get(registry)
    if listener is not None and listener not in breaker.listeners:
        breaker.add_listener(listener)
    return tracked


_listeners: dict[BreakerRegistry, Any] = {}  # registry -> our listener, only where the wrappers cannot be used


def _patched(notify: bool = True) -> list[tuple[Any, str]]:
    """Every (class, method) this module wraps (``notify``: the three notification points too)."""
    import pybreaker

    points = [
        (pybreaker.CircuitBreaker, "_inc_counter"),
        (pybreaker.CircuitBreaker, "_create_new_state"),
        (pybreaker.CircuitBreakerState, "_handle_success"),
    ]
    return [
        (pybreaker.CircuitBreaker, "__init__"),
        *(points if notify else []),
        (pybreaker.CircuitOpenState, "before_call"),
    ]


class _Counting:
    """What each notification counts, called from the wrappers (or from our listener, the fallback)."""

    def __init__(self, registry: BreakerRegistry, state_name: Any, candidates: Any) -> None:
        self.registry, self.state_name, self.candidates = registry, state_name, candidates

    # Counted before ``on_failure`` may open the breaker, as a listener's ``failure`` is; the span shows the state
    # the call ran in. If this failure trips the breaker, pybreaker raises CircuitBreakerError from inside the
    # handling of the failure: the tag on the failure (its __context__) tells the HTTP mapping which breaker opened.
    def failure(self, breaker: Any, failure: BaseException | None) -> None:
        tracked = self.registry.lookup(breaker)
        if tracked is not None:
            tracked.record_failure()
            annotate_span(tracked.name, canonical_state(self.state_name(breaker)))
            if failure is not None:
                tag_error(failure, tracked)

    # After ``on_success``, so the span shows the state the call left the breaker in.
    def success(self, breaker: Any) -> None:
        tracked = None if breaker is None else self.registry.lookup(breaker)
        if tracked is not None:
            tracked.record_success()
            if spans_possible():  # nothing else is paid when no span can record (metrics-only set-ups)
                span = get_current_span()
                if span.is_recording():
                    annotate_span(tracked.name, canonical_state(self.state_name(breaker)), span)

    def transition(self, breaker: Any, old: Any, state: Any) -> None:
        tracked = self.registry.lookup(breaker)
        if tracked is not None:
            previous = canonical_state(old.name) if old is not None else None
            new = canonical_state(state.name)
            if new == "open":
                tracked.extra[_OPENED] = time.monotonic()
            tracked.record_transition(new, previous)


def _listener(counting: _Counting) -> Any:
    import pybreaker

    class Listener(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
        def failure(self, cb: Any, exc: BaseException) -> None:
            counting.failure(cb, exc)

        def success(self, cb: Any) -> None:
            counting.success(cb)

        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            counting.transition(cb, old_state, new_state)

    return Listener()


def instrument(registry: BreakerRegistry = BREAKERS) -> None:
    """Wrap, with wrapt, ``CircuitBreaker.__init__`` (adopt every new breaker), the three places where pybreaker
    notifies its listeners (``_inc_counter``: a failure; ``CircuitBreakerState._handle_success``: a success;
    ``_create_new_state(notify=True)``: a transition) and ``CircuitOpenState.before_call`` (count refusals);
    ``uninstrument`` unwraps them. No listener of ours is ever in ``breaker.listeners``: a user who builds a
    breaker from another's listeners (``CircuitBreaker(listeners=a.listeners)``) copies only their own, and
    pybreaker's own listener API behaves as if we were not there. (Unless the notification points changed
    shape, ``upstream.breakers``' check: then one WARNING, and a listener of ours counts the same.)"""
    import pybreaker
    from wrapt import wrap_function_wrapper

    if is_wrapped(pybreaker.CircuitBreaker, "__init__"):
        return
    state_name = upstream.pybreaker_state_name()  # checks pybreaker's private state before a scratch breaker
    notify = upstream.usable("pybreaker.notify")  # builds a scratch breaker too: before __init__ is wrapped
    error_cls = pybreaker.CircuitBreakerError

    def candidates() -> list[Any]:
        return [b for b in (t.breaker for t in registry.tracked(LIBRARY)) if b is not None]

    counting = _Counting(registry, state_name, candidates)

    def init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        adopt(instance, registry)

    # pybreaker counts a failure (and tells its listeners) right after ``_inc_counter``, inside the ``except``
    # of the call: the exception in hand is the failure.
    def inc_counter(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        counting.failure(instance, sys.exc_info()[1])
        return result

    # A success (an excluded exception is one too: pybreaker handles it as a success), counted where pybreaker
    # tells its listeners.
    def handle_success(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        counting.success(upstream.pybreaker_breaker_of(instance, candidates))
        return result

    # ``notify=True`` is exactly when pybreaker tells its listeners ``state_change``.
    def create_new_state(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        state = wrapped(*args, **kwargs)
        if upstream.notifies(*args, **kwargs):
            counting.transition(instance, upstream.prev_state(*args, **kwargs), state)
        return state

    def before_call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except error_cls as exc:
            # Still in this very open state: refused without calling. (A failed half-open trial has moved the
            # breaker to a new open state object and was counted as a failure.)
            breaker = upstream.pybreaker_still_refusing(instance, candidates)
            if breaker is not None:
                tracked = registry.lookup(breaker)
                if tracked is not None:
                    tracked.record_rejected(exc)
            raise

    if not notify:
        _listeners[registry] = _listener(counting)
        for breaker in candidates():
            adopt(breaker, registry)
    points = [inc_counter, create_new_state, handle_success] if notify else []
    wrappers = [init, *points, before_call]
    for (owner, name), wrapper in zip(_patched(notify), wrappers, strict=True):
        wrap_function_wrapper(owner, name, wrapper)


def uninstrument(registry: BreakerRegistry = BREAKERS) -> None:
    for owner, name in _patched():
        if is_wrapped(owner, name):
            unwrap(owner, name)
    listener = _listeners.pop(registry, None)
    if listener is not None:
        for tracked in registry.tracked(LIBRARY):
            if tracked.breaker is not None and listener in tracked.breaker.listeners:
                tracked.breaker.remove_listener(listener)
    registry.clear(LIBRARY)
