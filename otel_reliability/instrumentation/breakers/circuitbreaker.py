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
- Its threshold, timeout and opening time have no public accessor; they are read through
  ``otel_reliability.upstream.breakers``, which checks their shape first and otherwise uses the constructor's
  arguments and ``open_remaining``.
"""

from __future__ import annotations

from typing import Any

from otel_reliability.instrumentation._instrumented import is_wrapped
from otel_reliability.instrumentation.breakers._registry import (
    BREAKERS,
    BreakerRegistry,
    Reading,
    SelfNamed,
    TrackedBreaker,
    annotate_span,
    canonical_state,
)
from otel_reliability.upstream import breakers as upstream

LIBRARY = "circuitbreaker"


class CircuitbreakerAdapter(SelfNamed):
    library = LIBRARY
    derive_transitions = True  # no events: derived from observed states
    derive_on_read = False

    def read(self, breaker: Any, tracked: TrackedBreaker) -> Reading:
        threshold, timeout = upstream.circuitbreaker_settings(breaker, tracked.extra.get(_GIVEN))
        return Reading(canonical_state(breaker.state), float(breaker.failure_count), threshold, timeout)

    def retry_after(self, breaker: Any, tracked: TrackedBreaker) -> float | None:
        return upstream.circuitbreaker_remaining(breaker)


ADAPTER = CircuitbreakerAdapter()
_GIVEN = "circuitbreaker.given"  # (threshold, timeout) as its constructor was given them, in tracked.extra


def _count_fallback(breaker: Any, tracked: TrackedBreaker) -> None:
    """Wrap this breaker's fallback (an instance attribute): a refused call it serves counts as rejected."""
    from wrapt import wrap_function_wrapper

    if not upstream.circuitbreaker_fallback_usable():
        return  # the constructor's argument was wrapped instead (init below)
    if breaker.__dict__.get("_fallback_function") is None or is_wrapped(breaker, "_fallback_function"):
        return

    def counted(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        tracked.record_rejected(None)
        return wrapped(*args, **kwargs)

    wrap_function_wrapper(breaker, "_fallback_function", counted)


_FALLBACK_ARG = 4  # CircuitBreaker(failure_threshold, recovery_timeout, expected_exception, name, fallback_function)


def _counted_fallback_argument(args: Any, kwargs: Any, registry: BreakerRegistry) -> tuple[Any, Any, list[Any]]:
    """The constructor's arguments with its fallback wrapped to count each refusal it serves (the public path
    where the stored attribute is not what we expect); the list receives the breaker once it is built."""
    import wrapt

    built: list[Any] = []
    given = args[_FALLBACK_ARG] if len(args) > _FALLBACK_ARG else kwargs.get("fallback_function")
    if given is None or upstream.circuitbreaker_fallback_usable():
        return args, kwargs, built

    def counted(wrapped: Any, instance: Any, call_args: Any, call_kwargs: Any) -> Any:
        tracked = registry.lookup(built[0]) if built else None
        if tracked is not None:
            tracked.record_rejected(None)
        return wrapped(*call_args, **call_kwargs)

    fallback = wrapt.FunctionWrapper(given, counted)
    if len(args) > _FALLBACK_ARG:
        return (*args[:_FALLBACK_ARG], fallback, *args[_FALLBACK_ARG + 1 :]), kwargs, built
    return args, {**kwargs, "fallback_function": fallback}, built


def _restore_fallback(breaker: Any) -> None:
    from opentelemetry.instrumentation.utils import unwrap

    if is_wrapped(breaker, "_fallback_function"):
        unwrap(breaker, "_fallback_function")


def adopt(breaker: Any, registry: BreakerRegistry = BREAKERS, name: str | None = None) -> TrackedBreaker:
    """Know one circuitbreaker breaker and count the rejections its fallback serves."""
    tracked = registry.adopt(breaker, ADAPTER, breaker.state, name)
    _count_fallback(breaker, tracked)
    return tracked


def _exit_args(exc_type: Any, exc_value: Any, _traceback: Any = None) -> tuple[Any, Any]:
    return exc_type, exc_value


_synced: list[Any] = []
"""The monitor sync this module added to the registry's ``before_collect`` (removed again by ``uninstrument``)."""


def instrument(registry: BreakerRegistry = BREAKERS) -> None:
    """Wrap ``CircuitBreaker.__init__`` (adopt every new breaker), ``CircuitBreaker.__exit__`` (count every call
    that ran) and ``CircuitBreakerError.__init__`` (count refusals) with wrapt; ``uninstrument`` unwraps them."""
    import circuitbreaker
    from wrapt import wrap_function_wrapper

    cls = circuitbreaker.CircuitBreaker
    if is_wrapped(cls, "__init__"):
        return
    upstream.usable("circuitbreaker.settings")  # checked now, before a scratch breaker could be adopted
    upstream.circuitbreaker_fallback_usable()

    def init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        call_args, call_kwargs, built = _counted_fallback_argument(args, kwargs, registry)
        wrapped(*call_args, **call_kwargs)
        built.append(instance)
        tracked = adopt(instance, registry)
        threshold = args[0] if args else kwargs.get("failure_threshold")
        timeout = args[1] if len(args) > 1 else kwargs.get("recovery_timeout")
        tracked.extra[_GIVEN] = upstream.circuitbreaker_given(instance, threshold, timeout)

    def exit_(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        exc_type, exc = (args[0], args[1]) if len(args) == 3 else _exit_args(*args, **kwargs)  # `with`: positional
        before = canonical_state(instance.state)
        result = wrapped(*args, **kwargs)
        tracked = registry.lookup(instance) or adopt(instance, registry)
        if exc_type is not None and exc is not None and instance.last_failure is exc:
            tracked.record_failure()
        else:
            tracked.record_success()
        annotate_span(tracked.name, before)
        tracked.observe(before)
        tracked.observe(canonical_state(instance.state))
        return result

    def error_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        breaker = args[0] if args else kwargs.get("circuit_breaker")
        if isinstance(breaker, cls):
            tracked = registry.lookup(breaker) or adopt(breaker, registry)
            tracked.record_rejected(instance)

    def sync_monitor() -> None:
        for breaker in list(circuitbreaker.CircuitBreakerMonitor.get_circuits()):
            if registry.lookup(breaker) is None:
                adopt(breaker, registry)

    wrap_function_wrapper(cls, "__init__", init)
    wrap_function_wrapper(cls, "__exit__", exit_)
    wrap_function_wrapper(circuitbreaker.CircuitBreakerError, "__init__", error_init)
    registry.before_collect.append(sync_monitor)
    _synced.append(sync_monitor)


def uninstrument(registry: BreakerRegistry = BREAKERS) -> None:
    import circuitbreaker
    from opentelemetry.instrumentation.utils import unwrap

    unwrap(circuitbreaker.CircuitBreaker, "__init__")
    unwrap(circuitbreaker.CircuitBreaker, "__exit__")
    unwrap(circuitbreaker.CircuitBreakerError, "__init__")
    while _synced:
        sync_monitor = _synced.pop()
        if sync_monitor in registry.before_collect:
            registry.before_collect.remove(sync_monitor)
    for tracked in registry.tracked(LIBRARY):
        breaker = tracked.breaker
        if breaker is not None:
            _restore_fallback(breaker)
    registry.clear(LIBRARY)
