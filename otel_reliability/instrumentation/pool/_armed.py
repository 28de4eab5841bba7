"""Our pool event listeners on SQLAlchemy's ``Pool`` class, and keeping them there.

``Pool.dispatch._clear()`` removes every class-level pool listener, ours included, for the rest of the process:
SQLAlchemy's own ``PoolEventsTest`` does it in its teardown, and a user's test set-up can do the same. Nothing
would fail; checkin, invalidation, detach and connect events would silently stop being counted. So:

- the class-level dispatch's ``_clear`` is wrapped (wrapt, on SQLAlchemy's generated ``PoolEventsDispatch``
  class): right after a clear of the ``Pool`` class's dispatch, our listeners are listened again;
- any other way of removing them (``Pool.dispatch.checkin.clear()``, ...) is noticed at the next collection
  (``ensure``, called from a collection callback): they are listened again and one DEBUG line says so.

Nothing is checked per checkout (a ``fn in pool.dispatch.checkin`` test costs about a microsecond), except where
``_clear`` is not what ``otel_reliability.upstream.pools`` checks: then ``ensure`` runs on every checkout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from otel_reliability import upstream
from otel_reliability.instrumentation._instrumented import is_wrapped, unwrap_own

_logger = logging.getLogger(__name__)

Listener = tuple[str, Callable[..., None]]

_armed: list[Listener] = []
_sqlalchemy: list[Any] = []
"""(``sqlalchemy.event``, ``Pool``) as ``arm`` found them. ``ensure`` runs in collection callbacks, on the readings'
thread, while the SDK holds its measurement lock: an ``import sqlalchemy...`` there waits for the module lock of a
SQLAlchemy module the main thread is still importing, whose post-import hook waits for the SDK's lock (a
deadlock, seen at start-up). So nothing is imported there."""
_wrapped: list[type] = []  # the dispatch classes whose _clear we wrapped
each_checkout = False
"""Whether each checkout takes the slower public path (``ensure``, the pool noted for ``upstream.pools``): where
``_clear`` or a connection's record is not the shape ``upstream.pools`` checks."""


def arm(listeners: Sequence[Listener]) -> None:
    """Listen ``listeners`` on ``Pool`` and keep them listened until ``disarm``."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool
    from wrapt import wrap_function_wrapper

    global each_checkout
    records = upstream.pools.record_events()  # a checkout's record only from the public checkout event
    _sqlalchemy[:] = [event, Pool]
    _armed[:] = [*listeners, *([("checkout", upstream.pools.on_checkout)] if records else [])]
    for name, fn in _armed:
        event.listen(Pool, name, fn)
    # _clear moved: ensure() on each checkout; records from events: the pool being checked out noted
    each_checkout = records or not upstream.usable("sqlalchemy.dispatch_clear")
    dispatch_cls = type(Pool.dispatch)
    if not each_checkout and not is_wrapped(dispatch_cls, "_clear"):
        _wrapped.append(dispatch_cls)
        wrap_function_wrapper(dispatch_cls, "_clear", _after_clear)


def disarm() -> None:
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    global each_checkout
    listeners, _armed[:], each_checkout = list(_armed), [], False
    for name, fn in listeners:
        if event.contains(Pool, name, fn):
            event.remove(Pool, name, fn)
    for dispatch_cls in _wrapped:  # _clear is inherited from _Dispatch: leave the class as SQLAlchemy made it
        unwrap_own(dispatch_cls, "_clear")
    _wrapped.clear()


def ensure() -> bool:
    """Listen again whichever of ours is no longer listened; True if any was missing."""
    if not _armed or not _sqlalchemy:
        return False
    event, pool_class = _sqlalchemy
    missing = [(name, fn) for name, fn in _armed if not event.contains(pool_class, name, fn)]
    for name, fn in missing:
        event.listen(pool_class, name, fn)
    if missing:
        _logger.debug("otel-reliability: pool listeners were removed; listened again: %s", [n for n, _ in missing])
    return bool(missing)


def _after_clear(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    result = wrapped(*args, **kwargs)
    try:
        from sqlalchemy.pool import Pool

        if instance is Pool.dispatch:  # the class-level dispatch (a pool's own dispatch holds none of ours)
            ensure()
    except Exception:  # never break the caller's clear
        _logger.debug("otel-reliability: could not listen to pool events again", exc_info=True)
    return result
