"""The pool instrumentor on live pools (SQLite and a real PostgreSQL), read through the Readings."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from sqlalchemy import pool as sa_pool

from otel_reliability import config
from otel_reliability.health.model import CheckContext, Status
from otel_reliability.health.views import pool as pool_view
from otel_reliability.instrumentation.pool import POOL_NAME, STATE, PoolInstrumentor, name_from_url
from otel_reliability.readings import Readings, Snapshot
from tests.support import Postgres, pool_readings, require


@pytest.fixture
def readings() -> Iterator[Readings]:
    with pool_readings() as reader:
        yield reader


def snap(r: Readings) -> Snapshot:
    return r.snapshot(max_age=0)


def count(s: Snapshot, name: str, state: str) -> float | None:
    return s.value("db.client.connection.count", {POOL_NAME: name, STATE: state})


def saturate(engine: sa.Engine, r: Readings, name: str) -> None:
    """pool_size 2 + max_overflow 1 held by 3 connections; a 4th caller waits, then times out."""
    held = [engine.connect() for _ in range(3)]
    for c in held:
        c.execute(sa.text("SELECT 1"))
    errors: list[BaseException] = []

    def fourth() -> None:
        try:
            engine.connect().close()
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=fourth)
    waiter.start()
    deadline = time.monotonic() + 2
    while snap(r).value("db.client.connection.pending_requests", {POOL_NAME: name}) != 1:
        assert time.monotonic() < deadline, "the 4th caller never showed as pending"
        time.sleep(0.02)
    s = snap(r)
    assert count(s, name, "used") == 3
    assert count(s, name, "idle") == 0
    assert s.value("db.client.connection.max", {POOL_NAME: name}) == 3
    assert s.value("db.client.connection.idle.max", {POOL_NAME: name}) == 2
    assert s.total("db.client.connection.timeouts", {POOL_NAME: name}) == 0
    ctx = CheckContext(readings=r, settings=config.load({}))
    during = pool_view.compute(ctx)
    report = during.body["pools"][name]
    assert report["current"] == {"checked_out": 3, "idle": 0, "overflow": 1, "pending": 1, "timeouts": 0}
    assert report["configuration"] == {"pool_size": 2, "max_overflow": 1, "timeout": 1.0, "total_capacity": 3}
    assert report["utilization_percent"] == 100.0 and report["warning"] is True
    assert during.status is Status.DEGRADED
    waiter.join(5)
    assert len(errors) == 1 and isinstance(errors[0], sa.exc.TimeoutError)
    s = snap(r)
    assert s.total("db.client.connection.timeouts", {POOL_NAME: name}) == 1
    assert s.value("db.client.connection.pending_requests", {POOL_NAME: name}) == 0
    for c in held:
        c.close()
    s = snap(r)
    assert count(s, name, "used") == 0 and count(s, name, "idle") == 2
    assert s.value("db.client.connection.use_time", {POOL_NAME: name}) == 3
    assert s.value("db.client.connection.create_time", {POOL_NAME: name}) == 3
    after = pool_view.compute(ctx)
    assert after.status is Status.HEALTHY and after.body["pools"][name]["utilization_percent"] == 0


def test_saturation_sqlite(readings: Readings, tmp_path: Any) -> None:
    engine = sa.create_engine(
        f"sqlite:///{tmp_path}/db.sqlite", poolclass=sa_pool.QueuePool, pool_size=2, max_overflow=1, pool_timeout=1
    )
    saturate(engine, readings, f"sqlite:{tmp_path}/db.sqlite")


def test_saturation_postgres(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(postgres.url("psycopg"), pool_size=2, max_overflow=1, pool_timeout=1)
    name = f"127.0.0.1:{postgres.port}/{postgres.database}"
    saturate(engine, readings, name)
    everything = repr(snap(readings).metrics)
    assert postgres.password not in everything and postgres.user + ":" not in everything
    engine.dispose()


def test_pool_name_is_logging_name_else_host_port_database_never_credentials() -> None:
    url = sa.engine.make_url("postgresql+psycopg://app:hunter2-secret@db.internal:6432/shop")
    assert name_from_url(url) == "db.internal:6432/shop"
    assert name_from_url(sa.engine.make_url("sqlite://")) == "sqlite::memory:"


def test_logging_name_wins(readings: Readings) -> None:
    engine = sa.create_engine("sqlite://", pool_logging_name="orders")
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    assert snap(readings).value("db.client.connection.count", {POOL_NAME: "orders", STATE: "idle"}) == 1


def test_dispose_recreates_the_pool_without_doubling_capacity(readings: Readings, tmp_path: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/d.sqlite", poolclass=sa_pool.QueuePool, pool_size=3)
    name = f"sqlite:{tmp_path}/d.sqlite"
    held = engine.connect()
    engine.dispose()
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    s = snap(readings)
    assert s.value("db.client.connection.max", {POOL_NAME: name}) == 13  # 3 + default overflow 10, once
    # QueuePool.dispose() resets the old pool's own accounting, so a connection still held from it is not
    # counted; the new pool is, once.
    assert count(s, name, "idle") == 1
    held.close()


def test_null_pool_counts_checkouts_and_has_no_bound(readings: Readings, tmp_path: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/n.sqlite", poolclass=sa_pool.NullPool)
    name = f"sqlite:{tmp_path}/n.sqlite"
    a, b = engine.connect(), engine.connect()
    s = snap(readings)
    assert count(s, name, "used") == 2 and count(s, name, "idle") == 0
    assert s.value("db.client.connection.max", {POOL_NAME: name}) is None
    assert s.value("db.client.connection.idle.max", {POOL_NAME: name}) == 0
    a.close()
    b.close()
    assert count(snap(readings), name, "used") == 0
    report = pool_view.compute(CheckContext(readings, config.load({}))).body["pools"][name]
    assert report["utilization_percent"] is None and report["warning"] is False


def test_static_pool_is_one_shared_connection(readings: Readings) -> None:
    engine = sa.create_engine("sqlite://", poolclass=sa_pool.StaticPool)
    a = engine.connect()
    b = engine.connect()
    s = snap(readings)
    assert count(s, "sqlite::memory:", "used") == 1 and count(s, "sqlite::memory:", "idle") == 0
    a.close()
    b.close()
    s = snap(readings)
    assert count(s, "sqlite::memory:", "used") == 0 and count(s, "sqlite::memory:", "idle") == 1


def test_singleton_thread_pool(readings: Readings) -> None:
    engine = sa.create_engine("sqlite://", poolclass=sa_pool.SingletonThreadPool, pool_size=4)
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
        assert count(snap(readings), "sqlite::memory:", "used") == 1
    s = snap(readings)
    assert count(s, "sqlite::memory:", "used") == 0 and count(s, "sqlite::memory:", "idle") == 1
    assert s.value("db.client.connection.idle.max", {POOL_NAME: "sqlite::memory:"}) == 4


def has_greenlet() -> bool:
    import importlib.util

    return importlib.util.find_spec("greenlet") is not None


def test_async_engine_asyncpg(readings: Readings, postgres: Postgres) -> None:
    require(has_greenlet(), "greenlet (sqlalchemy[asyncio]) for async engines")
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"127.0.0.1:{postgres.port}/{postgres.database}"

    async def main() -> None:
        engine = create_async_engine(postgres.url("asyncpg"), pool_size=1, max_overflow=0, pool_timeout=0.5)
        async with engine.connect() as c:
            await c.execute(sa.text("SELECT 1"))
            s = snap(readings)
            assert count(s, name, "used") == 1
            assert s.value("db.client.connection.max", {POOL_NAME: name}) == 1
            with pytest.raises(sa.exc.TimeoutError):
                async with engine.connect():
                    pass
        s = snap(readings)
        assert count(s, name, "used") == 0 and count(s, name, "idle") == 1
        assert s.total("db.client.connection.timeouts", {POOL_NAME: name}) == 1
        await engine.dispose()

    asyncio.run(main())


def test_uninstrument_stops_measuring(tmp_path: Any) -> None:
    originals = (sa_pool.Pool.connect, sa_pool.SingletonThreadPool.connect)
    reader = Readings(background=False)
    provider = MeterProvider(metric_readers=[reader])
    PoolInstrumentor().instrument(meter_provider=provider)
    assert sa_pool.Pool.connect is not originals[0]
    PoolInstrumentor().uninstrument()
    engine = sa.create_engine(f"sqlite:///{tmp_path}/u.sqlite")
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    assert not reader.snapshot(max_age=0).points("db.client.connection.wait_time")
    assert (sa_pool.Pool.connect, sa_pool.SingletonThreadPool.connect) == originals


ERRORS = "db.client.connection.errors"


def test_connection_that_cannot_open_is_an_error_without_engine_events(readings: Readings, tmp_path: Any) -> None:
    """Counted at the pool: no engine- or dialect-level listener, which would put every statement of every engine
    on SQLAlchemy's event-dispatching path."""
    engine = sa.create_engine(f"sqlite:///{tmp_path}/no-such-dir/x.sqlite")
    with pytest.raises(sa.exc.OperationalError):
        engine.connect()
    name = f"sqlite:{tmp_path}/no-such-dir/x.sqlite"
    s = snap(readings)
    assert s.total(ERRORS, {POOL_NAME: name, "error.type": "OperationalError"}) == 1
    assert not engine._has_events and not engine.dialect._has_events


def test_connection_found_lost_is_an_error_invalidated_on_purpose_is_not(
    readings: Readings, postgres: Postgres
) -> None:
    engine = sa.create_engine(postgres.url(), pool_size=2, max_overflow=0)
    name = f"127.0.0.1:{postgres.port}/{postgres.database}"
    with engine.connect() as c:
        c.invalidate()  # the app's own decision: an invalidation, not an error
    s = snap(readings)
    assert s.total("db.client.connection.invalidations", {POOL_NAME: name}) == 1
    assert s.total(ERRORS, {POOL_NAME: name}) == 0
    with engine.connect() as c:
        pid = c.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        postgres.psql(f"SELECT pg_terminate_backend({pid})")
        with pytest.raises(sa.exc.OperationalError):
            c.execute(sa.text("SELECT 1"))  # SQLAlchemy sees the disconnect and invalidates the connection
    s = snap(readings)
    assert s.total("db.client.connection.invalidations", {POOL_NAME: name}) == 2
    # The driver's own class (psycopg: AdminShutdown, an OperationalError), as SQLAlchemy's handle_error saw it.
    assert s.total(ERRORS, {POOL_NAME: name, "error.type": "AdminShutdown"}) == 1
    with engine.connect() as c:  # the pool opens a new connection: nothing more counted
        assert c.execute(sa.text("SELECT 1")).scalar_one() == 1
    assert snap(readings).total(ERRORS, {POOL_NAME: name}) == 1
    engine.dispose()


def test_wait_p95_is_read_from_the_wait_time_buckets_of_the_window(readings: Readings, tmp_path: Any) -> None:
    """Six fast checkouts (the first one opens the connection) and one that waits ~0.4 s for it: the p95 falls in
    the slow one's bucket (0.25-0.5 s, interpolated as Prometheus' histogram_quantile does), the median below."""
    from otel_reliability.readings import quantile

    engine = sa.create_engine(
        f"sqlite:///{tmp_path}/db.sqlite", poolclass=sa_pool.QueuePool, pool_size=1, max_overflow=0, pool_timeout=5
    )
    name = f"sqlite:{tmp_path}/db.sqlite"
    ctx = CheckContext(readings=readings, settings=config.load({}))
    for _ in range(5):
        engine.connect().close()
    snap(readings)
    fast = pool_view.compute(ctx).body["pools"][name]
    assert fast["wait_time_p95_seconds"] is not None and fast["wait_time_p95_seconds"] < 0.25
    assert fast["wait_time_window_seconds"] == 300
    held = engine.connect()
    releaser = threading.Timer(0.4, held.close)
    releaser.start()
    engine.connect().close()  # waits for the held connection
    releaser.join()
    snap(readings)  # a fresh collection for the view (the fixture's Readings reuse one for 1 s)
    slow = pool_view.compute(ctx).body["pools"][name]["wait_time_p95_seconds"]
    assert 0.25 <= slow <= 0.5
    waits = snap(readings).points("db.client.connection.wait_time", {POOL_NAME: name})
    median = quantile(waits, 0.5)
    assert median is not None and median < 0.25
