"""purgatory (3.x): every breaker of every ``SyncCircuitBreakerFactory`` / ``AsyncCircuitBreakerFactory``
created after instrumentation.

How, and why this way:

- A purgatory breaker is a *name inside a factory* (the factory's unit of work stores its state, in memory
  or in Redis); it exists from the factory's first ``get_breaker(name)`` (the decorator calls it on the
  first call). The factory is held weakly: when it goes, its breakers go.
- Each factory gets one hook through purgatory's public listener API (``factory.add_listener``): breaker
  created, state changed (the transitions, and the state we report), failed (the consecutive failures),
  recovered. The hook is synchronous for both factories, so it works the same for sync and async.
  State and failure count come from these events rather than from the unit of work, which for Redis (and
  for any async repository) cannot be read synchronously at collection time.
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

from otel_reliability.instrumentation.breakers._registry import (
    REGISTRY,
    BreakerRegistry,
    Reading,
    TrackedBreaker,
    annotate_span,
    canonical_state,
)

LIBRARY = "purgatory"
_ORIGINALS = "_otel_reliability_originals"
# Set by the state machine when it takes an exception as a failure; per thread and per task, so concurrent
# calls through one shared in-memory context never see each other's outcome.
_failed: contextvars.ContextVar[bool] = contextvars.ContextVar("otel_reliability_purgatory_failed", default=False)
_HOOK = "_otel_reliability_hook"

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


def _make_hook(registry: BreakerRegistry, factory: Any) -> Any:
    factory_ref = weakref.ref(factory)

    def hook(name: str, event_type: str, event: Any) -> None:
        owner = factory_ref()
        if owner is None:
            return
        key = ("purgatory", id(owner), name)
        tracked = registry.get(key)
        if event_type == "circuit_breaker_created" or tracked is None:
            tracked = registry.track(owner, ADAPTER, key=key, name=str(name), ref_target=owner)
            if event_type == "circuit_breaker_created":
                tracked.extra.update(threshold=event.threshold, ttl=event.ttl, failures=0)
        if event_type == "state_changed":
            state = canonical_state(event.state)
            tracked.record_transition(state)
            tracked.extra["opened_at"] = event.opened_at
            if state == "closed":
                tracked.extra["failures"] = 0
        elif event_type == "failed":
            tracked.extra["failures"] = event.failure_count
        elif event_type == "recovered":
            tracked.extra["failures"] = 0

    return hook


def _enter(registry: BreakerRegistry, breaker: Any, error_cls: type) -> TrackedBreaker | None:
    factory = _factory_of(breaker)
    return None if factory is None else _track(registry, factory, breaker.context)


def instrument(registry: BreakerRegistry = REGISTRY) -> None:
    import purgatory
    from purgatory.domain import model
    from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker
    from purgatory.service._sync.circuitbreaker import SyncCircuitBreaker

    if _ORIGINALS in model.Context.__dict__:
        return
    opened_error = model.OpenedState
    originals: dict[tuple[Any, str], Any] = {}

    def patch(owner: Any, name: str, replacement: Any) -> None:
        originals[(owner, name)] = owner.__dict__[name]
        setattr(owner, name, replacement)

    def wrap_factory_init(factory_cls: Any) -> None:
        original = factory_cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            adopt_factory(self, registry)

        patch(factory_cls, "__init__", __init__)

    wrap_factory_init(purgatory.SyncCircuitBreakerFactory)
    wrap_factory_init(purgatory.AsyncCircuitBreakerFactory)

    # A failure, as the state machine decides it (after purgatory's exclude list has been applied).
    for state_cls in (model.ClosedState, model.HalfOpenedState, model.OpenedState):
        original_handle = state_cls.handle_exception

        def handle_exception(self: Any, context: Any, exc: BaseException, _original: Any = original_handle) -> None:
            _failed.set(True)
            return _original(self, context, exc)  # type: ignore[no-any-return]

        patch(state_cls, "handle_exception", handle_exception)

    def rejected(tracked: TrackedBreaker | None, exc: BaseException, breaker: Any) -> None:
        if tracked is not None:
            tracked.extra["opened_at"] = getattr(exc, "opened_at", tracked.extra.get("opened_at"))
            tracked.record_rejected(exc)

    def finished(tracked: TrackedBreaker | None, breaker: Any, before: str | None) -> None:
        failed = _failed.get()
        _failed.set(False)
        if tracked is None:
            return
        if failed:
            tracked.record_failure()
        else:
            tracked.record_success()
        annotate_span(tracked.name, before)

    sync_enter, sync_exit = SyncCircuitBreaker.__enter__, SyncCircuitBreaker.__exit__

    def __enter__(self: Any) -> Any:
        tracked = _enter(registry, self, opened_error)
        try:
            return sync_enter(self)
        except opened_error as exc:
            rejected(tracked, exc, self)
            raise

    def __exit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> None:
        tracked = _enter(registry, self, opened_error)
        before = canonical_state(self.context.state)
        _failed.set(False)
        try:
            sync_exit(self, exc_type, exc, tb)
        finally:
            finished(tracked, self, before)

    async_enter, async_exit = AsyncCircuitBreaker.__aenter__, AsyncCircuitBreaker.__aexit__

    async def __aenter__(self: Any) -> Any:
        tracked = _enter(registry, self, opened_error)
        try:
            return await async_enter(self)
        except opened_error as exc:
            rejected(tracked, exc, self)
            raise

    async def __aexit__(self: Any, exc_type: Any, exc: Any, tb: Any) -> None:
        tracked = _enter(registry, self, opened_error)
        before = canonical_state(self.context.state)
        _failed.set(False)
        try:
            await async_exit(self, exc_type, exc, tb)
        finally:
            finished(tracked, self, before)

    patch(SyncCircuitBreaker, "__enter__", __enter__)
    patch(SyncCircuitBreaker, "__exit__", __exit__)
    patch(AsyncCircuitBreaker, "__aenter__", __aenter__)
    patch(AsyncCircuitBreaker, "__aexit__", __aexit__)
    setattr(model.Context, _ORIGINALS, originals)


def adopt_factory(factory: Any, registry: BreakerRegistry = REGISTRY) -> None:
    """Listen to one factory (created before instrumentation, or from ``__init__``), once."""
    if getattr(factory, _HOOK, None) is not None:
        return
    hook = _make_hook(registry, factory)
    factory.add_listener(hook)
    setattr(factory, _HOOK, hook)
    _factories.add(factory)
    _factories_by_bus[id(factory.messagebus)] = weakref.ref(factory)
    bus_id = id(factory.messagebus)
    weakref.finalize(factory, _factories_by_bus.pop, bus_id, None)


def uninstrument(registry: BreakerRegistry = REGISTRY) -> None:
    from purgatory.domain import model

    originals = model.Context.__dict__.get(_ORIGINALS)
    if originals is None:
        return
    for (owner, name), original in originals.items():
        setattr(owner, name, original)
    delattr(model.Context, _ORIGINALS)
    for factory in list(_factories):
        hook = getattr(factory, _HOOK, None)
        if hook is not None:
            factory.remove_listener(hook)
            delattr(factory, _HOOK)
    _factories_by_bus.clear()
    registry.clear(LIBRARY)
