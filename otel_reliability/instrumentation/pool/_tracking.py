"""Which pools exist and what SQLAlchemy does not count for them: pending callers, checkout times, names.

Every pool is tracked weakly (a dropped engine disappears from the metrics at the next collection).
``instrumented.state`` holds the instruments of the active ``PoolInstrumentor`` (None while not instrumented):
the hooks and the first use of a pool report into it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any, NamedTuple

from otel_reliability import changes, semconv
from otel_reliability.instrumentation._instrumented import Instrumented
from otel_reliability.instrumentation._published import BufferedHistogram, HistogramSeries, count_value, counter
from otel_reliability.upstream import pools as upstream_pools

_logger = logging.getLogger(__name__)

POOL_NAME = semconv.ATTR_DB_CLIENT_CONNECTION_POOL_NAME


@dataclass
class _Instruments:
    timeouts: Any
    wait_time: BufferedHistogram
    use_time: BufferedHistogram
    create_time: Any
    invalidations: Any
    errors: Any
    pool_timeout: type[BaseException]  # sqlalchemy.exc.TimeoutError, bound once instead of imported per checkout


instrumented: Instrumented[_Instruments] = Instrumented()
"""While instrumented: the synchronous instruments the checkout hooks record into."""


class _Series(NamedTuple):
    """A pool's wait-time and use-time series, bound to the instruments they were made from."""

    instruments: _Instruments
    wait_time: HistogramSeries
    use_time: HistogramSeries


class _PoolState:
    """What the pool itself does not know: pending callers and the checkout time of each connection in use."""

    __slots__ = ("_attrs", "_series", "checked_out_at", "entered", "left", "pool_ref")

    def __init__(self, pool: Any) -> None:
        key = id(pool)
        # The pool's entry in _states goes with the pool (the callback runs before its id can be reused).
        self.pool_ref = weakref.ref(pool, lambda _ref: _states.pop(key, None))
        # Callers that entered and left a checkout: lock-free counters (32 threads checking out at once must not
        # queue on a lock of ours); pending = entered - left, read at collection.
        self.entered = counter()
        self.left = counter()
        # record -> perf_counter() at checkout; also the number of checkouts in progress for pools that do not
        # count them themselves (NullPool, StaticPool, SingletonThreadPool).
        self.checked_out_at: dict[Any, float] = {}
        self._attrs: dict[str, str] | None = None
        self._series: _Series | None = None

    @property
    def pending(self) -> int:
        return count_value(self.entered) - count_value(self.left)

    def durations(self, inst: _Instruments) -> _Series:
        """The wait-time and use-time series of this pool, bound once per set of instruments."""
        series = self._series
        if series is None or series.instruments is not inst:
            attrs = self.attrs()
            key = attrs[POOL_NAME]  # pools with the same name share their series, as the SDK would sum them
            series = self._series = _Series(inst, inst.wait_time.series(key, attrs), inst.use_time.series(key, attrs))
        return series

    def attrs(self) -> dict[str, str]:
        # Resolved on first use, not at pool creation: create_engine builds the pool before the Engine that
        # knows the URL.
        if self._attrs is None:
            pool = self.pool_ref()
            self._attrs = {POOL_NAME: pool_name(pool) if pool is not None else "unknown"}
            inst = instrumented.state
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
# id(pool) -> its state, beside the pool and never in it: the pool's own __dict__ stays SQLAlchemy's (``recreate()``
# and equality checks on it see nothing of ours). A plain dict by id rather than a WeakKeyDictionary: it is read on
# every checkout and checkin, and each state's weakref callback removes its entry.
_states: dict[int, _PoolState] = {}
_dialect_names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_newest_pool: weakref.WeakKeyDictionary[Any, weakref.ref[Any]] = weakref.WeakKeyDictionary()
_dialect_kinds: weakref.WeakKeyDictionary[Any, tuple[str, bool]] = weakref.WeakKeyDictionary()


def _state(pool: Any) -> _PoolState | None:
    return _states.get(id(pool))


def _track(pool: Any) -> _PoolState:
    state = _state(pool)
    if state is not None:
        return state
    with _lock:
        state = _state(pool)
        if state is None:
            state = _PoolState(pool)
            _states[id(pool)] = state
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
    logging_name = upstream_pools.logging_name(pool)
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


def forget_all() -> None:
    """Drop every pool's state (the instrumentor is uninstrumented)."""
    with _lock:
        _pools.clear()
        _states.clear()


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
