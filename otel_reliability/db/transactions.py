"""Run a unit of work in a transaction, and run it again when the failure was transient.

``run_in_transaction(bind, work)`` opens a session on ``bind`` (an ``Engine`` or a ``sessionmaker``), begins a
transaction, calls ``work(session)``, commits, and returns what ``work`` returned. When the transaction fails
for a reason that a second try can fix, it is rolled back and the *whole* unit of work runs again on a fresh
session, after a jittered exponential backoff, up to ``attempts`` times; then the last error is raised.

Transient (retried):
- SQLSTATE 40001 serialization failure (SERIALIZABLE / REPEATABLE READ conflicts),
- SQLSTATE 40P01 deadlock detected,
- a lost connection: ``DBAPIError.connection_invalidated`` (SQLAlchemy recognised a disconnect) or SQLSTATE
  class 08 (connection exception),
- SQLite ``database is locked``.

Never retried: ``IntegrityError`` (a unique or foreign-key violation fails the same way every time),
``ProgrammingError``/``DataError`` (a bug), and any exception that is not a database error (raised by ``work``
itself).

Why the whole unit and not ``session.commit()``: the seed's ``_commit_with_retry(session)`` calls ``commit()``
again after a failed one. After a failed flush or commit, SQLAlchemy rolls the session's transaction back: new
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
is an event ``db.transaction.retry`` on the ``db.transaction`` span that covers all attempts.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

import otel_reliability

T = TypeVar("T")

__all__ = ["is_transient", "run_in_transaction", "run_in_transaction_async"]

BASE_DELAY = 0.02
MAX_DELAY = 2.0


class _Telemetry:
    def __init__(self, meter_provider: Any = None, tracer_provider: Any = None) -> None:
        meter = metrics.get_meter("otel_reliability.db", otel_reliability.__version__, meter_provider=meter_provider)
        self.retries = meter.create_counter(
            "db.client.transaction.retries",
            "{retry}",
            "Transactions rolled back and run again after a transient failure.",
        )
        self.tracer = trace.get_tracer("otel_reliability.db", otel_reliability.__version__, tracer_provider)


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


def _sqlstate(orig: Any) -> str | None:
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return str(code) if code else None


def is_transient(exc: BaseException) -> str | None:
    """The ``error.type`` of a failure worth retrying the whole transaction for, or None."""
    from sqlalchemy import exc as sa_exc

    if not isinstance(exc, sa_exc.DBAPIError):
        return None
    if isinstance(exc, sa_exc.IntegrityError | sa_exc.ProgrammingError | sa_exc.DataError):
        return None
    if exc.connection_invalidated:
        return "connection_lost"
    code = _sqlstate(exc.orig)
    if code == "40001":
        return "serialization_failure"
    if code == "40P01":
        return "deadlock_detected"
    if code is not None and code.startswith("08"):
        return "connection_lost"
    if isinstance(exc, sa_exc.OperationalError) and "database is locked" in str(exc.orig).lower():
        return "database_locked"
    return None


def _delay(attempt: int) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))] so that the colliding callers spread out."""
    return random.uniform(0, min(MAX_DELAY, BASE_DELAY * (2 ** (attempt - 1))))


def _pool_name(bind: Any) -> str:
    from otel_reliability.instrumentation.pool import name_from_url

    engine = getattr(bind, "sync_engine", bind)
    logging_name = getattr(getattr(engine, "pool", None), "_orig_logging_name", None)
    if logging_name:
        return str(logging_name)
    url = getattr(engine, "url", None)
    return name_from_url(url) if url is not None else "unknown"


def _engine_of(factory: Any) -> Any:
    bind = getattr(factory, "kw", {}).get("bind")
    return bind if bind is not None else factory


def _note_retry(span: Span, bind: Any, reason: str, attempt: int, exc: BaseException, delay: float) -> None:
    from otel_reliability.instrumentation.pool import POOL_NAME

    _tel().retries.add(1, {POOL_NAME: _pool_name(bind), "error.type": reason})
    span.add_event(
        "db.transaction.retry",
        {"error.type": reason, "db.transaction.attempt": attempt, "db.transaction.retry_delay": delay,
         "exception.type": type(exc).__qualname__},
    )  # fmt: skip


def _check(attempts: int) -> None:
    if attempts < 1:
        raise ValueError("attempts must be >= 1")


def run_in_transaction(bind: Any, work: Callable[[Any], T], *, attempts: int = 5) -> T:
    """Run ``work(session)`` in a transaction on ``bind`` (Engine or sessionmaker), retrying transient failures.

    See the module docstring for what is retried and why the whole unit of work is retried.
    """
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    _check(attempts)
    factory: Callable[[], Session] = sessionmaker(bind=bind) if isinstance(bind, Engine) else bind
    engine = bind if isinstance(bind, Engine) else _engine_of(bind)
    with _tel().tracer.start_as_current_span("db.transaction", kind=SpanKind.INTERNAL) as span:
        for attempt in range(1, attempts + 1):
            session = factory()
            try:
                with session.begin():
                    result = work(session)
                span.set_attribute("db.transaction.attempts", attempt)
                return result
            except Exception as exc:
                reason = is_transient(exc)
                if reason is None or attempt == attempts:
                    span.set_attribute("db.transaction.attempts", attempt)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
                    raise
                delay = _delay(attempt)
                _note_retry(span, engine, reason, attempt, exc, delay)
            finally:
                session.close()
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def run_in_transaction_async(bind: Any, work: Callable[[Any], Awaitable[T]], *, attempts: int = 5) -> T:
    """The async twin: ``bind`` is an ``AsyncEngine`` or an ``async_sessionmaker``; ``work`` is awaited."""
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    _check(attempts)
    factory: Callable[[], AsyncSession] = async_sessionmaker(bind=bind) if isinstance(bind, AsyncEngine) else bind
    engine = bind if isinstance(bind, AsyncEngine) else _engine_of(bind)
    with _tel().tracer.start_as_current_span("db.transaction", kind=SpanKind.INTERNAL) as span:
        for attempt in range(1, attempts + 1):
            session = factory()
            try:
                async with session.begin():
                    result = await work(session)
                span.set_attribute("db.transaction.attempts", attempt)
                return result
            except Exception as exc:
                reason = is_transient(exc)
                if reason is None or attempt == attempts:
                    span.set_attribute("db.transaction.attempts", attempt)
                    span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
                    raise
                delay = _delay(attempt)
                _note_retry(span, engine, reason, attempt, exc, delay)
            finally:
                await session.close()
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
