"""purgatory (3.x): every breaker of every ``SyncCircuitBreakerFactory`` / ``AsyncCircuitBreakerFactory``
created after instrumentation.

How, and why this way:

- A purgatory breaker is a *name inside a factory* (the factory's unit of work stores its state, in memory
  or in Redis); it exists from the factory's first ``get_breaker(name)`` (the decorator calls it on the
  first call). The factory is held weakly: when it goes, its breakers go.
- What purgatory tells the listeners of a factory (breaker created, state changed: the transitions and the
  state we report; failed: the consecutive failures; recovered) is taken from the factory's message bus:
  ``SyncMessageRegistry.handle`` / ``AsyncMessageRegistry.handle`` are wrapped on the class, and a message
  handled on the bus of a known factory is looked at once purgatory has handled it (where its own
  ``PublicEvent`` would have told a hook). Not through ``factory.add_listener``: our hook would show in the
  public ``factory.listeners``. State and failure count come from these messages rather than from the unit of
  work, which for Redis (and for any async repository) cannot be read synchronously at collection time.
- Calls: ``__enter__``/``__aenter__`` of the per-call breaker object raise ``OpenedState`` when refused:
  a rejection. ``__exit__``/``__aexit__`` end every call that ran; it is a failure when the state took
  it as one (``ClosedState``/``HalfOpenedState.handle_exception``, marked on the context), otherwise a
  success: purgatory's ``exclude`` list makes an exception a success, and so do we.
- Half-opened is entered lazily by purgatory, on the first call after the TTL.
"""

from __future__ import annotations

import contextvars
import time
import weakref
from typing import Any

from otel_reliability.instrumentation._instrumented import is_wrapped
from otel_reliability.instrumentation.breakers._registry import (
    BREAKERS,
    BreakerRegistry,
    Reading,
    TrackedBreaker,
    annotate_span,
    canonical_state,
)

LIBRARY = "purgatory"
# Set by the state machine when it takes an exception as a failure; per thread and per task, so concurrent
# calls through one shared in-memory context never see each other's outcome.
_failed: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_reliability_purgatory_failed", default=False)

# Factories by id of their message bus: the per-call breaker objects only know the bus.
_factories_by_bus: dict[int, weakref.ref[Any]] = {}
_factories: weakref.WeakSet[Any] = weakref.WeakSet()


class PurgatoryAdapter:
    library = LIBRARY
    derive_transitions = False  # state_changed events
    derive_on_read = False

    def name_of(self, factory: Any) -> str | None:
        return None  # the tracked record carries the circuit name

    def read(self, factory: Any, tracked: TrackedBreaker) -> Reading:
        extra = tracked.extra
        return Reading(
            tracked.last_state,
            float(extra.get("failures", 0)),
            _float(extra.get("threshold")),
            _float(extra.get("ttl")),
        )

    def retry_after(self, factory: Any, tracked: TrackedBreaker) -> float | None:
        opened_at = tracked.extra.get("opened_at")
        ttl = tracked.extra.get("ttl")
        if opened_at is None or ttl is None:
            return None
        return max(0.0, float(opened_at) + float(ttl) - time.time())


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


ADAPTER = PurgatoryAdapter()


def _track(registry: BreakerRegistry, factory: Any, context: Any) -> TrackedBreaker:
    key = ("purgatory", id(factory), context.name)
    tracked = registry.get(key)
    if tracked is None:
        tracked = registry.track(
            context,
            ADAPTER,
            key=key,
            name=str(context.name),
            ref_target=factory,
            initial_state=canonical_state(context.state) or "closed",
        )
        tracked.extra.update(
            threshold=context.threshold,
            ttl=context.ttl,
            failures=context.failure_count or 0,
            opened_at=context.opened_at,
        )
    return tracked


def _factory_of(breaker: Any) -> Any:
    ref = _factories_by_bus.get(id(breaker.messagebus))
    return None if ref is None else ref()


def _on_message(registry: BreakerRegistry, bus: Any, message: Any) -> None:
    """``message`` was handled on ``bus``: what a hook on the factory would have been told."""
    kind = _KINDS.get(type(message))
    if kind is None:
        return
    ref = _factories_by_bus.get(id(bus))
    owner = None if ref is None else ref()
    if owner is None:
        return
    name = message.name
    key = ("purgatory", id(owner), name)
    tracked = registry.get(key)
    if kind == "created" or tracked is None:
        tracked = registry.track(owner, ADAPTER, key=key, name=str(name), ref_target=owner)
        if kind == "created":
            tracked.extra.update(threshold=message.threshold, ttl=message.ttl, failures=0)
    if kind == "state_changed":
        state = canonical_state(message.state)
        tracked.record_transition(state)
        tracked.extra["opened_at"] = message.opened_at
        if state == "closed":
            tracked.extra["failures"] = 0
    elif kind == "failed":
        tracked.extra["failures"] = message.failure_count
    elif kind == "recovered":
        tracked.extra["failures"] = 0


_KINDS: dict[type, str] = {}
"""purgatory's message classes -> what they tell (filled by ``instrument``; the created breaker is the
``CreateCircuitBreaker`` command, handled before the ``CircuitBreakerCreated`` event it raises)."""


def _message(message: Any, *args: Any, **kwargs: Any) -> Any:
    return message


def _enter(registry: BreakerRegistry, breaker: Any) -> TrackedBreaker | None:
    factory = _factory_of(breaker)
    return None if factory is None else _track(registry, factory, breaker.context)


def _patched() -> list[tuple[Any, str]]:
    """Every (class, method) this module wraps."""
    import purgatory
    from purgatory.domain import model
    from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker
    from purgatory.service._async.messagebus import AsyncMessageRegistry
    from purgatory.service._sync.circuitbreaker import SyncCircuitBreaker
    from purgatory.service._sync.messagebus import SyncMessageRegistry

    return [
        (purgatory.SyncCircuitBreakerFactory, "__init__"),
        (purgatory.AsyncCircuitBreakerFactory, "__init__"),
        (model.ClosedState, "handle_exception"),
        (model.HalfOpenedState, "handle_exception"),
        (model.OpenedState, "handle_exception"),
        (SyncCircuitBreaker, "__enter__"),
        (SyncCircuitBreaker, "__exit__"),
        (AsyncCircuitBreaker, "__aenter__"),
        (AsyncCircuitBreaker, "__aexit__"),
        (SyncMessageRegistry, "handle"),
        (AsyncMessageRegistry, "handle"),
    ]


def instrument(registry: BreakerRegistry = BREAKERS) -> None:
    """Wrap the factories' ``__init__`` (listen to every new factory), the states' ``handle_exception`` (mark a
    failure) and the per-call breaker's enter/exit, sync and async (count calls and refusals), with wrapt;
    ``uninstrument`` unwraps them."""
    from purgatory.domain import model
    from purgatory.domain.messages import commands, events
    from wrapt import wrap_function_wrapper

    patched = _patched()
    if is_wrapped(*patched[0]):
        return
    opened_error = model.OpenedState
    _KINDS.update(
        {
            commands.CreateCircuitBreaker: "created",
            events.ContextChanged: "state_changed",
            events.CircuitBreakerFailed: "failed",
            events.CircuitBreakerRecovered: "recovered",
        }
    )

    def factory_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
        wrapped(*args, **kwargs)
        adopt_factory(instance, registry)

    # A failure, as the state machine decides it (after purgatory's exclude list has been applied).
    def handle_exception(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        _failed.set(True)
        return wrapped(*args, **kwargs)

    def rejected(tracked: TrackedBreaker | None, exc: BaseException) -> None:
        if tracked is not None:
            tracked.extra["opened_at"] = getattr(exc, "opened_at", tracked.extra.get("opened_at"))
            tracked.record_rejected(exc)

    def finished(tracked: TrackedBreaker | None, before: str | None) -> None:
        failed = _failed.get()
        _failed.set(False)
        if tracked is None:
            return
        if failed:
            tracked.record_failure()
        else:
            tracked.record_success()
        annotate_span(tracked.name, before)

    # The breaker is looked up only when refused: a call that enters is counted (and tracked) by the exit.
    def enter(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except opened_error as exc:
            rejected(_enter(registry, instance), exc)
            raise

    def exit_(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        tracked = _enter(registry, instance)
        before = canonical_state(instance.context.state)
        _failed.set(False)
        try:
            return wrapped(*args, **kwargs)
        finally:
            finished(tracked, before)

    async def aenter(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        try:
            return await wrapped(*args, **kwargs)
        except opened_error as exc:
            rejected(_enter(registry, instance), exc)
            raise

    async def aexit(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        tracked = _enter(registry, instance)
        before = canonical_state(instance.context.state)
        _failed.set(False)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            finished(tracked, before)

    def handle(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        _on_message(registry, instance, _message(*args, **kwargs))
        return result

    async def ahandle(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = await wrapped(*args, **kwargs)
        _on_message(registry, instance, _message(*args, **kwargs))
        return result

    wrappers = [factory_init, factory_init, handle_exception, handle_exception, handle_exception]
    wrappers += [enter, exit_, aenter, aexit, handle, ahandle]
    for (owner, name), wrapper in zip(patched, wrappers, strict=True):
        wrap_function_wrapper(owner, name, wrapper)


def adopt_factory(factory: Any, registry: BreakerRegistry = BREAKERS) -> None:
    """Know one factory (created before instrumentation, or from ``__init__``): its bus is looked at from now on.
    Nothing is added to the factory: it is known by its message bus, weakly."""
    if factory in _factories:
        return
    _factories.add(factory)
    bus_id = id(factory.messagebus)
    _factories_by_bus[bus_id] = weakref.ref(factory)
    weakref.finalize(factory, _factories_by_bus.pop, bus_id, None)


def uninstrument(registry: BreakerRegistry = BREAKERS) -> None:
    from opentelemetry.instrumentation.utils import unwrap

    for owner, name in _patched():
        unwrap(owner, name)
    _factories.clear()
    _factories_by_bus.clear()
    _KINDS.clear()
    registry.clear(LIBRARY)
