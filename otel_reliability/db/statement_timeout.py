"""The PostgreSQL ``statement_timeout`` each pool's sessions really run with, read in the background.

Why: a ``statement_timeout`` set in a config file, a ``connect_args`` option or ``ALTER DATABASE ... SET`` can be
lost in a migration, a new role or a pooler in between; then one runaway query holds locks for hours. The seed
read it with ``SHOW`` inside a health request, holding one of the app's connections for it. Here a background
thread reads it at most every ``OTEL_RELIABILITY_STATEMENT_TIMEOUT_INTERVAL`` seconds (default 300) per pool, and
the value is exported as ``db.client.statement_timeout`` (seconds, 0 = disabled; Prometheus
``db_client_statement_timeout_seconds``). ``GET /api/health/db-timeout`` shows it next to the expected value.

Which connection is used, so that no request ever waits for it:

- sync ``QueuePool``: a pooled connection, only at a moment when the pool has an idle connection and nobody
  is waiting for one; otherwise this round is skipped and retried a few seconds later. The check-out lasts one
  ``SELECT`` (well under a millisecond), so it sees exactly what the app's sessions see, including settings made
  in ``connect`` event listeners. (A request that arrives within that millisecond finds one connection fewer,
  like with any other concurrent request; it does not wait unless the pool was already at its limit.)
- ``NullPool`` / ``SingletonThreadPool``: a normal checkout (it never waits; it opens a connection of its own).
- async engines (asyncpg, psycopg async): the pool's connections belong to the app's event loop and cannot be
  used from this thread. A short-lived connection is opened with the pool's own creator (same URL and
  ``connect_args``) on a private event loop and closed at once: for that moment the database sees one
  connection more than ``pool_size + max_overflow``; settings made only in ``connect`` event listeners are not
  seen by it.
- ``StaticPool``: not read (its one connection is shared by every caller, a concurrent query could break it).

Other dialects report "not supported"; that is not an error. Failures to read (the database is down) keep the
last value read and are reported in the view.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

_logger = logging.getLogger(__name__)

SQL = "SELECT current_setting('statement_timeout'), setting FROM pg_settings WHERE name = 'statement_timeout'"
_RETRY_TICK = 5.0  # seconds between attempts while a pool has no idle connection


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
_last_attempt: dict[str, float] = {}
_enabled = False
_thread: threading.Thread | None = None
_stop = threading.Event()


def start(meter: Meter) -> None:
    """Register the gauge and enable the sampler (its thread starts when the first PostgreSQL engine appears)."""
    global _enabled
    meter.create_observable_gauge(
        "db.client.statement_timeout",
        [_observe],
        "s",
        "The statement_timeout the database applies to this pool's sessions (0: disabled).",
    )
    with _lock:
        _enabled = True
        _stop.clear()


def stop() -> None:
    global _enabled, _thread
    with _lock:
        _enabled = False
        _stop.set()
        thread, _thread = _thread, None
        _results.clear()
        _last_attempt.clear()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout=2)


def ensure_running() -> None:
    """Start the background thread if enabled and not alive (also after a fork, which loses threads)."""
    global _thread
    with _lock:
        if not _enabled or (_thread is not None and _thread.is_alive()):
            return
        _stop.clear()
        _thread = threading.Thread(target=_run, name="otel-reliability-statement-timeout", daemon=True)
        _thread.start()


def _interval() -> float:
    from otel_reliability import config

    return float(config.settings().statement_timeout_interval)


def _run() -> None:
    while not _stop.is_set():
        try:
            sample_due()
        except Exception:
            _logger.debug("otel-reliability: statement_timeout sampling failed", exc_info=True)
        if _stop.wait(min(_RETRY_TICK, _interval())):
            return


def sample_due(force: bool = False) -> dict[str, TimeoutReading]:
    """Read every pool whose last read is older than the interval (all of them with ``force``)."""
    from otel_reliability.instrumentation import pool as pools

    interval = _interval()
    now = time.monotonic()
    for p in pools.tracked_pools():
        name = pools.pool_name(p)
        dialect, is_async = pools.dialect_of(p)
        if dialect != "postgresql":
            with _lock:
                _results[name] = TimeoutReading(name, dialect or "unknown", supported=False)
            continue
        with _lock:
            last = _last_attempt.get(name)
        if not force and last is not None and now - last < interval:
            continue
        _sample_one(p, name, is_async)
    return server_settings()


def _sample_one(pool: Any, name: str, is_async: bool) -> None:
    try:
        row = _read_with_private_loop(pool) if is_async else _read_pooled(pool)
    except Exception as exc:
        with _lock:
            _last_attempt[name] = time.monotonic()
            old = _results.get(name) or TimeoutReading(name, "postgresql", supported=True)
            _results[name] = replace(old, error=f"{type(exc).__name__}: could not read statement_timeout")
        return
    if row is None:  # no idle connection now: try again at the next tick
        return
    shown, millis = row
    with _lock:
        _last_attempt[name] = time.monotonic()
        _results[name] = TimeoutReading(
            name,
            "postgresql",
            supported=True,
            shown=str(shown),
            seconds=float(millis) / 1000.0,
            sampled_at=time.time(),
        )


def _read_pooled(pool: Any) -> tuple[str, str] | None:
    from otel_reliability.instrumentation import pool as pools

    if any(cls.__name__ == "StaticPool" for cls in type(pool).__mro__):
        raise RuntimeError("StaticPool is not read")
    if callable(getattr(pool, "checkedin", None)):
        state = pools._state(pool)
        if pool.checkedin() < 1 or (state is not None and state.pending > 0):
            return None
    connection = pool.connect()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(SQL)
            row = cursor.fetchone()
        finally:
            cursor.close()
    finally:
        connection.close()
    return (row[0], row[1]) if row else None


def _read_with_private_loop(pool: Any) -> tuple[str, str] | None:
    from sqlalchemy.util import greenlet_spawn

    def read() -> tuple[str, str] | None:
        raw = pool._invoke_creator(None)
        try:
            cursor = raw.cursor()
            cursor.execute(SQL)
            row = cursor.fetchone()
            cursor.close()
        finally:
            raw.close()
        return (row[0], row[1]) if row else None

    async def main() -> tuple[str, str] | None:
        return await asyncio.wait_for(greenlet_spawn(read), timeout=30)

    return asyncio.run(main())


def server_settings() -> dict[str, TimeoutReading]:
    """The latest reading per pool name (for the db-timeout view: the server's own text is not a metric)."""
    with _lock:
        return dict(_results)


def _observe(options: CallbackOptions) -> list[Observation]:
    ensure_running()
    from otel_reliability.instrumentation.pool import POOL_NAME

    with _lock:
        return [Observation(r.seconds, {POOL_NAME: r.pool_name}) for r in _results.values() if r.seconds is not None]


def _after_fork() -> None:
    global _thread
    _thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
