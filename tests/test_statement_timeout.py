"""statement_timeout read in the background from real PostgreSQL pools, and the db-timeout view."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider

from otel_reliability import config
from otel_reliability.db import statement_timeout
from otel_reliability.health.model import CheckContext, Status
from otel_reliability.health.views import db_timeout
from otel_reliability.instrumentation.pool import POOL_NAME, PoolInstrumentor
from otel_reliability.readings import Readings
from tests.support import Postgres, require


@pytest.fixture
def readings() -> Iterator[Readings]:
    reader = Readings(background=False)
    provider = MeterProvider(metric_readers=[reader])
    PoolInstrumentor().instrument(meter_provider=provider)
    try:
        yield reader
    finally:
        PoolInstrumentor().uninstrument()
        provider.shutdown()


def pg_name(pg: Postgres) -> str:
    return f"127.0.0.1:{pg.port}/{pg.database}"


def test_reads_the_server_value_on_an_idle_pooled_connection(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(postgres.url("psycopg"), pool_size=1, max_overflow=0)
    name = pg_name(postgres)
    held = engine.connect()
    statement_timeout.sample_due(force=True)  # no idle connection: skipped, nothing waited for
    assert name not in statement_timeout.server_settings()
    held.close()
    statement_timeout.sample_due(force=True)
    reading = statement_timeout.server_settings()[name]
    assert reading.shown == "5min" and reading.seconds == 300.0
    assert readings.snapshot(max_age=0).value("db.client.statement_timeout", {POOL_NAME: name}) == 300.0
    result = db_timeout.compute(CheckContext(readings, config.load({})))
    assert result.status is Status.HEALTHY
    assert result.body["statement_timeout"] == "5min" and result.body["configured"] is True
    wrong = db_timeout.compute(
        CheckContext(readings, config.load({"OTEL_RELIABILITY_EXPECTED_STATEMENT_TIMEOUT": "60"}))
    )
    assert wrong.status is Status.DEGRADED and wrong.body["configured"] is False
    engine.dispose()


def test_connect_args_are_what_the_server_reports(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(
        postgres.url("psycopg"), logging_name="x", pool_logging_name="disabled-timeout",
        connect_args={"options": "-c statement_timeout=0"},
    )  # fmt: skip
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    statement_timeout.sample_due(force=True)
    assert statement_timeout.server_settings()["disabled-timeout"].seconds == 0.0
    result = db_timeout.compute(CheckContext(readings, config.load({})))
    assert result.status is Status.DEGRADED
    assert result.body["pools"]["disabled-timeout"]["statement_timeout"] == "0"
    engine.dispose()


def test_other_dialects_are_not_supported_not_an_error(readings: Readings) -> None:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    statement_timeout.sample_due(force=True)
    result = db_timeout.compute(CheckContext(readings, config.load({})))
    assert result.status is Status.HEALTHY
    assert result.body["pools"]["sqlite::memory:"]["statement_timeout"] == "not supported"
    assert result.body["statement_timeout"] == "not supported"


def test_async_engine_is_read_on_a_private_connection(readings: Readings, postgres: Postgres) -> None:
    require(importlib.util.find_spec("greenlet") is not None, "greenlet (sqlalchemy[asyncio]) for async engines")
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(postgres.url("asyncpg"), pool_logging_name="async-pool")
    statement_timeout.sample_due(force=True)  # from this (non-event-loop) thread
    assert statement_timeout.server_settings()["async-pool"].shown == "5min"
    asyncio.run(engine.dispose())


def test_password_not_in_view(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(postgres.url("psycopg"))
    with engine.connect() as c:
        c.execute(sa.text("SELECT 1"))
    statement_timeout.sample_due(force=True)
    body: Any = db_timeout.compute(CheckContext(readings, config.load({}))).body
    assert postgres.password not in repr(body)
    engine.dispose()
