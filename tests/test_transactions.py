"""run_in_transaction on a real PostgreSQL (SERIALIZABLE contention) and SQLite."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.orm import sessionmaker

from otel_reliability import run_in_transaction, run_in_transaction_async
from otel_reliability.db import transactions
from otel_reliability.readings import Readings
from tests.support import Postgres, require

_ids = itertools.count()


@pytest.fixture
def telemetry() -> Iterator[tuple[Readings, InMemorySpanExporter]]:
    reader = Readings(background=False)
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    transactions.use_providers(MeterProvider(metric_readers=[reader]), tracer_provider)
    yield reader, spans
    transactions._telemetry = None


def retries(reader: Readings, **where: str) -> float:
    return reader.snapshot(max_age=0).total("db.client.transaction.retries", where or None)


def table(engine: sa.Engine, ddl: str) -> str:
    name = f"t_{next(_ids)}_{threading.get_ident() % 1000}"
    with engine.begin() as c:
        c.execute(sa.text(ddl.format(name=name)))
    return name


@pytest.mark.parametrize(("clients", "each"), [(4, 50), (16, 25)])
def test_hot_row_increments_all_succeed_with_the_defaults(
    postgres: Postgres, telemetry: Any, clients: int, each: int
) -> None:
    """A user's credits: concurrent read-modify-write of one row under SERIALIZABLE. With the default
    budget every increment gets through (none raised, none lost, none doubled); the retries are counted."""
    reader, spans = telemetry
    engine = sa.create_engine(postgres.url("psycopg"), isolation_level="SERIALIZABLE", pool_size=clients)
    name = table(engine, "CREATE TABLE {name} (id int primary key, n int not null)")
    with engine.begin() as c:
        c.execute(sa.text(f"INSERT INTO {name} VALUES (1, 0)"))
    ok = 0
    lock = threading.Lock()
    failures: list[BaseException] = []

    def increment(session: Any) -> None:
        n = session.execute(sa.text(f"SELECT n FROM {name} WHERE id = 1")).scalar_one()
        session.execute(sa.text(f"UPDATE {name} SET n = :n WHERE id = 1"), {"n": n + 1})

    def worker() -> None:
        nonlocal ok
        for _ in range(each):
            try:
                run_in_transaction(engine, increment)
            except BaseException as exc:
                failures.append(exc)
            else:
                with lock:
                    ok += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - started
    with engine.connect() as c:
        final = c.execute(sa.text(f"SELECT n FROM {name} WHERE id = 1")).scalar_one()
    assert failures == [], (len(failures), failures[:2])
    assert final == ok == clients * each, (final, ok)
    pool = f"127.0.0.1:{postgres.port}/{postgres.database}"
    assert retries(reader, **{"error.type": "serialization_failure", "db.client.connection.pool.name": pool}) > 0
    finished = [s for s in spans.get_finished_spans() if s.name == "db.transaction"]
    events = [e for s in finished for e in s.events if e.name == "db.transaction.retry"]
    assert len(events) == retries(reader) == sum(s.attributes["db.transaction.retries"] for s in finished)
    worst = max(s.attributes["db.transaction.attempts"] for s in finished)
    print(f"{clients}x{each}: {elapsed:.1f} s, {len(events)} retries, worst call {worst} attempts")
    engine.dispose()


def test_unique_violation_is_raised_at_once(postgres: Postgres, telemetry: Any) -> None:
    reader, _ = telemetry
    engine = sa.create_engine(postgres.url("psycopg"))
    name = table(engine, "CREATE TABLE {name} (id int primary key)")
    calls = 0

    def insert(session: Any) -> None:
        nonlocal calls
        calls += 1
        session.execute(sa.text(f"INSERT INTO {name} VALUES (1)"))

    run_in_transaction(engine, insert)
    with pytest.raises(sa.exc.IntegrityError):
        run_in_transaction(engine, insert)
    assert calls == 2 and retries(reader) == 0
    engine.dispose()


def test_returns_what_work_returned_and_accepts_a_sessionmaker(tmp_path: Any, telemetry: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/r.sqlite")
    assert run_in_transaction(sessionmaker(bind=engine), lambda s: s.execute(sa.text("SELECT 41 + 1")).scalar()) == 42


def test_sqlite_database_is_locked_is_retried(tmp_path: Any, telemetry: Any) -> None:
    reader, _ = telemetry
    url = f"sqlite:///{tmp_path}/locked.sqlite"
    engine = sa.create_engine(url, connect_args={"timeout": 0.05})
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE t (n int)"))
    blocker = sa.create_engine(url).connect()
    blocker.exec_driver_sql("BEGIN EXCLUSIVE")
    released = threading.Timer(0.3, lambda: (blocker.exec_driver_sql("COMMIT"), blocker.close()))
    released.start()
    run_in_transaction(engine, lambda s: s.execute(sa.text("INSERT INTO t VALUES (1)")), attempts=30)
    released.join()
    assert retries(reader, **{"error.type": "database_locked"}) >= 1


def locked_sqlite(tmp_path: Any) -> tuple[sa.Engine, sa.Connection]:
    """An engine whose every write meets ``database is locked`` until the returned blocker commits."""
    url = f"sqlite:///{tmp_path}/held.sqlite"
    engine = sa.create_engine(url, connect_args={"timeout": 0.01})
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE t (n int)"))
    blocker = sa.create_engine(url).connect()
    blocker.exec_driver_sql("BEGIN EXCLUSIVE")
    return engine, blocker


def test_time_budget_bounds_the_call_and_is_on_the_span(tmp_path: Any, telemetry: Any) -> None:
    reader, spans = telemetry
    engine, blocker = locked_sqlite(tmp_path)
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError, match="locked"):
        run_in_transaction(engine, lambda s: s.execute(sa.text("INSERT INTO t VALUES (1)")), timeout=0.5)
    elapsed = time.monotonic() - started
    blocker.close()
    assert 0.5 <= elapsed < 1.0, elapsed  # all of the budget, and one attempt past it at most
    (span,) = spans.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert attrs["db.transaction.timeout"] == 0.5 and attrs["db.transaction.max_attempts"] == 100
    assert attrs["db.transaction.exhausted"] == "timeout"
    assert attrs["db.transaction.retries"] == attrs["db.transaction.attempts"] - 1 == retries(reader) >= 3


def test_attempt_cap_stops_first_when_it_is_smaller(tmp_path: Any, telemetry: Any) -> None:
    reader, spans = telemetry
    engine, blocker = locked_sqlite(tmp_path)
    calls = 0

    def insert(session: Any) -> None:
        nonlocal calls
        calls += 1
        session.execute(sa.text("INSERT INTO t VALUES (1)"))

    with pytest.raises(sa.exc.OperationalError):
        run_in_transaction(engine, insert, attempts=3, timeout=None)
    blocker.close()
    (span,) = spans.get_finished_spans()
    assert calls == 3 and retries(reader) == 2
    assert span.attributes["db.transaction.exhausted"] == "attempts"
    assert "db.transaction.timeout" not in span.attributes  # None: no time limit, none claimed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be an integer >= 1, got 0"),
        ({"attempts": 2.5}, "attempts must be an integer >= 1, got 2.5"),
        ({"timeout": 0}, "timeout must be seconds > 0 or None, got 0"),
        ({"timeout": "10"}, "timeout must be seconds > 0 or None, got '10'"),
        ({"timeout": float("nan")}, "timeout must be seconds > 0 or None, got nan"),
    ],
)
def test_bad_limits_are_refused_before_any_work(tmp_path: Any, kwargs: dict[str, Any], message: str) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/bad.sqlite")
    with pytest.raises(ValueError, match=re.escape(message)):
        run_in_transaction(engine, lambda s: pytest.fail("work ran"), **kwargs)
    with pytest.raises(ValueError, match=re.escape(message)):
        asyncio.run(run_in_transaction_async(engine, lambda s: pytest.fail("work ran"), **kwargs))


def test_work_errors_and_programming_errors_are_not_retried(tmp_path: Any, telemetry: Any) -> None:
    reader, _ = telemetry
    engine = sa.create_engine(f"sqlite:///{tmp_path}/p.sqlite")
    with pytest.raises(sa.exc.OperationalError):  # sqlite reports a missing table as OperationalError
        run_in_transaction(engine, lambda s: s.execute(sa.text("SELECT * FROM missing")))
    with pytest.raises(ZeroDivisionError):
        run_in_transaction(engine, lambda s: 1 / 0)
    assert retries(reader) == 0


def test_lost_connection_is_retried(postgres: Postgres, telemetry: Any) -> None:
    reader, _ = telemetry
    engine = sa.create_engine(postgres.url("psycopg"))
    calls = 0

    def work(session: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:  # the server ends our session mid-transaction, as a failover or restart would
            session.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return int(session.execute(sa.text("SELECT 1")).scalar_one())

    assert run_in_transaction(engine, work) == 1
    assert calls == 2 and retries(reader, **{"error.type": "connection_lost"}) == 1
    engine.dispose()


def test_pooled_connection_killed_before_checkout_is_retried(postgres: Postgres, telemetry: Any) -> None:
    """SQLAlchemy applies ``isolation_level`` to a pooled connection at checkout and lets the driver's own
    ``OperationalError: the connection is lost`` through unwrapped when the server ended that session: it is a
    lost connection like any other, not a 500."""
    import psycopg

    reader, _ = telemetry
    # SQLAlchemy leaks the failed checkout's connection until the garbage collector runs: room for one more.
    engine = sa.create_engine(postgres.url("psycopg"), pool_size=1, max_overflow=1, pool_timeout=5)
    with engine.connect() as c:
        pid = c.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        driver_connection = c.connection.dbapi_connection
    postgres.psql(f"SELECT pg_terminate_backend({pid})")
    # The driver notices (as it does when a pool reset meets the terminated session) but the pool keeps it.
    with pytest.raises(psycopg.OperationalError):
        driver_connection.execute("SELECT 1")
    factory = sessionmaker(bind=engine.execution_options(isolation_level="SERIALIZABLE"))
    seen: list[BaseException] = []
    original = transactions.is_transient
    transactions.is_transient = lambda exc: seen.append(exc) or original(exc)  # type: ignore[assignment]
    try:
        assert run_in_transaction(factory, lambda s: s.execute(sa.text("SELECT 7")).scalar_one()) == 7
    finally:
        transactions.is_transient = original  # type: ignore[assignment]
    assert [type(e).__module__ for e in seen] == ["psycopg"]  # the driver's own, unwrapped error
    assert retries(reader, **{"error.type": "connection_lost"}) == 1
    engine.dispose()


def test_raw_driver_errors_are_judged_like_wrapped_ones() -> None:
    import psycopg
    import psycopg.errors

    assert transactions.is_transient(psycopg.OperationalError("the connection is lost")) == "connection_lost"
    assert transactions.is_transient(psycopg.errors.SerializationFailure("x")) == "serialization_failure"
    assert transactions.is_transient(psycopg.OperationalError("something else")) is None
    assert transactions.is_transient(psycopg.errors.UniqueViolation("duplicate key")) is None
    assert transactions.is_transient(ValueError("the connection is lost")) is None  # not a PEP 249 error


def test_async_serializable_with_asyncpg(postgres: Postgres, telemetry: Any) -> None:
    require(importlib.util.find_spec("greenlet") is not None, "greenlet (sqlalchemy[asyncio]) for async engines")
    from sqlalchemy.ext.asyncio import create_async_engine

    reader, _ = telemetry
    sync = sa.create_engine(postgres.url("psycopg"))
    name = table(sync, "CREATE TABLE {name} (id int primary key, n int not null)")
    with sync.begin() as c:
        c.execute(sa.text(f"INSERT INTO {name} VALUES (1, 0)"))

    async def main() -> int:
        engine = create_async_engine(postgres.url("asyncpg"), isolation_level="SERIALIZABLE")

        async def increment(session: Any) -> None:
            n = (await session.execute(sa.text(f"SELECT n FROM {name} WHERE id = 1"))).scalar_one()
            await asyncio.sleep(0.001)
            await session.execute(sa.text(f"UPDATE {name} SET n = :n WHERE id = 1"), {"n": n + 1})

        async def worker() -> int:
            for _ in range(10):
                await run_in_transaction_async(engine, increment)
            return 10

        done = sum(await asyncio.gather(*(worker() for _ in range(4))))
        await engine.dispose()
        return done

    done = asyncio.run(main())
    with sync.connect() as c:
        assert c.execute(sa.text(f"SELECT n FROM {name} WHERE id = 1")).scalar_one() == done == 40
    assert retries(reader) > 0
    sync.dispose()
