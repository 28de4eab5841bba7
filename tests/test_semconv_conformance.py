"""Our emitted metrics, read back from OTLP (the protobuf the OTLP exporter sends), against the semantic conventions.

The table is written from semantic-conventions v1.44's model (model/*/metrics.yaml): instrument kind, unit,
the attributes it requires (always, or conditionally where the condition holds here) and those it recommends,
and the stability. Real parts: the SDK, the OTLP encoder, SQLAlchemy on a real PostgreSQL, the process
instrumentor reading psutil. One deliberate deviation, kept in the table: process.cpu.utilization's unit (see
README, "Metrics").
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_reliability import semconv
from otel_reliability.instrumentation.pool import PoolInstrumentor
from otel_reliability.instrumentation.process import ProcessInstrumentor
from otel_reliability.instrumentation.statements import StatementsInstrumentor
from tests.support import Postgres

GAUGE, UPDOWN, COUNTER, HISTOGRAM = "gauge", "updowncounter", "counter", "histogram"


# name: (kind, unit, required attributes (here), recommended attributes we set, stability)
CONVENTION: dict[str, tuple[str, str, set[str], set[str], str]] = {
    "db.client.operation.duration": (
        HISTOGRAM, "s", {"db.system.name", "db.namespace", "db.operation.name", "db.collection.name"},
        {"server.address", "server.port"}, "stable",
    ),
    "db.client.connection.count": (
        UPDOWN, "{connection}", {"db.client.connection.pool.name", "db.client.connection.state"}, set(), "development",
    ),
    "db.client.connection.max": (UPDOWN, "{connection}", {"db.client.connection.pool.name"}, set(), "development"),
    "db.client.connection.idle.max": (
        UPDOWN, "{connection}", {"db.client.connection.pool.name"}, set(), "development",
    ),
    "db.client.connection.pending_requests": (
        UPDOWN, "{request}", {"db.client.connection.pool.name"}, set(), "development",
    ),
    "db.client.connection.timeouts": (
        COUNTER, "{timeout}", {"db.client.connection.pool.name"}, set(), "development",
    ),
    "db.client.connection.wait_time": (HISTOGRAM, "s", {"db.client.connection.pool.name"}, set(), "development"),
    "db.client.connection.use_time": (HISTOGRAM, "s", {"db.client.connection.pool.name"}, set(), "development"),
    "db.client.connection.create_time": (HISTOGRAM, "s", {"db.client.connection.pool.name"}, set(), "development"),
    "process.memory.usage": (UPDOWN, "By", set(), set(), "release_candidate"),
    "process.thread.count": (UPDOWN, "{thread}", set(), set(), "release_candidate"),
    "process.unix.file_descriptor.count": (UPDOWN, "{file_descriptor}", set(), set(), "release_candidate"),
    # The convention says unit "1"; we keep "" so the Prometheus name is process_cpu_utilization on every path.
    "process.cpu.utilization": (GAUGE, "", set(), set(), "release_candidate"),
}  # fmt: skip
ON_FAILURE = {"db.client.operation.duration": {"error.type", "db.response.status_code"}}


def _kind(metric: Any) -> str:
    field = metric.WhichOneof("data")
    if field == "sum":
        return COUNTER if metric.sum.is_monotonic else UPDOWN
    return field


def _attributes(point: Any) -> set[str]:
    return {kv.key for kv in point.attributes}


def _from_otlp(reader: InMemoryMetricReader) -> dict[str, tuple[str, str, list[set[str]], str]]:
    """name -> (kind, unit, attribute keys of each point, the scope's schema URL), from the OTLP protobuf."""
    request = encode_metrics(reader.get_metrics_data())
    out: dict[str, tuple[str, str, list[set[str]], str]] = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = _kind(metric)
                points = getattr(metric, kind if kind in (GAUGE, HISTOGRAM) else "sum").data_points
                out[metric.name] = (kind, metric.unit, [_attributes(p) for p in points], sm.schema_url)
    return out


@pytest.mark.integration
def test_emitted_names_units_kinds_and_attributes_follow_the_conventions(postgres: Postgres) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrumentors = [ProcessInstrumentor(), PoolInstrumentor(), StatementsInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(meter_provider=provider)
    try:
        engine = sa.create_engine(postgres.url("psycopg"), pool_size=1, max_overflow=0)
        with engine.connect() as conn:
            conn.execute(sa.text("CREATE TEMP TABLE conformance (id int PRIMARY KEY)"))
            conn.execute(sa.text("SELECT id FROM conformance"))
            with pytest.raises(sa.exc.IntegrityError):
                conn.execute(sa.text("INSERT INTO conformance VALUES (1), (1)"))
        emitted = _from_otlp(reader)
        engine.dispose()
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        provider.shutdown()

    for name, (kind, unit, required, recommended, _stability) in CONVENTION.items():
        assert name in emitted, f"{name} not emitted"
        got_kind, got_unit, points, schema_url = emitted[name]
        assert (got_kind, got_unit) == (kind, unit), name
        assert schema_url == semconv.SCHEMA_URL, name
        assert points, name
        for keys in points:
            failed = "error.type" in keys
            expected = required | recommended | (ON_FAILURE.get(name, set()) if failed else set())
            # db.collection.name only where the statement names a table (a bare SELECT 1 does not).
            assert expected - keys <= {"db.collection.name"}, (name, keys)
        if name in ON_FAILURE:
            assert any(ON_FAILURE[name] <= keys for keys in points), f"{name}: no failure point with {ON_FAILURE}"
    failed_point = next(k for k in emitted["db.client.operation.duration"][2] if "error.type" in k)
    assert "db.response.status_code" in failed_point  # 23505, the SQLSTATE of the duplicate key


def test_the_readme_marks_each_conventional_name_stable_or_development() -> None:
    from tests.support import ROOT

    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Stability of the names", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    for name, (*_, stability) in CONVENTION.items():
        prometheus = name.replace(".", "_")
        row = next((r for r in rows if f"`{prometheus}`" in r or f"`{prometheus}_" in r), None)
        assert row is not None, f"{name} is not in the README's stability table"
        assert row.split("|")[2].strip().startswith(stability.replace("_", " ")), (name, row)
