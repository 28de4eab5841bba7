"""statement_timeout read on each new connection of real PostgreSQL pools, and the db-timeout view."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from otel_reliability import config
from otel_reliability.health.model import CheckContext, Status
from otel_reliability.health.views import db_timeout
from otel_reliability.instrumentation import statement_timeout
from otel_reliability.instrumentation.pool import POOL_NAME
from otel_reliability.readings import Readings
from tests.support import Postgres, pool_readings, require


@pytest.fixture
def readings() -> Iterator[Readings]:
    with pool_readings() as reader:
        yield reader


def pg_name(pg: Postgres) -> str:
    return f"127.0.0.1:{pg.port}/{pg.database}"


def test_read_on_the_first_checkout_of_each_connection(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(postgres.url("psycopg"), pool_size=1, max_overflow=0)
    name = pg_name(postgres)
    assert name not in statement_timeout.server_settings()  # nothing read before a connection is used
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    reading = statement_timeout.server_settings()[name]
    assert reading.shown == "5min" and reading.seconds == 300.0
    assert readings.snapshot(max_age=0).value("db.client.statement_timeout", {POOL_NAME: name}) == 300.0
    result = db_timeout.compute(CheckContext(readings, config.load({})))
    assert result.status is Status.HEALTHY
    assert result.body["statement_timeout"] == "5min" and result.body["configured"] is True
    assert result.body["pools"][name]["sampled_at"].endswith("Z")
    wrong = db_timeout.compute(
        CheckContext(readings, config.load({"OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT": "60"}))
    )
    assert wrong.status is Status.DEGRADED and wrong.body["configured"] is False
    engine.dispose()


def test_known_under_a_saturated_pool_and_not_counted_as_app_traffic(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(
        postgres.url("psycopg"), pool_size=2, max_overflow=1, pool_timeout=1, pool_logging_name="saturated"
    )
    held = [engine.connect() for _ in range(3)]  # every connection the pool may open is held by the app
    try:
        snap = readings.snapshot(max_age=0)
        assert snap.value("db.client.statement_timeout", {POOL_NAME: "saturated"}) == 300.0
        # Three checkouts by the app and nothing else: the read was no checkout of its own.
        assert snap.value("db.client.connection.wait_time", {POOL_NAME: "saturated"}) == 3
        with pytest.raises(sa.exc.TimeoutError):
            engine.connect()
    finally:
        for connection in held:
            connection.close()
    engine.dispose()


def test_connection_is_handed_on_outside_a_transaction(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(postgres.url("psycopg"), isolation_level="SERIALIZABLE", pool_logging_name="iso")
    with engine.connect() as c:  # the isolation level is set after the read: no "connection in transaction"
        assert c.execute(sa.text("SHOW transaction_isolation")).scalar() == "serializable"
    assert statement_timeout.server_settings()["iso"].seconds == 300.0
    engine.dispose()


def test_connect_args_are_what_the_server_reports(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(
        postgres.url("psycopg"), logging_name="x", pool_logging_name="disabled-timeout",
        connect_args={"options": "-c statement_timeout=0"},
    )  # fmt: skip
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    assert statement_timeout.server_settings()["disabled-timeout"].seconds == 0.0
    result = db_timeout.compute(CheckContext(readings, config.load({})))
    # Nothing declared: a disabled timeout (PostgreSQL's default) is advice, not a degraded health.
    assert result.status is Status.HEALTHY and result.body["configured"] is False
    assert result.body["pools"]["disabled-timeout"]["statement_timeout"] == "0"
    assert [a.split(":")[0] for a in result.body["advice"]] == ["disabled-timeout"]
    declared = db_timeout.compute(
        CheckContext(readings, config.load({"OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT": "300"}))
    )
    assert declared.status is Status.DEGRADED and declared.body["advice"] == []
    engine.dispose()


def test_a_connect_listener_setting_is_seen(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(postgres.url("psycopg"), pool_logging_name="listener")

    @sa.event.listens_for(engine, "connect")
    def set_timeout(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET statement_timeout = '42s'")
        cursor.close()
        dbapi_connection.commit()

    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    assert statement_timeout.server_settings()["listener"].seconds == 42.0
    engine.dispose()


def test_other_dialects_are_not_supported_not_an_error(readings: Readings) -> None:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    result = db_timeout.compute(CheckContext(readings, config.load({})))
    assert result.status is Status.HEALTHY
    assert result.body["pools"]["sqlite::memory:"]["statement_timeout"] == "not supported"
    assert result.body["statement_timeout"] == "not supported"


def test_async_engine_is_read_on_its_own_connection(readings: Readings, postgres: Postgres) -> None:
    require(importlib.util.find_spec("greenlet") is not None, "greenlet (sqlalchemy[asyncio]) for async engines")
    from sqlalchemy.ext.asyncio import create_async_engine

    async def main() -> None:
        engine = create_async_engine(postgres.url("asyncpg"), pool_logging_name="async-pool")
        async with engine.connect() as c:
            assert (await c.execute(sa.text("SELECT 1"))).scalar() == 1
        await engine.dispose()

    asyncio.run(main())
    assert statement_timeout.server_settings()["async-pool"].shown == "5min"


def test_password_not_in_view(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(postgres.url("psycopg"))
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    body: Any = db_timeout.compute(CheckContext(readings, config.load({}))).body
    assert postgres.password not in repr(body)
    engine.dispose()
