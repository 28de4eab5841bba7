"""Statement spans and db.client.operation.duration, in process on SQLite (real SQLAlchemy, real SDK).

The app-level tests under opentelemetry-instrument, on PostgreSQL too, are in test_statements_app.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from otel_reliability.instrumentation import sql, statement_attributes, statements
from otel_reliability.instrumentation.statements import StatementsInstrumentor


@pytest.mark.parametrize(
    ("text", "query_text", "operation", "collection"),
    [
        ("select 4242", "select ?", "SELECT", None),
        ("SELECT a FROM users WHERE name = 'O''Brien' AND x = -3.5e10 -- it's 7", "SELECT a FROM users WHERE "
         "name = ? AND x = -?", "SELECT", "users"),
        ("SELECT t1.a FROM public.t1 WHERE c=$1 AND d=%(p_1)s AND e=:e1 AND f=? AND b=0x1F", "SELECT t1.a FROM "
         "public.t1 WHERE c=$1 AND d=%(p_1)s AND e=:e1 AND f=? AND b=?", "SELECT", "public.t1"),
        ("INSERT INTO \"Users\" (n) VALUES (E'it\\'s'), ($$99$$), ($q$x$q$)", 'INSERT INTO "Users" (n) VALUES (?), '
         "(?), (?)", "INSERT", "Users"),
        ("WITH x AS (SELECT * FROM a WHERE v > 1) UPDATE ONLY b SET v = 2 FROM x", "WITH x AS (SELECT * FROM a WHERE "
         "v > ?) UPDATE ONLY b SET v = ? FROM x", "UPDATE", "b"),
        ("delete from s.t where x='y'", "delete from s.t where x=?", "DELETE", "s.t"),
        ("CREATE TABLE IF NOT EXISTS episodes (id int)", "CREATE TABLE IF NOT EXISTS episodes (id int)", "CREATE",
         "episodes"),
        ("select * from (select 1) as q", "select * from (select ?) as q", "SELECT", None),
        ("/* traceparent='00-ab12' */ SELECT 1", "SELECT ?", "SELECT", None),
        ("frobnicate 12", "frobnicate ?", None, None),
        ("select a #>> '{b,7}' from t", "select a #>> ? from t", "SELECT", "t"),
        ("select 'unterminated secret", "select ?", "SELECT", None),
        ("select 1 /* open comment 42", "select ?", "SELECT", None),
        ("select $$open body 42", "select ?", "SELECT", None),
    ],
)  # fmt: skip
def test_sql_text_loses_its_literals_and_names_operation_and_table(
    text: str, query_text: str, operation: str | None, collection: str | None
) -> None:
    assert sql.describe(text) == sql.Statement(query_text, operation, collection)


def test_a_huge_statement_is_read_only_up_to_max_text() -> None:
    huge = "INSERT INTO t (a) VALUES " + ",".join(f"('v{i}')" for i in range(10_000))
    described = sql.describe(huge)
    assert (described.operation, described.collection) == ("INSERT", "t")
    assert described.query_text.endswith(" ...") and len(described.query_text) <= sql.MAX_TEXT
    assert "v1" not in described.query_text


def test_mysql_double_quotes_are_strings_and_hash_starts_a_comment() -> None:
    described = sql.describe('select "secret", 5 from t where s = "x\\"y" # note 9', mysql=True)
    assert described == sql.Statement("select ?, ? from t where s = ?", "SELECT", "t")


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.instrumentation_scope.name.endswith("statements")]

    def points(self) -> list[tuple[dict[str, Any], int]]:
        data = self.reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == statements.DURATION:
                        out += [(dict(dp.attributes), dp.count) for dp in metric.data.data_points]
        return out


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    StatementsInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Telemetry(exporter, reader, tracer_provider)
    finally:
        StatementsInstrumentor().uninstrument()
        meter_provider.shutdown()


def test_engine_created_before_instrumentation_is_traced_under_the_current_span() -> None:
    engine = sa.create_engine("sqlite://")  # before instrument()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    StatementsInstrumentor().instrument(tracer_provider=provider, meter_provider=MeterProvider([reader]))
    try:
        with provider.get_tracer("test").start_as_current_span("request") as request, engine.connect() as conn:
            conn.execute(sa.text("SELECT 4242, 'secret'"))
    finally:
        StatementsInstrumentor().uninstrument()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    statement = spans["SELECT"]
    assert statement.kind is SpanKind.CLIENT
    assert statement.parent is not None and statement.parent.span_id == request.get_span_context().span_id
    attrs = dict(statement.attributes or {})
    wait = attrs.pop("db.client.connection.wait_time")
    assert attrs == {"db.system.name": "sqlite", "db.operation.name": "SELECT", "db.query.text": "SELECT ?, ?"}
    assert 0 <= wait < 5  # type: ignore[operator]


def test_orm_statements_attributes_and_duration_metric(telemetry: Telemetry, tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    table = sa.Table("items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("n", sa.Text))
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(table), [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}])
        conn.execute(sa.select(table).where(table.c.id == 1)).all()
        with pytest.raises(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT * FROM missing WHERE id = 77"))
    by_name = {s.name: s for s in telemetry.finished()}
    assert {"CREATE items", "BATCH INSERT items", "SELECT items", "SELECT missing"} <= set(by_name)
    assert by_name["BATCH INSERT items"].attributes["db.operation.batch.size"] == 2  # type: ignore[index]
    failed = by_name["SELECT missing"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "sqlite3.OperationalError"  # type: ignore[index]
    assert not failed.events  # no exception event: drivers put values in their messages
    for span in telemetry.finished():
        assert "77" not in str(span.attributes.get("db.query.text")) and "secret" not in str(span.attributes)
    points = {tuple(sorted(a.items())): n for a, n in telemetry.points()}
    assert points[(("db.collection.name", "items"), ("db.operation.name", "SELECT"), ("db.system.name", "sqlite"))]
    key = (
        ("db.collection.name", "missing"),
        ("db.operation.name", "SELECT"),
        ("db.system.name", "sqlite"),
        ("error.type", "sqlite3.OperationalError"),
    )
    assert points[key] == 1
    allowed = {"db.system.name", "db.operation.name", "db.collection.name", "error.type"}
    assert all(set(attrs) <= allowed for attrs, _ in telemetry.points())


def test_suppressed_statements_and_the_stuck_detector_are_not_traced(telemetry: Telemetry, tmp_path: Path) -> None:
    from otel_reliability.instrumentation.stuck import register_stuck_detector, unregister_stuck_detector

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    jobs = sa.Table(
        "jobs", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("status", sa.Text),
        sa.Column("updated_at", sa.DateTime),
    )  # fmt: skip
    jobs.metadata.create_all(engine)
    telemetry.spans.clear()
    with suppress_instrumentation(), engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    detector = register_stuck_detector(
        "jobs-under-test", bind=engine, table="jobs", status_column="status", in_progress_values=["running"],
        timestamp_column="updated_at", error_value="error", interval=3600,
    )  # fmt: skip
    try:
        detector.check()  # reflects the table, counts: several statements, none of them traced
    finally:
        unregister_stuck_detector("jobs-under-test")
    assert telemetry.finished() == []
    assert all(attrs.get("db.collection.name") != "jobs" or attrs.get("db.operation.name") == "CREATE"
               for attrs, _ in telemetry.points())  # fmt: skip
    with engine.connect() as conn:  # and the instrumentor is still on
        conn.execute(sa.select(jobs))
    assert [s.name for s in telemetry.finished()] == ["SELECT jobs"]


def test_pool_wait_is_its_own_attribute_and_a_failed_checkout_an_event(telemetry: Telemetry) -> None:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.QueuePool, pool_size=1, max_overflow=0, pool_timeout=0.3)
    tracer = telemetry.tracer_provider.get_tracer("test")
    held = engine.connect()
    threading.Timer(0.15, held.close).start()
    with engine.connect() as conn:  # waits ~0.15 s for the held connection
        conn.execute(sa.text("SELECT 1"))
        conn.execute(sa.text("SELECT 2"))
    first, second = telemetry.finished()
    assert first.attributes["db.client.connection.wait_time"] >= 0.1  # type: ignore[index,operator]
    assert "db.client.connection.wait_time" not in second.attributes  # type: ignore[operator]
    held = engine.connect()
    try:
        with tracer.start_as_current_span("request") as request, pytest.raises(sa.exc.TimeoutError):
            engine.connect()
    finally:
        held.close()
    (event,) = request.events  # type: ignore[attr-defined]
    assert event.name == "db.client.connection.wait"
    assert event.attributes["error.type"] == "sqlalchemy.exc.TimeoutError"
    assert event.attributes["db.client.connection.wait_time"] >= 0.25


def test_async_engine_statements_are_children_of_the_current_span(telemetry: Telemetry) -> None:
    pytest.importorskip("aiosqlite")
    from sqlalchemy.ext.asyncio import create_async_engine

    tracer = telemetry.tracer_provider.get_tracer("test")

    async def main() -> int:
        engine = create_async_engine("sqlite+aiosqlite://")
        with tracer.start_as_current_span("request") as span:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 31337"))
        await engine.dispose()
        return span.get_span_context().span_id

    parent = asyncio.run(main())
    (span,) = telemetry.finished()
    assert span.name == "SELECT" and span.attributes["db.query.text"] == "SELECT ?"  # type: ignore[index]
    assert span.parent is not None and span.parent.span_id == parent


def test_collection_names_in_the_metric_are_bounded(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statement_attributes, "MAX_COLLECTIONS", 2)
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        for name in ("a", "b", "c"):
            conn.execute(sa.text(f"CREATE TABLE {name} (x int)"))
    collections = {attrs.get("db.collection.name") for attrs, _ in telemetry.points()}
    assert collections == {"a", "b", None}  # the third table is counted without its name
    assert {s.name for s in telemetry.finished()} == {"CREATE a", "CREATE b", "CREATE c"}  # spans keep it


def test_uninstrument_removes_every_hook(telemetry: Telemetry) -> None:
    engine = sa.create_engine("sqlite://")
    StatementsInstrumentor().uninstrument()
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert telemetry.finished() == [] and telemetry.points() == []
    assert not getattr(sa.engine.Engine.raw_connection, "__wrapped__", None)


def test_with_an_always_off_sampler_no_span_starts_and_the_metric_still_counts() -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    assert statements.drops_every_span(provider) and not statements.drops_every_span(TracerProvider())
    StatementsInstrumentor().instrument(tracer_provider=provider, meter_provider=MeterProvider([reader]))
    try:
        with sa.create_engine("sqlite://").connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    finally:
        StatementsInstrumentor().uninstrument()
    assert exporter.get_finished_spans() == ()
    data = reader.get_metrics_data()
    assert data is not None
    (point,) = [
        p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics for p in m.data.data_points
    ]
    assert dict(point.attributes) == {"db.system.name": "sqlite", "db.operation.name": "SELECT"}


def test_a_failing_span_processor_never_fails_the_statement(telemetry: Telemetry) -> None:
    class Broken(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            raise RuntimeError("broken processor")

    telemetry.tracer_provider.add_span_processor(Broken(InMemorySpanExporter()))
    with sa.create_engine("sqlite://").connect() as conn:
        assert conn.execute(sa.text("SELECT 7")).scalar() == 7


def test_statements_of_run_in_transaction_async_are_children_of_its_span(telemetry: Telemetry) -> None:
    pytest.importorskip("aiosqlite")
    from sqlalchemy.ext.asyncio import create_async_engine

    from otel_reliability.db import transactions

    transactions.use_providers(tracer_provider=telemetry.tracer_provider)

    async def main() -> None:
        engine = create_async_engine("sqlite+aiosqlite://")

        async def work(session: Any) -> None:
            await session.execute(sa.text("SELECT 1"))

        await transactions.run_in_transaction_async(engine, work)
        await engine.dispose()

    try:
        asyncio.run(main())
    finally:
        transactions.use_providers()
    spans = telemetry.spans.get_finished_spans()
    (transaction,) = [s for s in spans if s.name == "db.transaction"]
    (statement,) = telemetry.finished()
    assert statement.parent is not None and statement.parent.span_id == transaction.context.span_id


def test_postgres_first_connect_checks_are_not_the_applications_statements(telemetry: Telemetry, postgres: Any) -> None:
    """PostgreSQL's dialect runs ``select pg_catalog.version()``, ``select current_schema()`` and ``show
    standard_conforming_strings`` on an engine's first connection (``Dialect.initialize``): neither spans nor
    counted; the same statement run by the application afterwards is."""
    engine = sa.create_engine(postgres.url())
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
            conn.exec_driver_sql("show standard_conforming_strings")
    finally:
        engine.dispose()
    texts = [(s.attributes or {}).get("db.query.text") for s in telemetry.finished()]
    assert texts == ["select ?", "show standard_conforming_strings"]
    assert sum(count for _, count in telemetry.points()) == 2
