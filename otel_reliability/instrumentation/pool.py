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
the three durations.

How: ``Pool.connect`` (and ``SingletonThreadPool.connect``, which overrides it) is wrapped to count pending
callers, time the checkout and count ``sqlalchemy.exc.TimeoutError``; the ``connect``, ``checkout``,
``checkin``, ``detach`` and ``invalidate`` pool events are listened to on the ``Pool`` class (so every pool,
including those ``engine.dispose()`` recreates, is covered); ``Pool.__init__`` is wrapped to track pools weakly;
``Engine.__init__`` is wrapped to learn each pool's URL for its name. The ``handle_error`` event (on every
engine) counts connection errors: a connection that could not be opened, or one found lost (a disconnect,
also in a pre-ping); each one also marks the Readings stale, so health shows database trouble at once.

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

import importlib.util
import logging
import threading
import time
import weakref
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from opentelemetry.metrics import CallbackOptions, Observation

from otel_reliability import changes, semconv
from otel_reliability.db.naming import name_from_url
from otel_reliability.instrumentation import statement_timeout
from otel_reliability.version import __version__

_logger = logging.getLogger(__name__)

_instruments = ("sqlalchemy >= 1.4",)
"""The library this instrumentor patches (the contrib convention: instrument() skips it when absent)."""

POOL_NAME = semconv.ATTR_DB_CLIENT_CONNECTION_POOL_NAME
STATE = semconv.ATTR_DB_CLIENT_CONNECTION_STATE
ERRORS = semconv.METRIC_DB_CLIENT_CONNECTION_ERRORS
_STATE_ATTR = "_otel_reliability_pool_state"
_RECORD_POOL = "_ConnectionRecord__pool"  # the pool a _ConnectionRecord belongs to (stable since 1.x)


class _PoolState:
    """What the pool itself does not know: pending callers and the checkout time of each connection in use."""

    __slots__ = ("_attrs", "checked_out_at", "lock", "pending", "pool_ref")

    def __init__(self, pool: Any) -> None:
        self.pool_ref = weakref.ref(pool)
        self.lock = threading.Lock()
        self.pending = 0
        # record -> perf_counter() at checkout; also the number of checkouts in progress for pools that do not
        # count them themselves (NullPool, StaticPool, SingletonThreadPool).
        self.checked_out_at: dict[Any, float] = {}
        self._attrs: dict[str, str] | None = None

    def attrs(self) -> dict[str, str]:
        # Resolved on first use, not at pool creation: create_engine builds the pool before the Engine that
        # knows the URL.
        if self._attrs is None:
            pool = self.pool_ref()
            self._attrs = {POOL_NAME: pool_name(pool) if pool is not None else "unknown"}
            inst = _current
            if inst is not None:
                # Counters start at 0 for each pool: Prometheus' increase() cannot see the increment that
                # creates a series, so the first timeout would otherwise never reach an alert.
                inst.timeouts.add(0, self._attrs)
                inst.invalidations.add(0, self._attrs)
            changes.mark_changed()  # a new pool: health lists it from the next call
        return self._attrs


# --- tracking ---------------------------------------------------------------------------------------------------
_lock = threading.Lock()
_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_dialect_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_newest_pool: weakref.WeakKeyDictionary[Any, weakref.ref[Any]] = weakref.WeakKeyDictionary()
_dialect_kinds: weakref.WeakKeyDictionary[Any, tuple[str, bool]] = weakref.WeakKeyDictionary()


def _state(pool: Any) -> _PoolState | None:
    return pool.__dict__.get(_STATE_ATTR)


def _track(pool: Any) -> _PoolState:
    state = _state(pool)
    if state is not None:
        return state
    with _lock:
        state = _state(pool)
        if state is None:
            state = _PoolState(pool)
            pool.__dict__[_STATE_ATTR] = state
            _pools.add(pool)
            dialect = pool.__dict__.get("_dialect")
            if dialect is not None and _weakrefable(dialect):
                _newest_pool[dialect] = weakref.ref(pool)
    return state


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def pool_name(pool: Any) -> str:
    """The ``db.client.connection.pool.name`` of ``pool``."""
    logging_name = getattr(pool, "_orig_logging_name", None)
    if logging_name:
        return str(logging_name)
    dialect = pool.__dict__.get("_dialect")
    if dialect is not None:
        with _lock:
            name = _dialect_names.get(dialect) if _weakrefable(dialect) else None
        if name:
            return name
    return f"{type(pool).__name__}-{id(pool):x}"


def dialect_of(pool: Any) -> tuple[str, bool]:
    """(dialect name, is_async) of the engine that owns ``pool`` (("", False) for a pool without an engine)."""
    dialect = pool.__dict__.get("_dialect")
    if dialect is None or not _weakrefable(dialect):
        return ("", False)
    with _lock:
        return _dialect_kinds.get(dialect, ("", False))


def tracked_pools() -> list[Any]:
    """The live pools created (or first used) since instrumentation."""
    with _lock:
        return list(_pools)


def _is_newest(pool: Any) -> bool:
    dialect = pool.__dict__.get("_dialect")
    if dialect is None or not _weakrefable(dialect):
        return True
    with _lock:
        ref = _newest_pool.get(dialect)
    return ref is None or ref() is pool


# --- reading a pool ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PoolFigures:
    """One pool's state now. ``maximum`` None: the pool puts no bound on connections (callers never wait)."""

    used: int
    idle: int
    pending: int
    maximum: int | None
    idle_max: int | None
    timeout: float | None


def figures(pool: Any) -> PoolFigures:
    """Read ``pool`` now; see the module docstring for what each pool class reports."""
    state = _state(pool)
    pending = max(0, state.pending) if state is not None else 0
    in_progress = len(state.checked_out_at) if state is not None else 0
    if callable(getattr(pool, "checkedout", None)) and hasattr(pool, "_max_overflow"):  # QueuePool and subclasses
        size = int(pool.size())
        max_overflow = int(pool._max_overflow)
        bounded = max_overflow > -1 and size > 0
        return PoolFigures(
            used=max(0, int(pool.checkedout())),
            idle=max(0, int(pool.checkedin())),
            pending=pending,
            maximum=size + max_overflow if bounded else None,
            idle_max=size if size > 0 else None,
            timeout=float(pool.timeout()),
        )
    if any(cls.__name__ == "StaticPool" for cls in type(pool).__mro__):
        opened = 1 if "connection" in pool.__dict__ else 0
        used = 1 if in_progress else 0
        return PoolFigures(
            used=used, idle=max(0, opened - used), pending=pending, maximum=None, idle_max=1, timeout=None
        )
    if hasattr(pool, "_all_conns"):  # SingletonThreadPool
        opened = len(pool._all_conns)
        return PoolFigures(
            used=in_progress,
            idle=max(0, opened - in_progress),
            pending=pending,
            maximum=None,
            idle_max=int(getattr(pool, "size", 0)),
            timeout=None,
        )
    return PoolFigures(used=in_progress, idle=0, pending=pending, maximum=None, idle_max=0, timeout=None)


def _by_name() -> dict[str, list[tuple[Any, PoolFigures, bool]]]:
    out: dict[str, list[tuple[Any, PoolFigures, bool]]] = {}
    for pool in tracked_pools():
        state = _state(pool)
        if state is None:
            continue
        try:
            fig = figures(pool)
        except Exception:  # a pool half torn down; it will be gone at the next collection
            _logger.debug("otel-reliability: could not read pool", exc_info=True)
            continue
        out.setdefault(state.attrs()[POOL_NAME], []).append((pool, fig, _is_newest(pool)))
    return out


def _sum(values: Iterable[int | float | None]) -> float | None:
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total


# --- the instrumentor -------------------------------------------------------------------------------------------
@dataclass
class _Instruments:
    timeouts: Any
    wait_time: Any
    use_time: Any
    create_time: Any
    invalidations: Any
    errors: Any
    pool_timeout: type[BaseException]  # sqlalchemy.exc.TimeoutError, bound once instead of imported per checkout


_current: _Instruments | None = None

# Seconds; connection checkouts are usually sub-millisecond, a timeout is 30 s by default.
_DURATION_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class PoolInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Entry point ``opentelemetry_instrumentor: reliability_pool``."""

    _wrapped: list[tuple[Any, str]]
    _listeners: list[tuple[Any, str, Any]]

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        global _current
        self._wrapped = []
        self._listeners = []
        if importlib.util.find_spec("sqlalchemy") is None:
            return
        import sqlalchemy
        from sqlalchemy import event
        from sqlalchemy.engine.base import Engine
        from sqlalchemy.pool import Pool
        from wrapt import wrap_function_wrapper

        meter = metrics.get_meter("otel_reliability.pool", __version__, meter_provider=kwargs.get("meter_provider"))
        hist = {"explicit_bucket_boundaries_advisory": list(_DURATION_BUCKETS)}
        _current = _Instruments(
            timeouts=meter.create_counter(
                semconv.METRIC_DB_CLIENT_CONNECTION_TIMEOUTS,
                "{timeout}",
                "Checkouts that gave up waiting for a connection.",
            ),
            wait_time=meter.create_histogram(
                semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIME,
                semconv.UNIT_SECONDS,
                "Time it took to obtain a connection from the pool.",
                **hist,
            ),
            use_time=meter.create_histogram(
                semconv.METRIC_DB_CLIENT_CONNECTION_USE_TIME,
                semconv.UNIT_SECONDS,
                "Time between checkout and checkin of a connection.",
                **hist,
            ),
            create_time=meter.create_histogram(
                semconv.METRIC_DB_CLIENT_CONNECTION_CREATE_TIME,
                semconv.UNIT_SECONDS,
                "Time it took to open a new connection.",
                **hist,
            ),
            invalidations=meter.create_counter(
                semconv.METRIC_DB_CLIENT_CONNECTION_INVALIDATIONS,
                "{connection}",
                "Connections invalidated (lost, failed pre-ping, explicitly invalidated).",
            ),
            errors=meter.create_counter(
                ERRORS,
                "{error}",
                "Connections that could not be opened or were found lost, by error type.",
            ),
            pool_timeout=sqlalchemy.exc.TimeoutError,
        )
        meter.create_observable_up_down_counter(
            semconv.METRIC_DB_CLIENT_CONNECTION_COUNT,
            [_observe_count],
            "{connection}",
            "Connections in the pool, by state.",
        )
        meter.create_observable_up_down_counter(
            semconv.METRIC_DB_CLIENT_CONNECTION_MAX,
            [_observe_max],
            "{connection}",
            "Most connections the pool will open.",
        )
        meter.create_observable_up_down_counter(
            semconv.METRIC_DB_CLIENT_CONNECTION_IDLE_MAX,
            [_observe_idle_max],
            "{connection}",
            "Most idle connections kept.",
        )
        meter.create_observable_up_down_counter(
            semconv.METRIC_DB_CLIENT_CONNECTION_PENDING_REQUESTS,
            [_observe_pending],
            "{request}",
            "Callers waiting for a connection now.",
        )
        meter.create_observable_gauge(
            semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIMEOUT,
            [_observe_timeout],
            semconv.UNIT_SECONDS,
            "How long a checkout waits before it fails.",
        )
        statement_timeout.create_gauge(meter, POOL_NAME)

        for cls in _classes_defining(Pool, "connect"):
            wrap_function_wrapper(cls, "connect", _wrap_connect)
            self._wrapped.append((cls, "connect"))
        wrap_function_wrapper(Pool, "__init__", _wrap_pool_init)
        self._wrapped.append((Pool, "__init__"))
        wrap_function_wrapper(Engine, "__init__", _wrap_engine_init)
        self._wrapped.append((Engine, "__init__"))
        for name, fn in (
            ("connect", _on_connect),
            ("checkout", _on_checkout),
            ("checkin", _on_checkin),
            ("detach", _on_detach),
            ("invalidate", _on_invalidate),
            ("soft_invalidate", _on_invalidate),
        ):
            event.listen(Pool, name, fn)
            self._listeners.append((Pool, name, fn))
        event.listen(Engine, "handle_error", _on_error)
        self._listeners.append((Engine, "handle_error", _on_error))
        changes.mark_changed()
        _logger.debug("otel-reliability: SQLAlchemy %s pools instrumented", sqlalchemy.__version__)

    def _uninstrument(self, **kwargs: Any) -> None:
        global _current
        if not getattr(self, "_wrapped", None) and not getattr(self, "_listeners", None):
            return
        from sqlalchemy import event

        for target, name, fn in self._listeners:
            event.remove(target, name, fn)
        for cls, attr in self._wrapped:
            unwrap(cls, attr)
        self._wrapped, self._listeners = [], []
        statement_timeout.clear()
        changes.mark_changed()
        _current = None
        with _lock:
            pools = list(_pools)
            _pools.clear()
        for pool in pools:
            pool.__dict__.pop(_STATE_ATTR, None)


def _classes_defining(base: type, attr: str) -> Iterator[type]:
    seen: set[type] = set()
    stack = [base]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if attr in cls.__dict__:
            yield cls
        stack.extend(cls.__subclasses__())


# --- hooks (every one of them cheap: they run on each checkout) --------------------------------------------------
def _wrap_connect(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    inst = _current
    if inst is None:
        return wrapped(*args, **kwargs)
    state = _track(instance)
    with state.lock:
        state.pending += 1
    start = time.perf_counter()
    try:
        connection = wrapped(*args, **kwargs)
    except inst.pool_timeout:
        inst.timeouts.add(1, state.attrs())
        raise
    finally:
        with state.lock:
            state.pending -= 1
    inst.wait_time.record(time.perf_counter() - start, state.attrs())
    return connection


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
    pool = getattr(record, _RECORD_POOL, None)
    return _state(pool) if pool is not None else None


def _on_connect(dbapi_connection: Any, record: Any) -> None:
    inst = _current
    state = _record_state(record)
    if inst is None or state is None:
        return
    started = getattr(record, "starttime", 0) or 0
    if started:
        inst.create_time.record(max(0.0, time.time() - started), state.attrs())


def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    state = _record_state(record)
    if state is None:
        return
    state.checked_out_at[record] = time.perf_counter()
    if not record.info.get(statement_timeout.READ):  # a new connection: once per DBAPI connection
        pool = state.pool_ref()
        dialect = dialect_of(pool)[0] if pool is not None else ""
        statement_timeout.on_checkout(dbapi_connection, record, state.attrs()[POOL_NAME], dialect)


def _on_error(context: Any) -> None:
    """A connection that could not be opened (no Connection yet) or was found lost: counted per pool."""
    inst = _current
    if inst is None or not (context.connection is None or context.is_disconnect):
        return  # a failing statement (syntax, constraint, ...) is the app's error, not the pool's
    engine = context.engine
    pool = getattr(engine, "pool", None) if engine is not None else None
    if pool is None:
        return
    error = context.original_exception
    attrs = {
        **_track(pool).attrs(),
        semconv.ATTR_ERROR_TYPE: type(error).__qualname__ if error is not None else "_OTHER",
    }
    inst.errors.add(1, attrs)
    changes.mark_changed()


def _on_checkin(dbapi_connection: Any, record: Any) -> None:
    state = _record_state(record)
    if state is None:
        return
    started = state.checked_out_at.pop(record, None)
    inst = _current
    if started is not None and inst is not None:
        inst.use_time.record(time.perf_counter() - started, state.attrs())


def _on_detach(dbapi_connection: Any, record: Any) -> None:
    state = _record_state(record)
    if state is not None:
        state.checked_out_at.pop(record, None)


def _on_invalidate(dbapi_connection: Any, record: Any, exception: Any) -> None:
    inst = _current
    state = _record_state(record)
    if inst is not None and state is not None:
        inst.invalidations.add(1, state.attrs())


# --- observable callbacks ---------------------------------------------------------------------------------------
def _observe_count(options: CallbackOptions) -> Iterator[Observation]:
    for name, rows in _by_name().items():
        yield Observation(sum(f.used for _, f, _n in rows), {POOL_NAME: name, STATE: "used"})
        yield Observation(sum(f.idle for _, f, _n in rows), {POOL_NAME: name, STATE: "idle"})


def _observe_max(options: CallbackOptions) -> Iterator[Observation]:
    for name, rows in _by_name().items():
        value = _sum(f.maximum for _, f, newest in rows if newest)
        if value is not None:
            yield Observation(value, {POOL_NAME: name})


def _observe_idle_max(options: CallbackOptions) -> Iterator[Observation]:
    for name, rows in _by_name().items():
        value = _sum(f.idle_max for _, f, newest in rows if newest)
        if value is not None:
            yield Observation(value, {POOL_NAME: name})


def _observe_pending(options: CallbackOptions) -> Iterator[Observation]:
    for name, rows in _by_name().items():
        yield Observation(sum(f.pending for _, f, _n in rows), {POOL_NAME: name})


def _observe_timeout(options: CallbackOptions) -> Iterator[Observation]:
    for name, rows in _by_name().items():
        timeouts = [f.timeout for _, f, newest in rows if newest and f.timeout is not None]
        if timeouts:
            yield Observation(max(timeouts), {POOL_NAME: name})
