"""Run by tests/test_upstream.py in a subprocess whose path holds a copy of an installed package with one private
attribute renamed (or, for ``count``, CPython's ``itertools.count`` with another repr). Prints one JSON line:
what the scenario measured, which guarded accesses are usable, and the WARNINGs ``otel_reliability.upstream``
logged."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import sys
from typing import Any

warnings: list[str] = []


class _Capture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            warnings.append(record.getMessage())


logging.getLogger("otel_reliability.upstream").addHandler(_Capture())
scenario = sys.argv[1]

if scenario == "count":

    class _Count(itertools.count):  # type: ignore[misc]  # a CPython whose repr is not ``count(N)``
        def __repr__(self) -> str:
            return "<count>"

    itertools.count = _Count  # type: ignore[misc]

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402

from otel_reliability import upstream  # noqa: E402


def points(reader: Any) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    shape = (
                        [p.count, p.sum, p.min, p.max, list(p.bucket_counts)]
                        if hasattr(p, "bucket_counts")
                        else p.value
                    )
                    found.setdefault(metric.name, []).append([dict(p.attributes), shape])
    return found


def histograms() -> dict[str, Any]:
    from otel_reliability.instrumentation._published import BufferedHistogram

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("otel_reliability.pool")
    bounds = [0.0, 0.005, 0.01, 0.1, 1.0]
    plain = meter.create_histogram("plain", explicit_bucket_boundaries_advisory=bounds)
    buffered = BufferedHistogram(
        meter, meter.create_histogram("buffered", explicit_bucket_boundaries_advisory=bounds), bounds
    )
    series = buffered.series("k", {"pool": "p"})
    values = [0.001 * i + 0.0003 for i in range(300)]
    for i, value in enumerate(values):
        plain.record(value, {"pool": "p"})
        series.record(value)
        if i in (0, 150):
            reader.get_metrics_data()  # a collection in between: the rest go to a fresh interval
    got = points(reader)
    return {"plain": got["plain"], "buffered": got["buffered"], "forgotten": forgotten()}


def forgotten() -> list[Any]:
    """A gauge series that was ended (a breaker garbage-collected): gone, or at 0 where the SDK cannot end it."""
    from otel_reliability.instrumentation._published import Published

    reader = InMemoryMetricReader()
    gauge = Published.gauge(MeterProvider(metric_readers=[reader]).get_meter("m"), "state", "1", "")
    gauge.set("gone", 3.0, {"breaker": "gone"})
    gauge.set("kept", 1.0, {"breaker": "kept"})
    reader.get_metrics_data()
    gauge.forget("gone")
    return sorted(points(reader)["state"], key=str)


def sdk_config() -> dict[str, Any]:
    from otel_reliability.instrumentation._published import install_quiet_views
    from otel_reliability.readings import Readings

    readings = Readings(background=False, cache_seconds=0.0)
    provider = MeterProvider(metric_readers=[readings], resource=Resource.create({"service.name": "renamed"}))
    readings.bind(provider)
    views = install_quiet_views(provider)
    provider.get_meter("otel_reliability.breakers").create_counter("c").add(2)
    snap = readings.snapshot()
    return {"views": views, "service": snap.resource.get("service.name"), "c": [p.value for p in snap.metrics["c"]]}


def suppress() -> dict[str, Any]:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    import otel_reliability.instrumentation.statements  # noqa: F401  (imported: no ImportError)
    from otel_reliability.instrumentation._instrumented import suppressed

    outside = suppressed()
    with suppress_instrumentation():
        inside = suppressed()
    return {"outside": outside, "inside": inside}


def breakers(library: str) -> dict[str, Any]:
    from otel_reliability.instrumentation.breakers import BreakersInstrumentor
    from otel_reliability.instrumentation.breakers._registry import BREAKERS

    BreakersInstrumentor().instrument(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))

    def fail() -> None:
        raise ValueError("down")

    def attempt(call: Any) -> None:
        with contextlib.suppress(Exception):
            call()

    if library == "pybreaker":
        import pybreaker

        cb = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, name="p")
        run: Any = lambda f: cb.call(f)  # noqa: E731
    else:
        import circuitbreaker

        cb = circuitbreaker.CircuitBreaker(failure_threshold=2, recovery_timeout=30, name="c")
        run = lambda f: cb.decorate(f)()  # noqa: E731  (the decorator refuses while open; call() does not)
    for _ in range(3):
        run(lambda: "ok")
    for _ in range(2):
        attempt(lambda: run(fail))
    for _ in range(4):
        attempt(lambda: run(lambda: "refused"))
    (tracked,) = BREAKERS.tracked(library)
    counts, transitions = tracked.counts()
    reading = tracked.read()
    return {
        "calls": list(counts),
        "open": transitions["open"],
        "reading": [reading.state, reading.consecutive_failures, reading.failure_threshold, reading.reset_timeout],
        "retry_after": tracked.retry_after(),
    }


def circuitbreaker_fallback() -> dict[str, Any]:
    """A breaker with a fallback: the refusals it serves count as rejected calls."""
    import circuitbreaker

    from otel_reliability.instrumentation.breakers import BreakersInstrumentor
    from otel_reliability.instrumentation.breakers._registry import BREAKERS

    BreakersInstrumentor().instrument(meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]))

    def fallback() -> str:
        return "from the fallback"

    def fail() -> None:
        raise ValueError("down")

    cb = circuitbreaker.CircuitBreaker(failure_threshold=2, recovery_timeout=30, name="f", fallback_function=fallback)
    guarded = cb.decorate(fail)
    for _ in range(2):
        with contextlib.suppress(ValueError):
            guarded()
    served = [guarded() for _ in range(4)]
    (tracked,) = BREAKERS.tracked("circuitbreaker")
    counts, transitions = tracked.counts()
    return {"calls": list(counts), "open": transitions["open"], "served": served}


def pool() -> dict[str, Any]:
    from otel_reliability.instrumentation._published import count_value, counter

    c = counter()
    for _ in range(7):
        next(c)
    return {"pool_counter": count_value(c), "type": type(c).__name__}


def prometheus() -> dict[str, Any]:
    """What :9464 serves for a counter and a histogram: through our translation of the Readings' collections, or
    the exporter's own reader where that translation moved."""
    import os
    import urllib.request

    from opentelemetry import metrics

    from otel_reliability import configurator
    from otel_reliability.readings import Readings
    from tests.support import free_port

    port = free_port()
    os.environ.update({"OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(port)})
    readings = Readings(background=False, cache_seconds=0.0)
    resource = Resource.create({"service.name": "renamed", "service.instance.id": "one"})
    provider = MeterProvider(metric_readers=[readings], resource=resource)
    readings.bind(provider)
    metrics.set_meter_provider(provider)
    configurator._start_prometheus(readings)
    meter = metrics.get_meter("otel_reliability.breakers")
    meter.create_counter("renamed_calls").add(5, {"k": "v"})
    meter.create_histogram("renamed_time", explicit_bucket_boundaries_advisory=[0.1, 1.0]).record(0.5)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {"served": sorted(line for line in text.splitlines() if "renamed" in line)}


def server_span() -> dict[str, Any]:
    """The SERVER span of two requests through the HTTP layer the distro chooses for a traced FastAPI app: the
    lean one, or contrib's where contrib's attribute builder moved (the same span either way)."""
    import os

    os.environ.update({"OTEL_SEMCONV_STABILITY_OPT_IN": "http", "OTEL_TRACES_EXPORTER": "otlp"})
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from starlette.testclient import TestClient

    from otel_reliability import config
    from otel_reliability.instrumentation.http_server import LeanHTTPMiddleware, choose_layer

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})

    @app.get("/items/{item_id}")
    def read_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    layer = choose_layer(os.environ, config.settings())
    if layer == "contrib":
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, exclude_spans=["receive", "send"])
    else:
        original = app.build_middleware_stack
        app.build_middleware_stack = lambda: LeanHTTPMiddleware(original(), tracer_provider=provider)  # type: ignore[method-assign]
    client = TestClient(app, base_url="http://example.com:8080")
    client.get("/items/3?a=b", headers={"user-agent": "ua/1"})
    client.get("/items/x")
    spans = [
        [s.name, str(s.kind), dict(s.attributes or {}), str(s.status.status_code)]
        for s in exporter.get_finished_spans()
        if s.kind.name == "SERVER"
    ]
    return {"layer": layer, "spans": spans}


def system_metrics() -> dict[str, Any]:
    """Which process names an instrumented upstream SystemMetricsInstrumentor already emits (a stand-in class:
    the package is not installed here)."""
    import importlib.machinery
    import types

    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

    from otel_reliability.instrumentation import process

    class SystemMetricsInstrumentor(BaseInstrumentor):  # type: ignore[misc]
        def __init__(self, config: dict[str, Any] | None = None) -> None:
            self._config = config or {}

        def instrumentation_dependencies(self) -> list[str]:
            return []

        def _instrument(self, **kwargs: Any) -> None:
            pass

        def _uninstrument(self, **kwargs: Any) -> None:
            pass

    name = "opentelemetry.instrumentation.system_metrics"
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.SystemMetricsInstrumentor = SystemMetricsInstrumentor  # type: ignore[attr-defined]
    sys.modules[name] = module
    before = sorted(process._upstream_active_names())
    SystemMetricsInstrumentor(config={process.CPU_UTILIZATION: ["utilization"]}).instrument()
    return {"before": before, "after": sorted(process._upstream_active_names())}


def pools() -> dict[str, Any]:
    """The pool figures of a named QueuePool with two connections checked out and of a SingletonThreadPool with
    one open and idle, as collected."""
    import tempfile

    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool, QueuePool, SingletonThreadPool

    from otel_reliability.db.transactions import _pool_name
    from otel_reliability.instrumentation.pool import PoolInstrumentor

    reader = InMemoryMetricReader()
    PoolInstrumentor().instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    path = tempfile.mktemp(suffix=".db")
    queue = create_engine(
        f"sqlite:///{path}", poolclass=QueuePool, pool_size=2, max_overflow=3, pool_logging_name="named"
    )
    single = create_engine("sqlite://", poolclass=SingletonThreadPool, pool_size=4)
    held = [queue.connect() for _ in range(2)]
    for connection in held:
        connection.execute(text("select 1"))
    with single.connect() as one:  # back in the pool: idle, and still open (counted from the pool's own set)
        one.execute(text("select 1"))
    null = create_engine(f"sqlite:///{path}", poolclass=NullPool, pool_logging_name="null")
    kept = null.connect()  # a NullPool's connections in use: counted by us, from each checkout's record
    kept.execute(text("select 1"))
    for _ in range(2):
        with null.connect() as connection:
            connection.execute(text("select 1"))
    found = {
        name: sorted([[a, v[0] if isinstance(v, list) else v] for a, v in values], key=str)  # durations: counts
        for name, values in points(reader).items()
    }
    return {**found, "transaction_pool_name": _pool_name(queue)}


def cleared() -> dict[str, Any]:
    """Checkins and invalidations counted across a ``Pool.dispatch._clear()`` (SQLAlchemy's own test teardown),
    whatever the method is called in this SQLAlchemy."""
    import tempfile

    from sqlalchemy import create_engine
    from sqlalchemy.pool import Pool

    from otel_reliability.instrumentation.pool import PoolInstrumentor

    reader = InMemoryMetricReader()
    PoolInstrumentor().instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    engine = create_engine(f"sqlite:///{tempfile.mktemp(suffix='.db')}", pool_logging_name="cleared")
    engine.connect().close()
    clear = getattr(Pool.dispatch, "_clear", None) or Pool.dispatch._clear_renamed
    clear()
    engine.connect().close()
    with engine.connect() as connection:
        connection.invalidate()
    engine.connect().close()
    got = points(reader)
    return {
        "uses": [shape[0] for _, shape in got["db.client.connection.use_time"]],
        "invalidations": got["db.client.connection.invalidations"],
    }


def uvicorn_signals() -> dict[str, bool]:
    """Whether a uvicorn server stops on a signal (the final export runs) or from code (it must not), asked in the
    main thread, where a stop from code looks like a signalled one to anything that cannot tell them apart."""
    import signal

    from otel_reliability import shutdown

    shutdown.install()
    import uvicorn

    told, stopped = (uvicorn.Server(uvicorn.Config(app=lambda *a: None, log_config=None)) for _ in range(2))
    told.handle_exit(signal.SIGTERM, None)
    stopped.should_exit = True  # a test or an embedding app stopping it
    return {"signalled": shutdown._exiting_on_signal(told), "from_code": shutdown._exiting_on_signal(stopped)}


RUN = {
    "uvicorn": uvicorn_signals,
    "cleared": cleared,
    "pools": pools,
    "server_span": server_span,
    "system_metrics": system_metrics,
    "prometheus": prometheus,
    "histogram": histograms,
    "sdk_config": sdk_config,
    "suppress": suppress,
    "pybreaker": lambda: breakers("pybreaker"),
    "circuitbreaker": lambda: breakers("circuitbreaker"),
    "circuitbreaker_fallback": circuitbreaker_fallback,
    "count": lambda: {**breakers("pybreaker"), **pool()},
}
result = RUN[sys.argv[2] if len(sys.argv) > 2 else scenario]()
usable = {key: p.usable() for key, p in upstream.GUARDED.items()}
print(json.dumps({"result": result, "usable": usable, "warnings": warnings}, default=str))
