"""The breaker libraries' private state read on the user's call path and at collection (see
``otel_reliability.upstream``). Each instrumentor asks for its accessors in ``instrument()``, before it patches
anything: the checks build a scratch breaker, which must not be adopted and counted.

Not guarded because it is not needed: circuitbreaker's ``last_failure`` (public) replaces ``_last_failure``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

from otel_reliability.upstream._registry import guard, usable


@guard(
    "pybreaker.state",
    "pybreaker",
    ("CircuitBreaker._state", "CircuitBreaker._state_storage", "CircuitBreakerState._breaker"),
    "the breaker's cached state object (.name, the one a call runs in), its storage's opened_at (a datetime) "
    "and each state object's breaker",
    "current_state (asks the storage), the time we saw the breaker open and the public state property",
)
def _check_pybreaker() -> bool:
    import pybreaker

    cb = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60)
    closed = cb._state.name == cb.current_state == pybreaker.STATE_CLOSED and cb._state._breaker is cb
    cb.open()
    opened_at = cb._state_storage.opened_at
    return (
        closed
        and isinstance(cb._state, pybreaker.CircuitOpenState)
        and cb._state.name == pybreaker.STATE_OPEN
        and cb._state._breaker is cb
        and isinstance(opened_at, datetime)
        and abs(
            (datetime.now(timezone.utc) - opened_at.replace(tzinfo=opened_at.tzinfo or timezone.utc)).total_seconds()
        )
        < 60
    )


def pybreaker_state_name() -> Callable[[Any], str]:
    """The name of the state a call runs in: the cached state object's (no storage round trip: a Redis storage
    would cost one per call), or ``current_state`` where that object moved."""
    if usable("pybreaker.state"):
        return lambda cb: cb._state.name  # type: ignore[no-any-return]
    return lambda cb: cb.current_state  # type: ignore[no-any-return]


def pybreaker_opened_at(cb: Any) -> datetime | None:
    """When the storage says the breaker opened; None where that cannot be read (``retry_after`` then uses the
    moment we saw it open)."""
    if not usable("pybreaker.state"):
        return None
    opened_at: datetime | None = cb._state_storage.opened_at
    return opened_at


def pybreaker_breaker_of(state: Any, candidates: Callable[[], Iterable[Any]]) -> Any:
    """The breaker a state object belongs to (``_breaker``; where that moved, the tracked breaker whose cached
    state it is, found through the public ``state``)."""
    if usable("pybreaker.state"):
        return state._breaker
    for breaker in candidates():
        if breaker.state is state:
            return breaker
    return None


def pybreaker_still_refusing(state: Any, candidates: Callable[[], Iterable[Any]]) -> Any:
    """The breaker whose open ``state`` object just refused a call, if it is still in that very state (a failed
    half-open trial moves the breaker to a new open state: a failure, not a refusal); None otherwise.
    ``candidates``: the tracked breakers, scanned through the public ``state`` where ``_breaker`` moved."""
    if usable("pybreaker.state"):
        breaker = state._breaker
        return breaker if breaker._state is state else None
    for breaker in candidates():
        if breaker.state is state:
            return breaker
    return None


@guard(
    "circuitbreaker.settings",
    "circuitbreaker",
    ("CircuitBreaker._failure_threshold", "CircuitBreaker._recovery_timeout", "CircuitBreaker._opened"),
    "the threshold and timeout it was built with and the monotonic() time it last opened",
    "the arguments its constructor was given (or the class defaults) and open_remaining (whole seconds)",
)
def _check_circuitbreaker() -> bool:
    import circuitbreaker

    cb = circuitbreaker.CircuitBreaker(failure_threshold=2, recovery_timeout=7)
    built = (cb._failure_threshold, cb._recovery_timeout) == (2, 7)

    def fail() -> None:
        raise ValueError("upstream check")

    for _ in range(2):
        with contextlib.suppress(ValueError):
            cb.call(fail)
    remaining = (cb._opened + cb._recovery_timeout) - time.monotonic()
    return built and cb.opened and 0 < remaining <= 7 and cb.open_remaining == math.ceil(remaining)


@guard(
    "circuitbreaker.fallback",
    "circuitbreaker",
    ("CircuitBreaker._fallback_function",),
    "the instance attribute that holds the fallback it was given, read by the public fallback_function on every "
    "refused call (so wrapping it counts each refusal the fallback serves)",
    "the fallback wrapped as the constructor's argument, before circuitbreaker stores it (a class "
    "FALLBACK_FUNCTION is then not counted)",
)
def _check_circuitbreaker_fallback() -> bool:
    import circuitbreaker

    served: list[str] = []

    def fallback() -> str:
        return "served"

    name = f"otel-reliability upstream check {id(served)}"
    cb = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=60, name=name, fallback_function=fallback)
    if cb.__dict__.get("_fallback_function") is not fallback or cb.fallback_function is not fallback:
        return False

    def ours() -> str:
        served.append("ours")
        return fallback()

    cb.__dict__["_fallback_function"] = ours

    def fail() -> None:
        raise ValueError("upstream check")

    guarded = cb.decorate(fail)  # the only path that serves a fallback; it registers the breaker in the monitor
    circuitbreaker.CircuitBreakerMonitor.circuit_breakers.pop(name, None)  # which must not list our scratch one
    with contextlib.suppress(ValueError):
        guarded()
    return bool(cb.opened and guarded() == "served" and served == ["ours"])


def circuitbreaker_fallback_usable() -> bool:
    """Whether a breaker's stored fallback can be wrapped in place (else its constructor argument is)."""
    return usable("circuitbreaker.fallback")


def circuitbreaker_settings(cb: Any, given: tuple[float, float] | None) -> tuple[float, float]:
    """(failure threshold, recovery timeout); ``given``: what our constructor wrapper saw it built with."""
    if usable("circuitbreaker.settings"):
        return float(cb._failure_threshold), float(cb._recovery_timeout)
    if given is not None:
        return given
    return float(cb.FAILURE_THRESHOLD), float(cb.RECOVERY_TIMEOUT)


def circuitbreaker_given(cb: Any, failure_threshold: Any, recovery_timeout: Any) -> tuple[float, float]:
    """What circuitbreaker itself makes of its constructor's arguments (``x or the class default``)."""
    return float(failure_threshold or cb.FAILURE_THRESHOLD), float(recovery_timeout or cb.RECOVERY_TIMEOUT)


def circuitbreaker_remaining(cb: Any) -> float:
    """Seconds until an open breaker lets a trial call through (exact, or ``open_remaining``'s whole seconds)."""
    if usable("circuitbreaker.settings"):
        return max(0.0, float((cb._opened + cb._recovery_timeout) - time.monotonic()))
    return max(0.0, float(cb.open_remaining))


@guard(
    "pybreaker.notify",
    "pybreaker",
    (
        "CircuitBreaker._inc_counter",
        "CircuitBreaker._create_new_state",
        "CircuitBreakerState._handle_success",
    ),
    "the three places pybreaker tells its listeners, called exactly where and with what the listeners are told: "
    "_inc_counter() inside the failure's except, before listener.failure; _handle_success() (one method for "
    "every state) before listener.success; _create_new_state(new, prev_state=old, notify=True) for each "
    "state_change(old, new)",
    "a listener of ours in each breaker's public listeners (the same counts; the listener shows in breaker.listeners)",
)
def _check_pybreaker_notify() -> bool:
    import sys

    import pybreaker

    base = pybreaker.CircuitBreakerState._handle_success
    states = (pybreaker.CircuitClosedState, pybreaker.CircuitOpenState, pybreaker.CircuitHalfOpenState)
    if any(getattr(cls, "_handle_success") is not base for cls in states):  # noqa: B009  (each state: one method)
        return False
    told: list[tuple[Any, ...]] = []
    seen: list[tuple[Any, ...]] = []

    class Told(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
        def failure(self, cb: Any, exc: BaseException) -> None:
            told.append(("failure", exc))

        def success(self, cb: Any) -> None:
            told.append(("success",))

        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            told.append(("state", old_state, new_state))

    cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, listeners=[Told()])
    inc_counter, create_new_state = cb._inc_counter, cb._create_new_state
    handle_success = cb.state._handle_success  # the public state property: the state object a call runs in

    def spy_inc_counter(*args: Any, **kwargs: Any) -> Any:
        result = inc_counter(*args, **kwargs)
        seen.append(("failure", sys.exc_info()[1]))
        return result

    def spy_handle_success(*args: Any, **kwargs: Any) -> Any:
        result = handle_success(*args, **kwargs)
        seen.append(("success",))
        return result

    def spy_create_new_state(*args: Any, **kwargs: Any) -> Any:
        state = create_new_state(*args, **kwargs)
        if notifies(*args, **kwargs):
            seen.append(("state", prev_state(*args, **kwargs), state))
        return state

    cb._inc_counter, cb._create_new_state = spy_inc_counter, spy_create_new_state  # type: ignore[method-assign]
    cb.state._handle_success = spy_handle_success  # type: ignore[method-assign]

    def fail() -> None:
        raise ValueError("upstream check")

    cb.call(lambda: None)
    for _ in range(2):
        with contextlib.suppress(ValueError, pybreaker.CircuitBreakerError):
            cb.call(fail)
    return (
        len(told) == 4
        and [t[0] for t in told] == ["success", "failure", "failure", "state"]
        and told == seen
        and told[3][2].name == pybreaker.STATE_OPEN
        and cb.current_state == pybreaker.STATE_OPEN
    )


def notifies(new_state: Any, prev_state: Any = None, notify: bool = False) -> bool:
    """Whether a ``_create_new_state(...)`` call tells the listeners (``state_change``)."""
    return notify


def prev_state(new_state: Any, prev_state: Any = None, notify: bool = False) -> Any:
    """The state a notifying ``_create_new_state(...)`` call leaves."""
    return prev_state
