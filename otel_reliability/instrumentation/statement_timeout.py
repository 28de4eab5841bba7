"""The PostgreSQL ``statement_timeout`` each pool's sessions really run with, read on each new connection.

Why: a ``statement_timeout`` set in a config file, a ``connect_args`` option or ``ALTER DATABASE ... SET`` can be
lost in a migration, a new role or a pooler in between; then one runaway query holds locks for hours. Not read
with ``SHOW`` inside a health request (that holds one of the app's connections for it), nor in the background on
an idle pooled connection (under a saturated pool there is none, and its checkouts would show in the app's pool
metrics).

Here it is read once per DBAPI connection, on that connection's first checkout (the pool's ``checkout`` event,
so every ``connect`` listener of the app has already run: the value is what the app's sessions see). It costs
one round trip per new connection, inside a checkout the app makes anyway: it never waits in the pool queue, is
never an extra checkout, and is known as soon as the first connection is used, saturated pool or not. The query
runs with instrumentation suppressed (it is not app traffic) and the connection is handed on as it was found
(the transaction the read opened is rolled back).

The value is exported as ``db.client.statement_timeout`` (seconds, 0 = disabled; Prometheus
``db_client_statement_timeout_seconds``) per pool; ``server_settings()`` keeps the server's own text (``5min``),
which is not a metric, for ``GET /api/health/db-timeout``. Other dialects are "not supported"; that is not an
error. A failed read keeps the last value and records the error.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from otel_reliability import changes, semconv
from otel_reliability.instrumentation._instrumented import Callback

_logger = logging.getLogger(__name__)

SQL = "SELECT current_setting('statement_timeout'), setting FROM pg_settings WHERE name = 'statement_timeout'"
METRIC = semconv.METRIC_DB_CLIENT_STATEMENT_TIMEOUT
# Connection record -> which of its DBAPI connections was read: (id, the record's ``starttime``, set at each of
# its connects), so a record that reconnects is read again. Kept beside the record, never in its ``info``: that
# dict is the application's. Not the DBAPI connection itself: it is rarely weak-referenceable (sqlite3,
# SQLAlchemy's async adapters), and a strong reference would keep a detached connection open.
_read_tokens: weakref.WeakKeyDictionary[Any, tuple[int, float]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TimeoutReading:
    """What one pool's server said. ``shown`` is the server's own text (``5min``), ``seconds`` the same number."""

    pool_name: str
    dialect: str
    supported: bool
    shown: str | None = None
    seconds: float | None = None
    sampled_at: float | None = None  # time.time() of the last successful read
    error: str | None = None


_lock = threading.Lock()
_results: dict[str, TimeoutReading] = {}


def create_gauge(meter: Meter, pool_attribute: str, gated: Callable[[Callback], Any]) -> None:
    """The ``db.client.statement_timeout`` gauge (a handful of points: observable is cheap enough); ``gated``
    makes its callbacks quiet while the pool instrumentor is not instrumented (``Instrumented.gate``)."""

    def observe(options: CallbackOptions) -> list[Observation]:
        with _lock:
            return [
                Observation(r.seconds, {pool_attribute: r.pool_name})
                for r in _results.values()
                if r.seconds is not None
            ]

    meter.create_observable_gauge(
        METRIC,
        gated(observe),
        semconv.UNIT_SECONDS,
        "The statement_timeout the database applies to this pool's sessions (0: disabled).",
    )


def _token(record: Any) -> tuple[int, float]:
    return (id(record.dbapi_connection), getattr(record, "starttime", 0.0))


def unread(record: Any) -> bool:
    """Whether the DBAPI connection ``record`` holds now has not been read yet."""
    try:
        return _read_tokens.get(record) != _token(record)
    except TypeError:  # a record that cannot be weakly referenced: never read
        return False


def on_checkout(dbapi_connection: Any, record: Any, pool_name: str, dialect: str) -> None:
    """Read the value on ``dbapi_connection`` if this connection has not been read yet."""
    token = _token(record)
    if dbapi_connection is None or _read_tokens.get(record) == token:
        return
    _read_tokens[record] = token
    if dialect != "postgresql":
        _store(TimeoutReading(pool_name, dialect or "unknown", supported=False))
        return
    try:
        shown, setting = _read(dbapi_connection)
    except Exception as exc:
        with _lock:
            old = _results.get(pool_name) or TimeoutReading(pool_name, "postgresql", supported=True)
            _results[pool_name] = replace(old, error=f"{type(exc).__name__}: could not read statement_timeout")
        _logger.debug("otel-reliability: statement_timeout not read on %s", pool_name, exc_info=True)
        return
    _store(
        TimeoutReading(
            pool_name,
            "postgresql",
            supported=True,
            shown=str(shown),
            seconds=float(setting) / 1000.0,
            sampled_at=time.time(),
        )
    )


def _read(dbapi_connection: Any) -> tuple[Any, Any]:
    with suppress_instrumentation():
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(SQL)
            row = cursor.fetchone()
        finally:
            cursor.close()
        if not getattr(dbapi_connection, "autocommit", False):
            dbapi_connection.rollback()  # hand the connection on outside a transaction, as the pool gave it
    if not row:
        raise LookupError("no statement_timeout row")
    return row[0], row[1]


def _store(reading: TimeoutReading) -> None:
    with _lock:
        old = _results.get(reading.pool_name)
        _results[reading.pool_name] = reading
    if old is None or (old.seconds, old.supported) != (reading.seconds, reading.supported):
        changes.mark_changed()


def server_settings() -> dict[str, TimeoutReading]:
    """The latest reading per pool name (for the db-timeout view: the server's own text is not a metric)."""
    with _lock:
        return dict(_results)


def clear() -> None:
    with _lock:
        _results.clear()
    _read_tokens.clear()
