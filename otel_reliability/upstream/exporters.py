"""The exporters' private classes we build on (see ``otel_reliability.upstream``): the Prometheus exporter's
translation, which renders our Readings' collections on :9464 (one aggregation for health and the scrape)."""

from __future__ import annotations

from typing import Any

from otel_reliability.upstream._registry import guard

PROMETHEUS = "opentelemetry.exporter.prometheus"


def prometheus_collector(feed: Any) -> Any:
    """A Prometheus collector that calls ``feed(collector)`` on each scrape, then renders what it was given with
    ``add_metrics_data`` exactly as the exporter's own reader does (its ``_CustomCollector``)."""
    from opentelemetry.exporter.prometheus import _CustomCollector

    collector = _CustomCollector()
    collector._callback = lambda: feed(collector)  # type: ignore[assignment]
    return collector


@guard(
    "prometheus.collector",
    PROMETHEUS,
    ("_CustomCollector", "_CustomCollector._callback"),
    "a prometheus_client collector that calls _callback() once per scrape and renders the MetricsData given to "
    "add_metrics_data() the way PrometheusMetricReader does",
    "the exporter's own PrometheusMetricReader on :9464 (the same names and values; a second aggregation)",
)
def _check_prometheus() -> bool:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import CollectorRegistry, generate_latest

    resource = Resource({"service.name": "upstream-check"})

    def measure(reader: Any) -> MeterProvider:
        provider = MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)
        meter = provider.get_meter("otel_reliability.upstream.check")
        meter.create_counter("upstream_check", unit="s").add(3, {"k": "v"})
        meter.create_histogram("upstream_check_time", explicit_bucket_boundaries_advisory=[1.0]).record(0.5)
        return provider

    public = CollectorRegistry()
    measure(PrometheusMetricReader(registry=public))
    ours, scratch = CollectorRegistry(), InMemoryMetricReader()
    measure(scratch)
    feeds: list[int] = []

    def feed(collector: Any) -> None:
        feeds.append(1)
        collector.add_metrics_data(scratch.get_metrics_data())

    ours.register(prometheus_collector(feed))
    feeds.clear()  # registering may collect once (prometheus_client reads the names)
    text = generate_latest(ours)
    return len(feeds) == 1 and b"upstream_check_seconds_total" in text and text == generate_latest(public)
