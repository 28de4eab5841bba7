"""The instrumented libraries keep their behaviour: nothing of ours shows in their public listener lists, a
connection's ``info`` or a pool's ``__dict__``, and counting survives ``Pool.dispatch._clear()``.

Each test here failed before our state moved beside the libraries' objects; ``make compat`` runs the libraries'
own suites for the same property at scale."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import purgatory
import pybreaker
import pytest
import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from sqlalchemy import pool as sa_pool

from otel_reliability import config
from otel_reliability.health.model import CheckContext
from otel_reliability.health.views import breakers as breakers_view
from otel_reliability.instrumentation.pool import POOL_NAME, PoolInstrumentor
from otel_reliability.readings import Readings
from tests.support import Postgres, breakers_instrumented


@pytest.fixture
def readings() -> Iterator[Readings]:
    reader = Readings(background=False, cache_seconds=0.0)
    provider = MeterProvider(metric_readers=[reader])
    try:
        with breakers_instrumented(provider, PoolInstrumentor()):
            yield reader
    finally:
        provider.shutdown()


def calls(reader: Readings, name: str) -> dict[str, Any]:
    body = breakers_view.compute(CheckContext(readings=reader, settings=config.load({}))).body
    return dict(body["breakers"][name]["calls"])


def ok() -> str:
    return "ok"


def boom() -> None:
    raise RuntimeError("down")


# --- breakers -----------------------------------------------------------------------------------------------------
class Mine(pybreaker.CircuitBreakerListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.successes = 0

    def success(self, cb: Any) -> None:
        self.successes += 1


def test_pybreaker_breaker_built_from_anothers_listeners_counts_each_call_once(readings: Readings) -> None:
    mine = Mine()
    a = pybreaker.CircuitBreaker(name="a", listeners=[mine])
    assert a.listeners == (mine,)  # only the user's own listener: ours is not in pybreaker's public tuple
    b = pybreaker.CircuitBreaker(name="b", listeners=a.listeners)
    assert b.listeners == (mine,)
    b.call(ok)
    b.call(ok)
    a.call(ok)
    assert calls(readings, "b") == {"success": 2, "failure": 0, "rejected": 0}
    assert calls(readings, "a") == {"success": 1, "failure": 0, "rejected": 0}
    assert mine.successes == 3  # the user's listener is told exactly as without us
    a.add_listener(Mine())
    assert len(a.listeners) == 2


def test_purgatory_factory_listeners_are_only_the_users(readings: Readings) -> None:
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=1, default_ttl=60)
    assert factory.listeners == {}
    seen: list[str] = []

    def hook(name: str, event_type: str, event: Any) -> None:
        seen.append(event_type)

    factory.add_listener(hook)
    assert len(factory.listeners) == 1
    guarded = factory("svc")(boom)
    for _ in range(3):
        with pytest.raises((RuntimeError, purgatory.domain.model.OpenedState)):
            guarded()
    # The refused calls went through the factory: counted as rejections, as the user's hook saw the breaker open.
    assert calls(readings, "svc") == {"success": 0, "failure": 1, "rejected": 2}
    assert "state_changed" in seen and seen[0] == "circuit_breaker_created"
    factory.remove_listener(hook)
    assert factory.listeners == {}


# --- pools --------------------------------------------------------------------------------------------------------
def ours(obj: Any) -> list[str]:
    return [key for key in vars(obj) if "otel" in str(key).lower()]


def check_untouched(engine_or_pool: Any) -> None:
    """Check out twice (the second is a reused connection), then look at info and the pool's __dict__."""
    pool = engine_or_pool.pool if isinstance(engine_or_pool, sa.Engine) else engine_or_pool
    for _ in range(2):
        if isinstance(engine_or_pool, sa.Engine):
            with engine_or_pool.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
                assert conn.info == {}
                assert conn.connection.info == {} and conn.connection.record_info == {}
        else:
            proxied = pool.connect()
            assert proxied.info == {} and proxied.record_info == {}
            proxied.close()
    assert ours(pool) == []
    assert ours(pool.recreate()) == []  # nothing of ours is copied into the recreated pool either


def test_sqlite_engine_info_and_pool_dict_untouched(readings: Readings, tmp_path: Any) -> None:
    check_untouched(sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}", poolclass=sa_pool.QueuePool))


def test_engineless_pools_info_and_dict_untouched(readings: Readings, tmp_path: Any) -> None:
    import sqlite3

    path = str(tmp_path / "b.db")
    for cls in (sa_pool.QueuePool, sa_pool.NullPool, sa_pool.SingletonThreadPool, sa_pool.StaticPool):
        check_untouched(cls(lambda: sqlite3.connect(path, check_same_thread=False)))


def test_postgres_engine_and_engineless_pool_untouched(readings: Readings, postgres: Postgres) -> None:
    engine = sa.create_engine(postgres.url("psycopg"), pool_size=1, max_overflow=0)
    check_untouched(engine)
    # The statement_timeout was still read, once per DBAPI connection, from beside the record.
    name = f"127.0.0.1:{postgres.port}/{postgres.database}"
    assert readings.snapshot(max_age=0).value("db.client.statement_timeout", {POOL_NAME: name}) is not None
    import psycopg

    plain = f"postgresql://{postgres.user}:{postgres.password}@127.0.0.1:{postgres.port}/{postgres.database}"
    check_untouched(sa_pool.QueuePool(lambda: psycopg.connect(plain)))
    engine.dispose()


def use_count(reader: Readings, name: str) -> float:
    return reader.snapshot(max_age=0).total("db.client.connection.use_time", {POOL_NAME: name}) or 0.0


def test_counting_survives_a_cleared_pool_dispatch(readings: Readings, tmp_path: Any) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.db'}", pool_logging_name="cleared")
    engine.connect().close()
    assert use_count(readings, "cleared") == 1
    # SQLAlchemy's own PoolEventsTest teardown does this; so can a user's test set-up.
    sa_pool.Pool.dispatch._clear()
    engine.connect().close()
    assert use_count(readings, "cleared") == 2
    with engine.connect() as conn:
        conn.invalidate()
    s = readings.snapshot(max_age=0)
    assert s.total("db.client.connection.invalidations", {POOL_NAME: "cleared"}) == 1
    # Removed some other way: noticed at the next collection, counted again from then on.
    sa_pool.Pool.dispatch.checkin.clear()
    readings.snapshot(max_age=0)
    engine.connect().close()
    assert use_count(readings, "cleared") == 4
    engine.dispose()


def test_an_exception_a_breaker_saw_still_pickles(readings: Readings) -> None:
    """A failure (the user's own exception) and the refusal are tagged for the HTTP mapping; either may be sent to
    another process (a ProcessPoolExecutor, a task queue's result) and must pickle as it did without us."""
    import pickle

    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, name="pickled")
    with pytest.raises(pybreaker.CircuitBreakerError) as tripped:
        breaker.call(boom)
    with pytest.raises(pybreaker.CircuitBreakerError) as refused:
        breaker.call(ok)
    for error in (tripped.value.__context__, tripped.value, refused.value):
        assert error is not None
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and again.args == error.args


def test_statement_spans_leave_the_engine_and_the_connection_proxy_alone(tmp_path: Any) -> None:
    """With spans recording, the statements instrumentor keeps each engine's description and each checkout's
    wait beside them: neither the Engine's nor the pooled connection's __dict__ changes."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_reliability.instrumentation.statements import StatementsInstrumentor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    StatementsInstrumentor().instrument(tracer_provider=provider, meter_provider=MeterProvider())
    try:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'd.db'}")
        with provider.get_tracer("test").start_as_current_span("request"), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            assert ours(engine) == [] and ours(conn.connection) == []
        with engine.connect() as conn:  # the wait is kept until a statement takes it: none here
            assert ours(conn.connection) == []
        assert ours(engine) == []
    finally:
        StatementsInstrumentor().uninstrument()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert "db.client.connection.wait_time" in dict(spans["SELECT"].attributes or {})  # still measured
