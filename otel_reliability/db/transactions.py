"""Run a unit of work in a transaction, and run it again when the failure was transient.

``run_in_transaction(bind, work)`` opens a session on ``bind`` (an ``Engine`` or a ``sessionmaker``), begins a
transaction, calls ``work(session)``, commits, and returns what ``work`` returned. When the transaction fails
for a reason that a second try can fix, it is rolled back and the *whole* unit of work runs again on a fresh
session, after a jittered backoff, until the time budget ``timeout`` (10 s by default, sleeps included) or
the attempt cap ``attempts`` (100) runs out; then the last error is raised. The budget is what bounds a call:
a request handler knows its worst case, and a hot row with many writers still gets every write through
(16 callers x 25 increments of one row under SERIALIZABLE all succeed with the defaults).

Transient (retried):
- SQLSTATE 40001 serialization failure (SERIALIZABLE / REPEATABLE READ conflicts),
- SQLSTATE 40P01 deadlock detected,
- a lost connection: ``DBAPIError.connection_invalidated`` (SQLAlchemy recognised a disconnect), SQLSTATE
  class 08 (connection exception) or 57P01-57P03 (the server ended the session or is restarting),
- SQLite ``database is locked``,
- the same failures raised by the driver itself where SQLAlchemy lets them through unwrapped (it does at
  checkout, when it applies ``isolation_level`` to a pooled connection whose session the server ended).

Never retried: ``IntegrityError`` (a unique or foreign-key violation fails the same way every time),
``ProgrammingError``/``DataError`` (a bug), and any exception that is not a database error (raised by ``work``
itself).

Why the whole unit and not ``session.commit()`` (a ``_commit_with_retry(session)`` that calls ``commit()`` again
after a failed one loses data): after a failed flush or commit, SQLAlchemy rolls the session's transaction back: new
objects are expunged and loaded ones expired, so a second ``commit()`` commits an *empty* transaction and
reports success while the changes are gone. And a serialization failure means the transaction read data that
another one changed: committing the same writes again is exactly what the database just refused; the reads
must be repeated, and only ``work`` knows how. So ``work`` must be safe to run more than once (no side effects
outside the database, such as sending an e-mail, inside it).

One honest limit: when the connection is lost *during* ``COMMIT``, the outcome is unknown (the server may have
committed). Retrying then runs ``work`` again; make it idempotent (check-then-insert, ``ON CONFLICT``) where
that matters.

Telemetry: each retry adds 1 to ``db.client.transaction.retries`` (Prometheus
``db_client_transaction_retries_total``, attributes ``db.client.connection.pool.name`` and ``error.type``) and
is an event ``db.transaction.retry`` on the ``db.transaction`` span that covers all attempts. The span carries
the limits (``db.transaction.max_attempts``, ``db.transaction.timeout``), what was used
(``db.transaction.attempts``, ``db.transaction.retries``) and, when it gave up on a transient error, which limit
ran out (``db.transaction.exhausted``: ``attempts`` or ``timeout``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from otel_reliability import semconv
from otel_reliability.db.naming import name_from_url
from otel_reliability.upstream import pools as upstream_pools
from otel_reliability.version import __version__

T = TypeVar("T")

__all__ = ["is_transient", "run_in_transaction", "run_in_transaction_async"]

# Measured on PostgreSQL SERIALIZABLE, 16 callers x 25 increments of one row (tests/test_transactions.py):
# a small base keeps the first retry close to the conflict, the cap keeps a loser from sleeping past the
# moment the row is free again. The budget, not the attempt cap, is what bounds a call by default.
BASE_DELAY = 0.005
MAX_DELAY = 0.5
DEFAULT_ATTEMPTS = 100
DEFAULT_TIMEOUT = 10.0


class _Telemetry:
    def __init__(self, meter_provider: Any = None, tracer_provider: Any = None) -> None:
        meter = metrics.get_meter("otel_reliability.db", __version__, meter_provider, semconv.SCHEMA_URL)
        self.retries = meter.create_counter(
            semconv.METRIC_DB_CLIENT_TRANSACTION_RETRIES,
            "{retry}",
            "Transactions rolled back and run again after a transient failure.",
        )
        self.tracer = trace.get_tracer("otel_reliability.db", __version__, tracer_provider, semconv.SCHEMA_URL)


_telemetry: _Telemetry | None = None


def _tel() -> _Telemetry:
    global _telemetry
    if _telemetry is None:
        _telemetry = _Telemetry()
    return _telemetry


def use_providers(meter_provider: Any = None, tracer_provider: Any = None) -> None:
    """Send this module's telemetry to the given providers instead of the global ones (tests, embedding)."""
    global _telemetry
    _telemetry = _Telemetry(meter_provider, tracer_provider)


# admin_shutdown (pg_terminate_backend, a fast shutdown), crash_shutdown, cannot_connect_now (starting up or
# shutting down): the server ended or refused the session, not the statement; another session may succeed.
_SERVER_GOING_AWAY = frozenset({"57P01", "57P02", "57P03"})


def _sqlstate(orig: Any) -> str | None:
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(code) if code else None


def is_transient(exc: BaseException) -> str | None:
    """The ``error.type`` of a failure worth retrying the whole transaction for, or None."""
    from sqlalchemy import exc as sa_exc

    if not isinstance(exc, sa_exc.DBAPIError):
        return _raw_driver_error(exc)
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.ProgrammingError | sa_exc.DataError):
        return None
    if exc.connection_invalidated:
        return "connection_lost"
    return _by_code(exc.orig, isinstance(exc, sa_exc.OperationalError))


def _by_code(orig: Any, operational: bool) -> str | None:
    code = _sqlstate(orig)
    if code == "40001":
        return "serialization_failure"
    if code == "40P01":
        return "deadlock_detected"
    if code is not None and (code.startswith("08") or code in _SERVER_GOING_AWAY):
        return "connection_lost"
    if operational and "database is locked" in str(orig).lower():
        return "database_locked"
    return None


# What drivers say when the socket under a connection is gone (psycopg 3, psycopg2, asyncpg).
_LOST = ("the connection is lost", "connection is closed", "connection already closed",
         "server closed the connection", "terminating connection", "consuming input failed")  # fmt: skip


def _raw_driver_error(exc: BaseException) -> str | None:
    """A driver's own error that SQLAlchemy let through unwrapped.

    SQLAlchemy 2.x does so at checkout while it applies an execution option (``isolation_level``) to a pooled
    connection whose server session was terminated: psycopg raises ``OperationalError: the connection is lost``
    and the request failed with a 500 instead of being retried (seen in the pg_terminate_backend fault). Only
    PEP 249 errors (a class named ``Error`` of the same package in the MRO) are considered, by SQLSTATE, or as a
    lost connection when an ``OperationalError`` says so.
    """
    cls = type(exc)
    package = cls.__module__.split(".")[0]
    if not any(c.__name__ == "Error" and c.__module__.split(".")[0] == package for c in cls.__mro__[1:]):
        return None
    operational = any(c.__name__ == "OperationalError" for c in cls.__mro__)
    reason = _by_code(exc, operational)
    if reason is None and operational and _sqlstate(exc) is None:
        text = str(exc).lower()
        if any(marker in text for marker in _LOST):
            return "connection_lost"
    return reason


def _delay(previous: float) -> float:
    """Decorrelated jitter: uniform in [BASE_DELAY, 3 * previous], capped at MAX_DELAY.

    Why not plain exponential backoff: callers that collided on one hot row would retry in lockstep and
    collide again. Full jitter spreads them but forgets how crowded it was; decorrelated jitter grows with
    the last sleep, so a caller that keeps losing backs off further while the spread stays wide, and a small
    base keeps the first retry cheap (a conflict on a hot row usually clears within a transaction's time).
    """
    return min(MAX_DELAY, random.uniform(BASE_DELAY, max(BASE_DELAY, previous) * 3))


def _pool_name(bind: Any) -> str:
    engine = getattr(bind, "sync_engine", bind)
    pool = getattr(engine, "pool", None)
    logging_name = upstream_pools.logging_name(pool) if pool is not None else None
    if logging_name:
        return str(logging_name)
    url = getattr(engine, "url", None)
    return name_from_url(url) if url is not None else "unknown"


def _engine_of(factory: Any) -> Any:
    bind = getattr(factory, "kw", {}).get("bind")
    return bind if bind is not None else factory


def _note_retry(span: Span, bind: Any, reason: str, attempt: int, exc: BaseException, delay: float) -> None:
    _tel().retries.add(
        1, {semconv.ATTR_DB_CLIENT_CONNECTION_POOL_NAME: _pool_name(bind), semconv.ATTR_ERROR_TYPE: reason}
    )
    retry: dict[str, Any] = {
        semconv.ATTR_ERROR_TYPE: reason,
        semconv.ATTR_DB_TRANSACTION_ATTEMPT: attempt,
        semconv.ATTR_DB_TRANSACTION_RETRY_DELAY: delay,
        semconv.ATTR_EXCEPTION_TYPE: semconv.error_type(exc, qualified=False),
    }
    span.add_event(semconv.EVENT_DB_TRANSACTION_RETRY, retry)


class _Budget:
    """The two limits of one ``run_in_transaction`` call: an attempt cap and a time budget.

    The budget bounds the whole call, sleeps included: a caller (an HTTP request, a job) must know the worst
    case. It cannot interrupt an attempt already running (only the database's statement_timeout can), so a
    call may overrun by one attempt; it never *starts* a sleep that would end past the deadline.
    """

    def __init__(self, attempts: int, timeout: float | None) -> None:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"run_in_transaction: attempts must be an integer >= 1, got {attempts!r}")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
        ):
            raise ValueError(f"run_in_transaction: timeout must be seconds > 0 or None, got {timeout!r}")
        self.attempts = attempts
        self.timeout = timeout
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.delay = 0.0
        self.exhausted = ""

    def start(self, span: Span) -> None:
        span.set_attribute(semconv.ATTR_DB_TRANSACTION_MAX_ATTEMPTS, self.attempts)
        if self.timeout is not None:
            span.set_attribute(semconv.ATTR_DB_TRANSACTION_TIMEOUT, float(self.timeout))

    def next_delay(self, attempt: int) -> float | None:
        """The sleep before the next attempt, or None when a limit says stop (``exhausted`` names it)."""
        if attempt >= self.attempts:
            self.exhausted = "attempts"
            return None
        self.delay = _delay(self.delay)
        if self.deadline is not None:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.exhausted = "timeout"
                return None
            # Sleep at most what is left, then try once more: the budget's last moment is still worth an attempt.
            self.delay = min(self.delay, remaining)
        return self.delay

    def after_failure(self, span: Span, engine: Any, attempt: int, exc: BaseException) -> float | None:
        """The sleep before the next attempt after ``exc`` (the retry counted and on the span), or None when it
        is not transient or a limit says stop (the span then finished with the error): the caller re-raises."""
        reason = is_transient(exc)
        delay = None if reason is None else self.next_delay(attempt)
        if reason is None or delay is None:
            self.finish(span, attempt, exc)
            return None
        _note_retry(span, engine, reason, attempt, exc, delay)
        return delay

    def finish(self, span: Span, attempt: int, exc: BaseException | None = None) -> None:
        span.set_attribute(semconv.ATTR_DB_TRANSACTION_ATTEMPTS, attempt)
        span.set_attribute(semconv.ATTR_DB_TRANSACTION_RETRIES, attempt - 1)
        if exc is not None:
            if self.exhausted:
                span.set_attribute(semconv.ATTR_DB_TRANSACTION_EXHAUSTED, self.exhausted)
            span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))


def run_in_transaction(
    bind: Any, work: Callable[[Any], T], *, attempts: int = DEFAULT_ATTEMPTS, timeout: float | None = DEFAULT_TIMEOUT
) -> T:
    """Run ``work(session)`` in a transaction on ``bind`` (Engine or sessionmaker), retrying transient failures.

    Retries until ``attempts`` attempts were made or ``timeout`` seconds (the whole call, sleeps included;
    None: no time limit) have passed, whichever comes first; then the last error is raised. See the module
    docstring for what is retried and why the whole unit of work is retried.
    """
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    budget = _Budget(attempts, timeout)
    factory: Callable[[], Session] = sessionmaker(bind=bind) if isinstance(bind, Engine) else bind
    engine = bind if isinstance(bind, Engine) else _engine_of(bind)
    with _tel().tracer.start_as_current_span(semconv.SPAN_DB_TRANSACTION, kind=SpanKind.INTERNAL) as span:
        budget.start(span)
        attempt = 0
        while True:
            attempt += 1
            session = factory()
            try:
                with session.begin():
                    result = work(session)
                budget.finish(span, attempt)
                return result
            except Exception as exc:
                delay = budget.after_failure(span, engine, attempt, exc)
                if delay is None:
                    raise
            finally:
                session.close()
            time.sleep(delay)


async def run_in_transaction_async(
    bind: Any,
    work: Callable[[Any], Awaitable[T]],
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> T:
    """The async twin: ``bind`` is an ``AsyncEngine`` or an ``async_sessionmaker``; ``work`` is awaited."""
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    budget = _Budget(attempts, timeout)
    factory: Callable[[], AsyncSession] = async_sessionmaker(bind=bind) if isinstance(bind, AsyncEngine) else bind
    engine = bind if isinstance(bind, AsyncEngine) else _engine_of(bind)
    with _tel().tracer.start_as_current_span(semconv.SPAN_DB_TRANSACTION, kind=SpanKind.INTERNAL) as span:
        budget.start(span)
        attempt = 0
        while True:
            attempt += 1
            session = factory()
            try:
                async with session.begin():
                    result = await work(session)
                budget.finish(span, attempt)
                return result
            except Exception as exc:
                delay = budget.after_failure(span, engine, attempt, exc)
                if delay is None:
                    raise
            finally:
                await session.close()
            await asyncio.sleep(delay)
