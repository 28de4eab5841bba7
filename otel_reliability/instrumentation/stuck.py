"""Stuck jobs kept in a database table: counted in the background, cleaned up on request.

Usage::

    from otel_reliability import register_stuck_detector

    register_stuck_detector(
        "episode-processing",
        bind=engine,                       # a synchronous SQLAlchemy Engine
        table=episodes,                    # a Table, an ORM class, or a table name (reflected on first check)
        status_column="status",
        in_progress_values=["processing", "transcribing"],
        timestamp_column="updated_at",     # when the row entered its in-progress state
        error_value="error",
        key_column="id",
    )

Why a background query: a health or metrics request must never wait on a table scan. One daemon thread
("otel-reliability-stuck") runs each detector's query at most every ``interval`` seconds (default
``OTEL_RELIABILITY_STUCK_CHECK_INTERVAL``, 60) and caches the result; the ``operation.*`` gauges
(``operation.name`` = the detector's name) and the admin endpoint read the cache. The query is::

    SELECT count(*), sum(CASE WHEN ts < :cutoff THEN 1 ELSE 0 END), min(ts)
    FROM table WHERE status IN (:in_progress)

plus, only when something is stuck, the 10 oldest stuck keys. An index on ``(status_column,
timestamp_column)`` keeps it cheap on large tables.

Timestamps: a column declared with a time zone (``DateTime(timezone=True)``, PostgreSQL ``timestamptz``) is
compared with an aware UTC cutoff; a naive column is assumed to hold UTC (``datetime.utcnow()``,
``CURRENT_TIMESTAMP`` in SQLite) and compared with a naive UTC cutoff. SQLite keeps no offsets, so there
both are compared as naive UTC.

``cleanup(dry_run)`` marks the stuck rows as ``error_value`` in one transaction with one
``UPDATE ... WHERE status IN (...) AND ts < cutoff RETURNING key, ts`` (where the database lacks RETURNING:
the stuck rows are selected ``FOR UPDATE`` and updated by key with the same conditions re-checked, in the
same transaction), and returns exactly the rows it changed. With ``dry_run`` it only selects them.

The gauges are published by this module's own entry point, ``reliability_stuck`` (``StuckInstrumentor``), into the
``operation.*`` gauges that ``reliability_operations`` shares (``_operation_gauges``): disabling
``reliability_operations`` leaves the detectors' series, and ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=
reliability_stuck`` removes them (the detectors still run and the admin endpoint still lists and cleans up).

The background query is ours, not the app's: it runs under ``suppress_instrumentation()``, so it is neither a
statement span nor a ``db.client.operation.duration`` point. ``cleanup`` is not suppressed: it changes the app's
rows on an admin's request, and that request's trace should show it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from opentelemetry import metrics
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_reliability import changes, config, semconv, threads
from otel_reliability.instrumentation import _operation_gauges
from otel_reliability.instrumentation._instrumented import Instrumented
from otel_reliability.instrumentation._operation_gauges import SCOPE, Row
from otel_reliability.version import __version__

_logger = logging.getLogger(__name__)

SAMPLE_SIZE = 10


@dataclass(frozen=True)
class StuckRow:
    """One stuck row: the detector's name, the row's key and how long it has been in progress."""

    name: str
    key: Any
    age_seconds: float

    def as_json(self) -> dict[str, Any]:
        key = self.key if isinstance(self.key, int | str) or self.key is None else str(self.key)
        return {"name": self.name, "key": key, "age_seconds": round(self.age_seconds, 3)}


@dataclass(frozen=True)
class DetectorReading:
    """The cached result of a detector's last successful query."""

    name: str
    in_progress: int
    stuck: int
    oldest_age: float  # seconds, of the oldest in-progress row at check time
    sample: tuple[StuckRow, ...]  # the oldest stuck rows (at most SAMPLE_SIZE)
    checked_at: float  # time.monotonic()


@dataclass
class StuckDetector:
    """A database-backed stuck-job detector. Create it with ``register_stuck_detector``."""

    name: str
    bind: Any
    table: Any
    status_column: str
    in_progress_values: tuple[Any, ...]
    timestamp_column: str
    error_value: Any
    key_column: str = "id"
    threshold: float | None = None
    interval: float | None = None
    last: DetectorReading | None = None
    last_error: str | None = None
    _next_due: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # --- configuration ------------------------------------------------------------------------------------
    def threshold_seconds(self) -> float:
        return config.settings().stuck_threshold if self.threshold is None else self.threshold

    def interval_seconds(self) -> float:
        return config.settings().stuck_check_interval if self.interval is None else self.interval

    def _table(self) -> Any:
        import sqlalchemy as sa

        if isinstance(self.table, str):
            self.table = sa.Table(self.table, sa.MetaData(), autoload_with=self.bind)
        elif not isinstance(self.table, sa.Table):
            self.table = sa.inspect(self.table).local_table  # an ORM class
        return self.table

    def _columns(self) -> tuple[Any, Any, Any, Any]:
        import sqlalchemy as sa

        table = self._table()
        ts = table.c[self.timestamp_column]
        if not isinstance(ts.type, sa.DateTime):
            raise TypeError(f"{table.name}.{ts.name} must be a DateTime column, not {ts.type!r}")
        return table, table.c[self.status_column], ts, table.c[self.key_column]

    def _cutoff(self, ts_column: Any, now: datetime) -> datetime:
        """``now - threshold`` in the form the column compares correctly with (see the module docstring)."""
        cutoff = now - timedelta(seconds=self.threshold_seconds())
        aware = bool(getattr(ts_column.type, "timezone", False)) and self.bind.dialect.name != "sqlite"
        return cutoff if aware else cutoff.replace(tzinfo=None)

    # --- the background query -------------------------------------------------------------------------------
    def check(self) -> DetectorReading:
        """Run the counting query now and cache its result (the background thread calls this)."""
        import sqlalchemy as sa
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        with self._lock, suppress_instrumentation():
            _, status, ts, key = self._columns()
            now = _utcnow()
            cutoff = self._cutoff(ts, now)
            in_progress = status.in_(self.in_progress_values)
            counts = sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((ts < cutoff, 1), else_=0)), 0),
                sa.func.min(ts),
            ).where(in_progress)
            with self.bind.connect() as conn:
                total, stuck, oldest = conn.execute(counts).one()
                sample: list[StuckRow] = []
                if stuck:
                    rows = conn.execute(
                        sa.select(key, ts).where(in_progress, ts < cutoff).order_by(ts).limit(SAMPLE_SIZE)
                    ).all()
                    sample = [StuckRow(self.name, k, _age(now, t)) for k, t in rows]
            reading = DetectorReading(
                self.name,
                int(total or 0),
                int(stuck or 0),
                _age(now, oldest) if oldest is not None else 0.0,
                tuple(sample),
                time.monotonic(),
            )
            previous = self.last
            self.last = reading
            self.last_error = None
        if previous is None or (previous.stuck, previous.in_progress) != (reading.stuck, reading.in_progress):
            changes.mark_changed()
        return reading

    # --- cleanup ------------------------------------------------------------------------------------------------
    def cleanup(self, dry_run: bool) -> list[StuckRow]:
        """Mark the stuck rows as ``error_value`` in one transaction; return exactly the rows changed.

        With ``dry_run`` nothing changes and the rows that would be marked are returned.
        """
        import sqlalchemy as sa

        with self._lock:
            table, status, ts, key = self._columns()
            now = _utcnow()
            cutoff = self._cutoff(ts, now)
            still_stuck = (status.in_(self.in_progress_values), ts < cutoff)
            with self.bind.begin() as conn:  # one transaction: commits on success, rolls back on error
                if dry_run:
                    rows = conn.execute(sa.select(key, ts).where(*still_stuck).order_by(ts)).all()
                elif self.bind.dialect.update_returning:
                    stmt = sa.update(table).where(*still_stuck).values({status.name: self.error_value})
                    rows = conn.execute(stmt.returning(key, ts)).all()
                else:
                    found = conn.execute(sa.select(key, ts).where(*still_stuck).with_for_update()).all()
                    keys = [k for k, _ in found]
                    if keys:
                        stmt = sa.update(table).where(key.in_(keys), *still_stuck)
                        result = conn.execute(stmt.values({status.name: self.error_value}))
                        if result.rowcount != len(keys):  # a row changed under us: report nothing false
                            raise RuntimeError(f"stuck cleanup of {self.name!r}: rows changed during the update")
                    rows = found
            marked = sorted((StuckRow(self.name, k, _age(now, t)) for k, t in rows), key=lambda r: -r.age_seconds)
        if not dry_run:
            self._refresh_soon()
        return marked

    def _refresh_soon(self) -> None:
        """Recount right after a cleanup, so the gauges do not show the marked rows for a whole interval."""
        try:
            self.check()
        except Exception as exc:
            self.last_error = type(exc).__name__
            _logger.warning("otel-reliability: stuck detector %r: recount after cleanup failed: %s", self.name, exc)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _age(now: datetime, value: Any) -> float:
    """Seconds between ``value`` (naive = UTC, or aware) and ``now``; unparsable values age 0."""
    if isinstance(value, str):  # SQLite without a declared DateTime type
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return 0.0
    if not isinstance(value, datetime):
        return 0.0
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return max(0.0, (now - value).total_seconds())


# --- the registry and its background thread --------------------------------------------------------------------
_detectors: dict[str, StuckDetector] = {}
_lock = threading.Lock()
_wake = threading.Event()
_thread: threading.Thread | None = None


def register_stuck_detector(
    name: str,
    *,
    bind: Any,
    table: Any,
    status_column: str,
    in_progress_values: Sequence[Any] | str,
    timestamp_column: str,
    error_value: Any,
    key_column: str = "id",
    threshold: float | None = None,
    interval: float | None = None,
) -> StuckDetector:
    """Count the rows of ``table`` in progress for longer than ``threshold`` (default
    ``OTEL_RELIABILITY_STUCK_THRESHOLD``) in the background, every ``interval`` seconds (default
    ``OTEL_RELIABILITY_STUCK_CHECK_INTERVAL``); they show as ``operation.stuck{operation.name=name}`` and can be
    marked as ``error_value`` by the cleanup admin endpoint. Registering a name again replaces the detector.
    """
    if getattr(bind, "sync_engine", None) is not None:
        raise TypeError(
            "register_stuck_detector needs a synchronous Engine (it queries from a background thread); "
            "create one with sqlalchemy.create_engine for the same database"
        )
    values = (in_progress_values,) if isinstance(in_progress_values, str) else tuple(in_progress_values)
    if not values:
        raise ValueError("in_progress_values must name at least one status")
    if (threshold is not None and threshold <= 0) or (interval is not None and interval <= 0):
        raise ValueError("threshold and interval must be positive seconds")
    detector = StuckDetector(
        name=name,
        bind=bind,
        table=table,
        status_column=status_column,
        in_progress_values=values,
        timestamp_column=timestamp_column,
        error_value=error_value,
        key_column=key_column,
        threshold=threshold,
        interval=interval,
    )
    if not isinstance(table, str):
        detector._columns()  # a wrong column name fails here, at registration, not later in the background
    with _lock:
        _detectors[name] = detector
    _ensure_thread()
    _wake.set()
    return detector


def unregister_stuck_detector(name: str) -> None:
    with _lock:
        _detectors.pop(name, None)


def detectors() -> list[StuckDetector]:
    with _lock:
        return list(_detectors.values())


def readings() -> Iterable[DetectorReading]:
    """The cached results of every detector that has completed a check (no query runs here)."""
    found = detectors()
    if found:
        _ensure_thread()  # restarts the thread in a forked child
    return [d.last for d in found if d.last is not None]


def _ensure_thread() -> None:
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        _thread = threads.start(_run, "otel-reliability-stuck")


def _run() -> None:
    while True:
        _wake.clear()
        now = time.monotonic()
        next_due = now + 60.0
        for detector in detectors():
            if detector._next_due <= now:
                try:
                    detector.check()
                except Exception as exc:
                    # One line per error streak: a database that is down must not flood the log.
                    error = type(exc).__name__
                    if detector.last_error != error:
                        _logger.warning("otel-reliability: stuck detector %r: query failed: %s", detector.name, exc)
                    detector.last_error = error
                detector._next_due = time.monotonic() + detector.interval_seconds()
            next_due = min(next_due, detector._next_due)
        _wake.wait(max(0.01, next_due - time.monotonic()))


def _after_fork() -> None:
    # The thread does not survive a fork, nor do locks it may have held; the child restarts it on the next
    # collection. (Its engine's pooled connections are the application's business: SQLAlchemy documents
    # Engine.dispose(close=False) in the child.)
    global _thread, _lock
    _thread = None
    _lock = threading.Lock()
    for detector in _detectors.values():
        detector._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


# --- the instrumentor ----------------------------------------------------------------------------------------------
class _DatabaseRows:
    """The detectors' cached readings as rows of the ``operation.*`` gauges (no query runs at collection)."""

    def rows(self) -> list[Row]:
        return [Row(r.name, r.in_progress, r.stuck, r.oldest_age) for r in readings()]


_instrumented = _operation_gauges.add_source(Instrumented[_DatabaseRows]())

_instruments = ("sqlalchemy >= 1.4",)
"""The detectors query through SQLAlchemy (the contrib convention: instrument() skips it when absent)."""


class StuckInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Entry point ``reliability_stuck``: the database stuck detectors' rows in the ``operation.*`` gauges.
    Accepts ``meter_provider=``."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        meter = metrics.get_meter(SCOPE, __version__, kwargs.get("meter_provider"), semconv.SCHEMA_URL)
        _instrumented.start(_DatabaseRows(), meter)
        _operation_gauges.create(meter)
        changes.mark_changed()

    def _uninstrument(self, **kwargs: Any) -> None:
        _instrumented.stop()
        changes.mark_changed()
