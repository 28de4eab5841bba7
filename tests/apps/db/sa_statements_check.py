"""Self-contained statement-tracing check, run by tests/test_sqlalchemy_versions.py in a venv with another
SQLAlchemy: an engine created before instrumentation, a literal in the SQL text, an ORM select, a failure.
Prints one JSON line with what the spans and the duration metric said.
"""

import contextlib
import json

import sqlalchemy as sa
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_reliability.instrumentation.statements import DURATION, StatementsInstrumentor

engine = sa.create_engine("sqlite://")  # before instrumentation
exporter = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
reader = InMemoryMetricReader()
StatementsInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=MeterProvider([reader]))
items = sa.Table("items", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
with tracer_provider.get_tracer("check").start_as_current_span("request") as request:
    items.metadata.create_all(engine)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 4242"))
        conn.execute(sa.select(items).where(items.c.id == 1)).all()
        with contextlib.suppress(sa.exc.OperationalError):
            conn.execute(sa.text("SELECT * FROM missing"))
parent = request.get_span_context().span_id
spans = [s for s in exporter.get_finished_spans() if s.name != "request"]
points = [
    dict(dp.attributes)
    for rm in reader.get_metrics_data().resource_metrics
    for sm in rm.scope_metrics
    for m in sm.metrics
    if m.name == DURATION
    for dp in m.data.data_points
]
print(
    json.dumps(
        {
            "sqlalchemy": sa.__version__,
            "spans": sorted({s.name for s in spans}),
            "all_children": all(s.parent is not None and s.parent.span_id == parent for s in spans),
            "texts": sorted({str(s.attributes.get("db.query.text")) for s in spans}),
            "errors": sorted(str(p["error.type"]) for p in points if "error.type" in p),
        }
    )
)
