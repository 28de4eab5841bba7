"""The SDK's metric storage and configuration: the fold into a histogram's aggregation, the end of a series, views
and the resource of a built MeterProvider (see ``otel_reliability.upstream``)."""

from __future__ import annotations

from typing import Any

from otel_reliability.upstream._registry import guard, usable

SDK_STORAGE = (
    "_real_instrument",
    "_measurement_consumer",
    "_reader_storages",
    "_instrument_view_instrument_matches",
    "_attributes_aggregation",
    "_view",
    "_attribute_keys",
    "_reset_on_collect",
    "_attributes",
)
SDK_AGGREGATION = ("_lock", "_value", "_sum", "_min", "_max", "_record_min_max", "_boundaries")


def aggregation_matches(instrument: Any) -> list[Any]:
    """The SDK's per-reader view matches of ``instrument`` (its ``_ViewInstrumentMatch`` objects)."""
    instrument = getattr(instrument, "_real_instrument", None) or instrument  # the API's proxy, if any
    matches: list[Any] = []
    for storage in list(instrument._measurement_consumer._reader_storages.values()):
        matches.extend(storage._instrument_view_instrument_matches.get(instrument, ()))
    return matches


def find_aggregations(instrument: Any, boundaries: tuple[float, ...], attributes: Any) -> list[tuple[Any, Any, Any]]:
    """The plain explicit-bucket aggregation of ``attributes`` in every reader's storage, with the table and key
    it is held under; empty when any reader aggregates differently (the values are then replayed)."""
    wanted = dict(attributes)
    targets = []
    for match in aggregation_matches(instrument):
        if match._view._attribute_keys is not None or getattr(match, "_reset_on_collect", False):
            return []
        table = match._attributes_aggregation
        found = [(key, a) for key, a in list(table.items()) if dict(a._attributes) == wanted]
        if len(found) != 1:
            return []
        key, aggregation = found[0]
        if type(aggregation).__name__ != "_ExplicitBucketHistogramAggregation":
            return []
        if aggregation._boundaries != boundaries or aggregation._value is None:
            return []
        _ = (aggregation._lock, aggregation._sum, aggregation._min, aggregation._max, aggregation._record_min_max)
        targets.append((table, key, aggregation))
    return targets


def fold_values(aggregation: Any, boundaries: tuple[float, ...], values: list[float]) -> None:
    """Add finite, non-negative ``values`` to one SDK explicit-bucket aggregation as ``record()`` of each would:
    bucket counts, sum (added one by one, so even its rounding), min and max."""
    from bisect import bisect_left

    with aggregation._lock:
        counts = aggregation._value
        if counts is None:  # collected since: a fresh interval
            counts = aggregation._value = aggregation._get_empty_bucket_counts()
        total = aggregation._sum
        for value in values:
            counts[bisect_left(boundaries, value)] += 1
            total += value
        aggregation._sum = total
        if aggregation._record_min_max:
            aggregation._min = min(aggregation._min, *values)
            aggregation._max = max(aggregation._max, *values)


def drop_series(instrument: Any, attributes: Any) -> None:
    """Remove one attribute set's aggregation from every reader's storage (the SDK has no API to end a series)."""
    wanted = dict(attributes)
    for match in aggregation_matches(instrument):
        with match._lock:
            for aggr_key, aggregation in list(match._attributes_aggregation.items()):
                if dict(aggregation._attributes or {}) == wanted:
                    del match._attributes_aggregation[aggr_key]


def _scratch_provider(**kwargs: Any) -> tuple[Any, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader], shutdown_on_exit=False, **kwargs), reader


def _points(reader: Any) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


@guard(
    "sdk.histogram_fold",
    "opentelemetry.sdk.metrics",
    SDK_STORAGE + SDK_AGGREGATION + ("_get_empty_bucket_counts", "_ExplicitBucketHistogramAggregation"),
    "a series' explicit-bucket aggregation per reader, its bucket counts, sum, min and max as plain attributes",
    "record() of every value (exact, ~8-13 µs a value instead of ~0.1)",
)
def _check_fold() -> bool:
    provider, reader = _scratch_provider()
    meter = provider.get_meter("otel_reliability.upstream.check")
    bounds = (0.0, 1.0, 5.0)
    values = [0.5, 3.0, 7.25, 0.1, 1.0, 2.5]
    replayed = meter.create_histogram("replayed", explicit_bucket_boundaries_advisory=list(bounds))
    folded = meter.create_histogram("folded", explicit_bucket_boundaries_advisory=list(bounds))
    for value in values:
        replayed.record(value, {"k": "v"})
    folded.record(values[0], {"k": "v"})
    targets = find_aggregations(folded, bounds, {"k": "v"})
    if len(targets) != 1:
        return False
    fold_values(targets[0][2], bounds, values[1:])
    points = _points(reader)
    shape = [(p.count, p.sum, p.min, p.max, list(p.bucket_counts), dict(p.attributes)) for p in points["replayed"]]
    return bool(shape) and shape == [
        (p.count, p.sum, p.min, p.max, list(p.bucket_counts), dict(p.attributes)) for p in points["folded"]
    ]


@guard(
    "sdk.drop_series",
    "opentelemetry.sdk.metrics",
    (*SDK_STORAGE, "_lock"),
    "a synchronous instrument's series held per attribute set in each reader's storage, under a lock",
    "setting the series to 0 (it stays in the output instead of disappearing)",
)
def _check_drop() -> bool:
    provider, reader = _scratch_provider()
    counter = provider.get_meter("otel_reliability.upstream.check").create_up_down_counter("series")
    counter.add(1, {"k": "gone"})
    counter.add(2, {"k": "kept"})
    drop_series(counter, {"k": "gone"})
    return [dict(p.attributes) for p in _points(reader).get("series", [])] == [{"k": "kept"}]


@guard(
    "sdk.config_views",
    "opentelemetry.sdk.metrics",
    ("MeterProvider._sdk_config", "SdkConfiguration.views"),
    "the provider's configuration with a list of views, read when an instrument is first measured",
    "the SDK's default exemplar reservoirs on our meters (same data, ~13 µs more per point collected)",
)
def _check_views() -> bool:
    from opentelemetry.sdk.metrics.view import View

    provider, reader = _scratch_provider()
    _append_views(provider, [View(instrument_name="before", name="after")])
    provider.get_meter("otel_reliability.upstream.check").create_counter("before").add(1)
    return list(_points(reader)) == ["after"]


def _append_views(provider: Any, views: list[Any]) -> None:
    sdk_config = provider._sdk_config
    sdk_config.views = [*sdk_config.views, *views]


def add_views(provider: Any, views: list[Any]) -> bool:
    """Append ``views`` to a built SDK MeterProvider (upstream's configuration takes none); False if it cannot."""
    if not usable("sdk.config_views") or not hasattr(provider, "_sdk_config"):
        return False
    _append_views(provider, views)
    return True


@guard(
    "sdk.config_resource",
    "opentelemetry.sdk.metrics",
    ("MeterProvider._sdk_config", "SdkConfiguration.resource"),
    "the provider's configuration holding the Resource its metrics carry",
    "the resource of the first collection the Readings receive",
)
def _check_resource() -> bool:
    from opentelemetry.sdk.resources import Resource

    provider, _ = _scratch_provider(resource=Resource.create({"service.name": "upstream-check"}))
    return (provider_resource(provider) or {}).get("service.name") == "upstream-check"


def provider_resource(provider: Any) -> dict[str, Any] | None:
    """The resource attributes of an SDK MeterProvider; None when they cannot be read from it (the Readings
    then take them from the first collection they receive, where the SDK puts the same resource)."""
    sdk_config = getattr(provider, "_sdk_config", None)
    resource = getattr(sdk_config, "resource", None)
    return dict(resource.attributes) if resource is not None else None
