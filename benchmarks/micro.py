"""In-process figures: collection time vs breakers and pools (figure 3), per-call costs (figure 5) and the cost of
tracing a database statement (figure 6).

Each per-call cost is measured as a pair in one round, uninstrumented then instrumented, on a MeterProvider
with two readers (the Readings and a Prometheus reader, as under opentelemetry-instrument), with the distro's
defaults for spans and exemplars (not recorded while traces go nowhere). The ratio of each round is kept;
the table shows the median and the range over rounds. Timings are the best of 3 repeats of ``number`` calls.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import timeit
from collections.abc import Callable, Iterator
from typing import Any

# The distro's defaults when no traces are exported, set before the SDK reads them.
os.environ.setdefault("OTEL_METRICS_EXEMPLAR_FILTER", "always_off")

import circuitbreaker
import purgatory
import pybreaker
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy import pool as sa_pool
from sqlalchemy.orm import Session, sessionmaker

from otel_reliability.db.transactions import run_in_transaction
from otel_reliability.instrumentation._published import quiet_views
from otel_reliability.instrumentation.breakers import BreakersInstrumentor
from otel_reliability.instrumentation.operations import OperationsInstrumentor, track_operation
from otel_reliability.instrumentation.pool import PoolInstrumentor
from otel_reliability.instrumentation.statements import StatementsInstrumentor
from otel_reliability.readings import Readings

# As under opentelemetry-instrument with the distro's defaults while traces go nowhere: an SDK tracer provider
# whose sampler records nothing.
trace.set_tracer_provider(TracerProvider(sampler=ALWAYS_OFF))


def best(func: Callable[[], Any], number: int) -> float:
    func()
    return min(timeit.repeat(func, number=number, repeat=3)) / number


@contextlib.contextmanager
def instrumented(*instrumentors: Any, **kwargs: Any) -> Iterator[tuple[Readings, PrometheusMetricReader]]:
    readings = Readings(background=False, cache_seconds=0.0)
    prometheus = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[prometheus], views=quiet_views())
    readings.bind(provider)
    for inst in instrumentors:
        inst.instrument(meter_provider=provider, **kwargs)
    try:
        yield readings, prometheus
    finally:
        for inst in instrumentors:
            inst.uninstrument()
        provider.shutdown()
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(prometheus._collector)


def _ok() -> int:
    return 1


def pybreaker_pair(number: int) -> tuple[float, float]:
    plain = pybreaker.CircuitBreaker(name="plain")
    a = best(lambda: plain.call(_ok), number)
    with instrumented(BreakersInstrumentor()):
        breaker = pybreaker.CircuitBreaker(name="instrumented")
        b = best(lambda: breaker.call(_ok), number)
    return a, b


def circuitbreaker_pair(number: int) -> tuple[float, float]:
    plain = circuitbreaker.CircuitBreaker(name="plain", failure_threshold=5)(_ok)
    a = best(plain, number)
    with instrumented(BreakersInstrumentor()):
        guarded = circuitbreaker.CircuitBreaker(name="instrumented", failure_threshold=5)(_ok)
        b = best(guarded, number)
    return a, b


def purgatory_pair(number: int) -> tuple[float, float]:
    plain = purgatory.SyncCircuitBreakerFactory(default_threshold=5)("plain")(_ok)
    a = best(plain, number)
    with instrumented(BreakersInstrumentor()):
        guarded = purgatory.SyncCircuitBreakerFactory(default_threshold=5)("instrumented")(_ok)
        b = best(guarded, number)
    return a, b


def _checkout_loop(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1").scalar()


def pool_pair(url: str, number: int) -> tuple[float, float]:
    engine = sa.create_engine(url, poolclass=sa_pool.QueuePool, pool_size=2)
    a = best(lambda: _checkout_loop(engine), number)
    engine.dispose()
    with instrumented(PoolInstrumentor()):
        engine = sa.create_engine(url, poolclass=sa_pool.QueuePool, pool_size=2)
        b = best(lambda: _checkout_loop(engine), number)
        engine.dispose()
    return a, b


@contextlib.contextmanager
def _bare() -> Iterator[None]:
    yield


def track_operation_pair(number: int) -> tuple[float, float]:
    def plain() -> None:
        with _bare():
            pass

    def tracked() -> None:
        with track_operation("bench", key="1"):
            pass

    a = best(plain, number)
    with instrumented(OperationsInstrumentor()):
        b = best(tracked, number)
    return a, b


def transaction_pair(url: str, number: int) -> tuple[float, float]:
    engine = sa.create_engine(url, poolclass=sa_pool.QueuePool, pool_size=2)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS bench_counter (id INTEGER PRIMARY KEY, n INTEGER)")
        conn.exec_driver_sql("DELETE FROM bench_counter")
        conn.exec_driver_sql("INSERT INTO bench_counter VALUES (1, 0)")
    factory = sessionmaker(bind=engine)

    def work(session: Session) -> None:
        session.execute(sa.text("UPDATE bench_counter SET n = n + 1 WHERE id = 1"))

    def plain() -> None:
        with factory() as session, session.begin():
            work(session)

    a = best(plain, number)
    with instrumented(PoolInstrumentor()):
        b = best(lambda: run_in_transaction(factory, work), number)
    engine.dispose()
    return a, b


def per_call(rounds: int, quick: bool, pg_url: str | None) -> list[str]:
    n = 200 if quick else 1
    cases: list[tuple[str, Callable[[], tuple[float, float]], str]] = [
        ("pybreaker call (success)", lambda: pybreaker_pair(20_000 // n), "<= 1.3x (0.1.0: 1.76x)"),
        ("circuitbreaker call (success)", lambda: circuitbreaker_pair(20_000 // n), ""),
        ("purgatory call (success, in-memory)", lambda: purgatory_pair(5_000 // n), ""),
        ("pool checkout-execute-checkin, SQLite memory", lambda: pool_pair("sqlite://", 5_000 // n), ""),
        ("track_operation enter/exit vs a bare context manager", lambda: track_operation_pair(20_000 // n), ""),
        ("run_in_transaction (no conflict) vs session.begin(), SQLite file",
         lambda: transaction_pair("sqlite:////tmp/otel-reliability-bench-tx.db", 2_000 // n), ""),
    ]  # fmt: skip
    if pg_url:
        cases.insert(2, ("pool checkout-execute-checkin, PostgreSQL", lambda: pool_pair(pg_url, 2_000), "<= 1.05x"))
        cases.append(("run_in_transaction (no conflict), PostgreSQL", lambda: transaction_pair(pg_url, 1_000), ""))
    lines = [
        "## 5. Per-call costs, instrumented vs not",
        "",
        f"Best of 3 repeats per measurement, {rounds} rounds; ratio = instrumented / uninstrumented within a round.",
        "",
        "| call | uninstrumented µs | instrumented µs | ratio (median, range) | target |",
        "|---|---|---|---|---|",
    ]
    for label, pair, target in cases:
        plain, instr = [], []
        for _ in range(rounds):
            a, b = pair()
            plain.append(a)
            instr.append(b)
        ratios = [b / a for a, b in zip(plain, instr, strict=True)]
        lines.append(
            f"| {label} | {statistics.median(plain) * 1e6:.1f} | {statistics.median(instr) * 1e6:.1f} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | {target} |"
        )
        print(lines[-1], flush=True)
    return [*lines, ""]


def collection(quick: bool) -> list[str]:
    lines = [
        "## 3. Collection time vs breakers and pools",
        "",
        "One Readings collection (what a health call costs when something changed since the last one) and one "
        "Prometheus scrape (prometheus_client's text rendering of the same provider), in-process, best of 3 x 5; "
        "every breaker and pool instrumented, plus the standard process gauges. Target: <= 8 ms with 100 breakers "
        "and 10 pools.",
        "",
        "| breakers | pools | data points | Readings collection ms | Prometheus scrape ms |",
        "|---|---|---|---|---|",
    ]
    configs = [(10, 1), (100, 1), (100, 10), (1000, 10)] if not quick else [(10, 1)]
    with instrumented(BreakersInstrumentor(), PoolInstrumentor()) as (readings, _):
        breakers: list[pybreaker.CircuitBreaker] = []
        engines: list[sa.Engine] = []
        for count, pools in configs:
            while len(breakers) < count:
                breakers.append(pybreaker.CircuitBreaker(name=f"b{len(breakers)}"))
            while len(engines) < pools:
                engine = sa.create_engine(
                    f"sqlite:////tmp/otel-reliability-bench-pool{len(engines)}.db", poolclass=sa_pool.QueuePool
                )
                _checkout_loop(engine)
                engines.append(engine)
            snap = readings.snapshot(max_age=0)
            points = sum(len(p) for p in snap.metrics.values())
            collect = min(timeit.repeat(lambda: readings.snapshot(max_age=0), number=5, repeat=3)) / 5
            scrape = min(timeit.repeat(lambda: generate_latest(REGISTRY), number=5, repeat=3)) / 5
            lines.append(f"| {count} | {pools} | {points} | {collect * 1e3:.2f} | {scrape * 1e3:.2f} |")
            print(lines[-1], flush=True)
        for engine in engines:
            engine.dispose()
    return [*lines, ""]


class _Discard:
    """A span exporter that drops everything: the figure is the cost in the app's thread, not the export."""

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def statement_pair(url: str, number: int, sampled: bool) -> tuple[float, float]:
    """One ORM-style SELECT by primary key on a connection already checked out, without then with
    ``reliability_statements`` (spans not recorded, as by the distro without an OTLP endpoint, or recorded and
    handed to a BatchSpanProcessor)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    engine = sa.create_engine(url, poolclass=sa_pool.QueuePool, pool_size=2)
    items = sa.Table("bench_items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    items.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.delete(items))
        conn.execute(sa.insert(items).values(id=1))
    query = sa.select(items.c.id).where(items.c.id == 1)

    def run_on(conn: sa.Connection) -> Callable[[], None]:
        return lambda: conn.execute(query).scalar()

    with engine.connect() as conn:
        a = best(run_on(conn), number)
    tracer_provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    tracer_provider.add_span_processor(BatchSpanProcessor(_Discard()))  # type: ignore[arg-type]
    try:
        with instrumented(StatementsInstrumentor(), tracer_provider=tracer_provider), engine.connect() as conn:
            b = best(run_on(conn), number)
    finally:
        tracer_provider.shutdown()
    engine.dispose()
    return a, b


def statements(rounds: int, quick: bool, pg_url: str | None) -> list[str]:
    n = 200 if quick else 1
    cases: list[tuple[str, Callable[[], tuple[float, float]]]] = [
        ("SQLite memory, spans not recorded (distro default without OTLP)",
         lambda: statement_pair("sqlite://", 5_000 // n, sampled=False)),
        ("SQLite memory, spans recorded (BatchSpanProcessor)",
         lambda: statement_pair("sqlite://", 5_000 // n, sampled=True)),
    ]  # fmt: skip
    if pg_url:
        cases += [
            ("PostgreSQL (loopback), spans not recorded", lambda: statement_pair(pg_url, 2_000, sampled=False)),
            ("PostgreSQL (loopback), spans recorded", lambda: statement_pair(pg_url, 2_000, sampled=True)),
        ]
    lines = [
        "## 6. Statement tracing, per statement",
        "",
        "`reliability_statements` on `conn.execute(select(t.c.id).where(t.c.id == 1)).scalar()` on a connection "
        "already checked out (SQLAlchemy's compiled cache warm), without then with the instrumentor: a span "
        "(recorded or not) and one `db.client.operation.duration` record per statement, on a MeterProvider with "
        f"the Readings and a Prometheus reader. Best of 3 repeats per measurement, {rounds} rounds; ratio = "
        "instrumented / uninstrumented within a round; added µs = the median difference.",
        "",
        "| statement | uninstrumented µs | instrumented µs | added µs | ratio (median, range) |",
        "|---|---|---|---|---|",
    ]
    for label, pair in cases:
        plain, instr = [], []
        for _ in range(rounds):
            a, b = pair()
            plain.append(a)
            instr.append(b)
        ratios = [b / a for a, b in zip(plain, instr, strict=True)]
        added = statistics.median(b - a for a, b in zip(plain, instr, strict=True))
        lines.append(
            f"| {label} | {statistics.median(plain) * 1e6:.1f} | {statistics.median(instr) * 1e6:.1f} | "
            f"{added * 1e6:.1f} | {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
        print(lines[-1], flush=True)
    record = _record_cost(20_000 // n)
    lines += [
        "",
        f"For scale, in the same run: one SDK histogram record with these three attributes on the same two readers "
        f"costs {record * 1e6:.1f} µs, most of what a statement adds while spans are not recorded.",
    ]
    return [*lines, ""]


def _record_cost(number: int) -> float:
    readings = Readings(background=False, cache_seconds=0.0)
    prometheus = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[prometheus])
    readings.bind(provider)
    histogram = provider.get_meter("bench").create_histogram(
        "bench.duration", "s", explicit_bucket_boundaries_advisory=[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10]
    )
    attrs = {"db.system.name": "sqlite", "db.operation.name": "SELECT", "db.collection.name": "bench_items"}
    try:
        return best(lambda: histogram.record(0.0001, attrs), number)
    finally:
        provider.shutdown()
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(prometheus._collector)
