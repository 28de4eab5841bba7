"""Collection hooks (otel_reliability.collection): each runs once per collection of every reader, before the
instruments are read, and nothing but the hook's own values appears in the collection."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from otel_reliability import collection
from otel_reliability.instrumentation._published import Published
from otel_reliability.readings import Readings
from tests.support import points_by_name


class _ListExporter(MetricExporter):
    """The periodic OTLP reader's shape (PeriodicExportingMetricReader), exporting into a list."""

    def __init__(self) -> None:
        super().__init__()
        self.exported: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def _published_counter(meter: Any, calls: list[int]) -> None:
    """A hook that counts its runs and publishes that count: a collection shows the count of its own run."""
    published = Published.counter(meter, "test.hook.runs", "{run}", "runs of the hook")

    def hook() -> None:
        calls.append(1)
        published.set("runs", len(calls), {})

    collection.before_collect(meter, "test.hook", hook)


def _value(data: MetricsData | None) -> float:
    (point,) = points_by_name(data)["test.hook.runs"]
    return float(point.value)


def test_a_hook_runs_once_per_collection_of_each_reader_before_the_instruments_are_read() -> None:
    other = InMemoryMetricReader()
    exporter = _ListExporter()
    periodic = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[other, periodic])
    readings = Readings(background=False).bind(provider)
    calls: list[int] = []
    _published_counter(provider.get_meter("test.collection"), calls)
    try:
        data = readings.export()
        assert len(calls) == 1  # not once more through the bridge instrument inside the same collection
        assert _value(data) == 1  # the hook ran before the instruments were read: its value is in this collection
        assert _value(other.get_metrics_data()) == 2 and len(calls) == 2
        periodic.force_flush()
        assert len(calls) == 3 and _value(exporter.exported[-1]) == 3
        for _ in range(3):
            readings.snapshot(max_age=0.0)
        assert len(calls) == 6
    finally:
        provider.shutdown()


def test_nothing_but_the_hooks_values_reports_in_a_collection() -> None:
    """The bridge instrument that runs the hooks for other readers reports no data point, on any reader."""
    other = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[other])
    readings = Readings(background=False).bind(provider)
    _published_counter(provider.get_meter("test.collection"), [])
    try:
        for data in (readings.export(), other.get_metrics_data()):
            assert sorted(points_by_name(data)) == ["test.hook.runs"]
    finally:
        provider.shutdown()


def test_the_first_hook_of_a_name_on_a_meter_is_the_one_that_runs() -> None:
    """Instrumenting again on the same meter gets the SDK's existing instruments back: a second publisher of the
    same values would add them twice."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("test.collection")
    ran: list[str] = []

    def first() -> None:
        ran.append("first")

    def second() -> None:
        ran.append("second")

    assert collection.before_collect(meter, "test.hook", first) is first
    assert collection.before_collect(meter, "test.hook", second) is first
    reader.get_metrics_data()
    assert ran == ["first"]
    provider.shutdown()


def test_a_failing_hook_does_not_stop_the_others_nor_the_collection() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("test.collection")
    calls: list[int] = []

    def broken() -> None:
        raise RuntimeError("a source that cannot be read")

    collection.before_collect(meter, "test.broken", broken)
    _published_counter(meter, calls)
    assert _value(reader.get_metrics_data()) == 1
    provider.shutdown()


def test_a_hook_lives_as_long_as_its_meter() -> None:
    """As an instrument's callback would: nothing of ours keeps a dropped provider's publishers alive."""

    class Source:
        def publish(self) -> None:
            return None

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    source = Source()
    collection.before_collect(provider.get_meter("test.collection"), "test.hook", source.publish)
    gone = weakref.ref(source)
    del source
    gc.collect()
    assert gone() is not None  # the provider (its meter's bridge instrument) holds it
    provider.shutdown()
    del provider
    gc.collect()
    assert gone() is None
