"""SQLAlchemy connection pools as OpenTelemetry metrics (``reliability_pool``).

Usage: nothing for ``opentelemetry-instrument``; by hand::

    from otel_reliability.instrumentation.pool import PoolInstrumentor
    PoolInstrumentor().instrument(meter_provider=provider)   # before the engines are created
    engine = create_engine("postgresql+psycopg://app:secret@db:5432/shop", pool_size=10, max_overflow=5)

Works with SQLAlchemy 1.4, 2.0 and 2.1, sync engines and ``create_async_engine``, and every pool created
after instrumentation (pools created before it are picked up on their first checkout). Upstream's SQLAlchemy
instrumentation emits one metric (used/idle) and refuses SQLAlchemy 2.1; HikariCP and the OpenTelemetry
``db.client.connection.*`` semantic conventions are the model here.

Metrics (attribute ``db.client.connection.pool.name`` on all of them):

===========================================  =======================  =================================
``db.client.connection.count``               observable up-down       ``db.client.connection.state`` =
                                                                      ``idle`` / ``used``
``db.client.connection.max``                 observable up-down       pool_size + max_overflow (absent
                                                                      for pools without a bound)
``db.client.connection.idle.max``            observable up-down       connections kept idle (pool_size)
``db.client.connection.pending_requests``    observable up-down       callers inside a checkout now
``db.client.connection.wait_timeout``        observable gauge, s      the pool's checkout timeout
``db.client.connection.timeouts``            counter                  checkouts that gave up (TimeoutError)
``db.client.connection.wait_time``           histogram, s             checkout duration (successful ones)
``db.client.connection.use_time``            histogram, s             checkout to checkin
``db.client.connection.create_time``         histogram, s             opening a DBAPI connection
``db.client.connection.invalidations``       counter                  connections invalidated (lost, ...)
``db.client.connection.errors``              counter                  connections that failed to open or were
                                                                      lost (``error.type``: the DBAPI error)
``db.client.statement_timeout``              observable gauge, s      PostgreSQL only, see
                                                                      ``otel_reliability.instrumentation.
                                                                      statement_timeout``
===========================================  =======================  =================================

Counts and configuration are read from the live pool objects when a reader collects (``QueuePool.checkedout()``,
``checkedin()``, ``size()``, ``_max_overflow``, ``timeout()``), so every reader sees SQLAlchemy's own accounting
and nothing can drift. Only what the pool does not know is measured on the way: pending callers, timeouts and
the three durations. The wait and use times (two per checkout) are queued per pool and handed to the SDK when a
reader collects (``BufferedHistogram`` in ``_published``): the same histograms as a ``record()`` per checkout,
without its ~10 µs on every checkout.

How: ``Pool.connect`` (and ``SingletonThreadPool.connect``, which overrides it) is overridden (a plain function,
not a wrapt wrapper: it runs on every checkout) to count pending callers, time the checkout, count
``sqlalchemy.exc.TimeoutError`` and note when each connection was handed out; the ``connect``, ``checkin``,
``detach`` and ``invalidate`` pool events are listened to on the ``Pool`` class (so every pool, including those
``engine.dispose()`` recreates, is covered; listened again after a ``Pool.dispatch._clear()``: ``_armed``), not
``checkout``: with no checkout listener SQLAlchemy skips its per-checkout event block; ``Pool.__init__`` is
wrapped to track pools weakly; ``Engine.__init__`` is wrapped to learn each pool's URL for its name. Connection
errors are counted at the pool:
a connection that could not be opened (``Pool.connect`` raised a driver error, also a pre-ping's reconnect) or
one found lost (a hard ``invalidate`` event with an exception: a disconnect in a statement, a failed pre-ping,
a failed reset at checkin); each one also marks the Readings stale, so health shows database trouble at once.
No engine-level event (``handle_error``) is listened to: that alone puts every statement of every engine on
SQLAlchemy's event-dispatching path. What we keep per pool and per connection lives beside them (``_tracking``,
``statement_timeout``), never in a pool's ``__dict__`` or a connection's ``info``: both are SQLAlchemy's and the
application's (``recreate()`` copies a pool's attributes; ``info`` is the user's dict).

Pool name: the pool's ``logging_name`` (``create_engine(..., pool_logging_name=...)``) if set, else
``host:port/database`` from the engine URL (``sqlite:<path>`` for SQLite), never the user or the password.
Pools with the same name (two engines on one database, or the old pool that ``engine.dispose()`` replaced while
its connections are still checked out) are summed; configuration counts only the newest pool of an engine.

Pool classes:

- ``QueuePool`` / ``AsyncAdaptedQueuePool``: everything above. ``max_overflow=-1`` (no bound): no ``max``, so
  utilization is unknown rather than wrong.
- ``NullPool``: a new connection per checkout, closed at checkin: ``used`` = checkouts in progress, ``idle`` 0,
  ``idle.max`` 0, no ``max`` (callers never wait).
- ``StaticPool``: one connection shared by every checkout: ``used`` 1 while any checkout holds it, else ``idle``
  1; ``idle.max`` 1, no ``max`` (callers never wait, they share).
- ``SingletonThreadPool``: one connection per thread: ``used`` = checkouts in progress, ``idle`` the other
  connections it keeps, ``idle.max`` its ``pool_size``, no ``max``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from time import perf_counter
from typing import Any

from opentelemetry import metrics
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from otel_reliability import changes, semconv, upstream
from otel_reliability.db.naming import name_from_url
from otel_reliability.instrumentation import on_import, statement_timeout
from otel_reliability.instrumentation._instrumented import classes_defining, override, restore
from otel_reliability.instrumentation.pool import _armed, _metrics, _tracking
from otel_reliability.instrumentation.pool._tracking import (
    _dialect_kinds,
    _dialect_names,
    _lock,
    _PoolState,
    _state,
    _track,
    _weakrefable,
    dialect_of,
    pool_name,
    tracked_pools,
)
from otel_reliability.instrumentation.pool._usage import PoolUsage, usage
from otel_reliability.version import __version__

__all__ = [
    "ERRORS",
    "POOL_NAME",
    "STATE",
    "PoolInstrumentor",
    "PoolUsage",
    "dialect_of",
    "name_from_url",
    "pool_name",
    "tracked_pools",
    "usage",
]

_logger = logging.getLogger(__name__)

_instruments = ("sqlalchemy >= 1.4",)
"""The library this instrumentor patches (the contrib convention: instrument() skips it when absent)."""

POOL_NAME = semconv.ATTR_DB_CLIENT_CONNECTION_POOL_NAME
STATE = semconv.ATTR_DB_CLIENT_CONNECTION_STATE
ERRORS = semconv.METRIC_DB_CLIENT_CONNECTION_ERRORS
# --- the instrumentor -------------------------------------------------------------------------------------------


class PoolInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Entry point ``opentelemetry_instrumentor: reliability_pool``."""

    _wrapped: list[tuple[Any, str]]

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        self._wrapped = []
        self._overridden: list[type] = []
        # SQLAlchemy is patched when the program imports it (a program that never does pays nothing for it).
        self._pending = on_import.when_imported("sqlalchemy", lambda _module: self._patch(**kwargs))

    def _patch(self, **kwargs: Any) -> None:
        import sqlalchemy
        from sqlalchemy.engine.base import Engine
        from sqlalchemy.pool import Pool
        from wrapt import wrap_function_wrapper

        upstream.check_before_patching("sqlalchemy.pool")  # its scratch pools must not be tracked
        meter = metrics.get_meter(
            "otel_reliability.pool", __version__, kwargs.get("meter_provider"), semconv.SCHEMA_URL
        )
        _metrics.create(meter, sqlalchemy.exc.TimeoutError)
        for cls in classes_defining(Pool, "connect"):
            override(cls, "connect", _timed_connect)
            self._overridden.append(cls)
        wrap_function_wrapper(Pool, "__init__", _wrap_pool_init)
        self._wrapped.append((Pool, "__init__"))
        wrap_function_wrapper(Engine, "__init__", _wrap_engine_init)
        self._wrapped.append((Engine, "__init__"))
        _armed.arm(
            [
                ("connect", _on_connect),
                ("checkin", _on_checkin),
                ("detach", _on_detach),
                ("invalidate", _on_invalidate),
                ("soft_invalidate", _on_soft_invalidate),
            ]
        )
        changes.mark_changed()
        _logger.debug("otel-reliability: SQLAlchemy %s pools instrumented", sqlalchemy.__version__)

    def _uninstrument(self, **kwargs: Any) -> None:
        on_import.cancel(getattr(self, "_pending", None))
        if not getattr(self, "_wrapped", None):
            return
        _armed.disarm()
        for cls, attr in self._wrapped:
            unwrap(cls, attr)
        for cls in self._overridden:
            restore(cls, "connect")
        self._wrapped, self._overridden = [], []
        statement_timeout.clear()
        changes.mark_changed()
        _tracking.instrumented.stop()
        _tracking.forget_all()


# --- hooks (every one of them cheap: they run on each checkout) --------------------------------------------------
def _timed_connect(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``Pool.connect`` (an ``override``: it runs on every checkout): counts the pending callers, times the wait,
    counts timeouts and connections that could not be opened, and notes when the connection was handed out.
    Done here rather than in a ``checkout`` event listener: with no such listener SQLAlchemy skips its whole
    per-checkout event block."""

    def connect(self: Any) -> Any:
        inst = _tracking.instrumented.state
        if inst is None:
            return original(self)
        if _armed.each_checkout:  # SQLAlchemy's internals moved (upstream.pools): the slower public path
            _armed.ensure()
            upstream.pools.checking_out(self)
        state = _track(self)
        next(state.entered)
        start = perf_counter()
        try:
            connection = original(self)
        except inst.pool_timeout:
            inst.timeouts.add(1, state.attrs())
            raise
        except Exception as exc:  # the DBAPI could not open a connection (a pre-ping's reconnect included)
            _count_error(state, exc)
            raise
        finally:
            next(state.left)
            if _armed.each_checkout:
                upstream.pools.checking_out(None)
        now = perf_counter()
        state.durations(inst).wait_time.record(now - start)
        try:
            _checked_out(state, connection, now)
        except Exception:  # never fail a checkout that worked; its use time goes unmeasured
            _logger.debug("otel-reliability: could not note a checkout", exc_info=True)
        return connection

    return connect


def _checked_out(state: _PoolState, connection: Any, now: float) -> None:
    """A connection handed out: the start of its use time (kept from the first checkout when a
    ``SingletonThreadPool`` hands the same connection out again), and, once per DBAPI connection, its
    ``statement_timeout``."""
    record = upstream.pools.record_of(connection)
    if record is None:  # not learnt (upstream.pools' fallback): this checkout's use time goes unmeasured
        return
    if record not in state.checked_out_at:
        state.checked_out_at[record] = now
    if statement_timeout.unread(record):  # a new connection: once per DBAPI connection
        pool = state.pool_ref()
        dialect = dialect_of(pool)[0] if pool is not None else ""
        statement_timeout.on_checkout(connection.dbapi_connection, record, state.attrs()[POOL_NAME], dialect)


def _wrap_pool_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
    wrapped(*args, **kwargs)
    _track(instance)


def _wrap_engine_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
    wrapped(*args, **kwargs)
    try:
        dialect = instance.dialect
        if _weakrefable(dialect):
            with _lock:
                _dialect_names[dialect] = name_from_url(instance.url)
                _dialect_kinds[dialect] = (str(dialect.name), bool(getattr(dialect, "is_async", False)))
        pool = instance.pool
        if pool.__dict__.get("_dialect") is dialect:
            _track(pool)
        changes.mark_changed()
    except Exception:  # naming is best effort; never break create_engine
        _logger.debug("otel-reliability: could not name an engine's pool", exc_info=True)


def _record_state(record: Any) -> _PoolState | None:
    pool = upstream.pools.pool_of(record)
    return _state(pool) if pool is not None else None


def _on_connect(dbapi_connection: Any, record: Any) -> None:
    inst = _tracking.instrumented.state
    state = _record_state(record)
    if inst is None or state is None:
        return
    started = getattr(record, "starttime", 0) or 0
    if started:
        inst.create_time.record(max(0.0, time.time() - started), state.attrs())


def _count_error(state: _PoolState, error: BaseException) -> None:
    """A connection that could not be opened or was found lost, counted per pool and error class; health shows it
    at once. Seen at the pool (its ``connect`` and ``invalidate``), not through the ``handle_error`` event: a
    listener of that event marks every dialect as having events, which puts every statement of every engine on
    SQLAlchemy's dialect event path (an event dispatch around each DBAPI execute)."""
    inst = _tracking.instrumented.state
    if inst is None:
        return
    cause = getattr(error, "orig", None) or error  # a DBAPI error SQLAlchemy wrapped
    inst.errors.add(1, {**state.attrs(), semconv.ATTR_ERROR_TYPE: semconv.error_type(cause, qualified=False)})
    changes.mark_changed()


def _on_checkin(dbapi_connection: Any, record: Any) -> None:
    state = _record_state(record)
    if state is None:
        return
    started = state.checked_out_at.pop(record, None)
    inst = _tracking.instrumented.state
    if started is not None and inst is not None:
        state.durations(inst).use_time.record(perf_counter() - started)


def _on_detach(dbapi_connection: Any, record: Any) -> None:
    state = _record_state(record)
    if state is not None:
        state.checked_out_at.pop(record, None)


def _on_invalidate(dbapi_connection: Any, record: Any, exception: Any) -> None:
    inst = _tracking.instrumented.state
    state = _record_state(record)
    if inst is not None and state is not None:
        inst.invalidations.add(1, state.attrs())
        if exception is not None:  # found lost (a disconnect, a failed pre-ping or reset), not invalidated on purpose
            _count_error(state, exception)


def _on_soft_invalidate(dbapi_connection: Any, record: Any, exception: Any) -> None:
    """A connection marked to be replaced at its next checkout: counted as an invalidation, never as an error."""
    inst = _tracking.instrumented.state
    state = _record_state(record)
    if inst is not None and state is not None:
        inst.invalidations.add(1, state.attrs())
