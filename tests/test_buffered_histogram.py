"""BufferedHistogram: values queued on the hot path reach the SDK at collection exactly as record() would put them.

Each test feeds the same values to an SDK histogram directly (``record()``) and through a BufferedHistogram on
the same MeterProvider, then compares every data point: attributes, bucket counts, count, sum (bit for bit),
min and max.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

from otel_reliability.instrumentation import _published
from otel_reliability.instrumentation._published import BufferedHistogram

BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
POOLS = ({"db.client.connection.pool.name": "a"}, {"db.client.connection.pool.name": "b"})


def _values(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    edges = [*BUCKETS, 0.0, 1e-9, 61.0, 1e6]  # exactly on the boundaries, zero, beyond the last bucket
    return [rng.choice(edges) if rng.random() < 0.2 else rng.expovariate(300.0) for _ in range(n)]


class Pair:
    """The same histogram twice on one provider: ``direct`` (record()) and ``buffered``."""

    def __init__(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("test")

        def histogram(name: str) -> Any:
            return meter.create_histogram(name, "s", explicit_bucket_boundaries_advisory=list(BUCKETS))

        self.direct = histogram("direct")
        self.buffered = BufferedHistogram(meter, histogram("buffered"), BUCKETS)

    def feed(self, values: list[float], attributes: dict[str, str]) -> None:
        series = self.buffered.series(attributes["db.client.connection.pool.name"], attributes)
        for value in values:
            self.direct.record(value, attributes)
            series.record(value)


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[Any, ...]]]:
    data = reader.get_metrics_data()
    out: dict[str, list[tuple[Any, ...]]] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name in ("direct", "buffered"):
                    out[metric.name] = sorted(
                        (
                            tuple(sorted(p.attributes.items())),  # type: ignore[union-attr]
                            tuple(p.bucket_counts),  # type: ignore[union-attr]
                            p.count,  # type: ignore[union-attr]
                            p.sum,  # type: ignore[union-attr]
                            p.min,  # type: ignore[union-attr]
                            p.max,  # type: ignore[union-attr]
                            tuple(p.explicit_bounds),  # type: ignore[union-attr]
                        )
                        for p in metric.data.data_points
                    )
    return out


def _assert_equal(reader: InMemoryMetricReader) -> list[tuple[Any, ...]]:
    points = _points(reader)
    assert points["buffered"] == points["direct"]
    assert points["direct"]  # something was compared
    return points["direct"]


def test_buffered_values_give_exactly_the_sdk_histogram_over_several_collections() -> None:
    reader = InMemoryMetricReader()
    pair = Pair(MeterProvider([reader]))
    for round_no in range(4):
        for i, attrs in enumerate(POOLS):
            pair.feed(_values(500 + 37 * i, seed=round_no * 10 + i), attrs)
        points = _assert_equal(reader)  # cumulative: each collection carries everything so far
    assert sum(p[2] for p in points) == 4 * (500 + 537)


def test_a_queue_that_nobody_collects_flushes_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_published, "FLUSH_AT", 64)
    reader = InMemoryMetricReader()
    pair = Pair(MeterProvider([reader]))
    pair.feed(_values(1000, seed=1), POOLS[0])
    series = pair.buffered.series("a", POOLS[0])
    assert len(series.values) < 64  # the rest already went to the SDK
    _assert_equal(reader)


def test_values_recorded_from_many_threads_are_all_counted_once() -> None:
    reader = InMemoryMetricReader()
    pair = Pair(MeterProvider([reader]))
    values = _values(4000, seed=2)
    series = pair.buffered.series("a", POOLS[0])

    def work(chunk: list[float]) -> None:
        for value in chunk:
            series.record(value)

    threads = [threading.Thread(target=work, args=(values[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        pair.buffered.flush()  # collections while values arrive
    for t in threads:
        t.join()
    for value in values:
        pair.direct.record(value, POOLS[0])
    (buffered,) = _points(reader)["buffered"]
    (direct,) = _points(reader)["direct"]
    # The order differs between threads, so the sum may differ in its last bits; everything else is exact.
    assert buffered[:3] == direct[:3] and buffered[4:] == direct[4:]
    assert buffered[3] == pytest.approx(direct[3], rel=1e-12)


def test_a_reader_with_delta_temporality_and_a_view_with_other_buckets_get_the_values_replayed() -> None:
    from opentelemetry.sdk.metrics import Histogram

    cumulative = InMemoryMetricReader()
    delta = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    views = [View(instrument_name="*", aggregation=ExplicitBucketHistogramAggregation((0.001, 0.01, 0.1)))]
    pair = Pair(MeterProvider([cumulative, delta], views=views))
    for round_no in range(3):
        pair.feed(_values(300, seed=round_no), POOLS[0])
        _assert_equal(cumulative)
        points = _assert_equal(delta)
        assert points[0][6] == (0.001, 0.01, 0.1) and points[0][2] == 300  # the View's buckets, this interval only


def test_the_fold_is_used_when_the_sdk_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is the one taken on a plain provider (else the other tests would only prove the replay)."""
    reader = InMemoryMetricReader()
    pair = Pair(MeterProvider([reader]))
    pair.feed(_values(50, seed=3), POOLS[0])
    replayed: list[float] = []
    real_record = pair.buffered._instrument.record
    monkeypatch.setattr(pair.buffered._instrument, "record", lambda v, a: (replayed.append(v), real_record(v, a)))
    pair.buffered.flush()
    assert len(replayed) == 1  # the first value creates the series; 49 were folded
    _assert_equal(reader)


def test_a_forked_child_does_not_count_what_its_parent_queued() -> None:
    """The at-fork hook, called directly (forking the test process, which has threads, could deadlock the child
    in other libraries' at-fork handlers): a prefork worker starts with empty queues."""
    reader = InMemoryMetricReader()
    pair = Pair(MeterProvider([reader]))
    series = pair.buffered.series("a", POOLS[0])
    for value in _values(10, seed=4):
        series.record(value)
    assert len(series.values) == 10
    _published._forget_after_fork()  # what os.register_at_fork(after_in_child=...) runs in the child
    assert len(series.values) == 0
    series.record(0.5)
    assert _points(reader)["buffered"][0][2] == 1  # the child's own values still reach its SDK


def test_a_second_histogram_of_the_same_name_on_the_same_meter_is_flushed_too() -> None:
    """A second instrument() (or a second app) on the same provider: the SDK keeps the first instrument's callback
    only, yet the new histogram's values must reach the readers at collection."""
    reader = InMemoryMetricReader()
    provider = MeterProvider([reader])
    Pair(provider)
    pair = Pair(provider)  # the same meter, the same instrument names
    pair.feed(_values(20, seed=5), POOLS[0])
    assert _points(reader)["buffered"][0][2] == 20


def test_a_series_already_in_the_sdk_is_folded_whole_without_a_new_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    reader = InMemoryMetricReader()
    pair = Pair(MeterProvider([reader]))
    pair.feed(_values(50, seed=4), POOLS[0])
    _assert_equal(reader)  # the first flush: found the series' aggregation
    scans: list[object] = []
    real_find = _published._find_aggregations
    monkeypatch.setattr(_published, "_find_aggregations", lambda *a: (scans.append(a), real_find(*a))[1])
    replayed: list[float] = []
    real_record = pair.buffered._instrument.record
    monkeypatch.setattr(pair.buffered._instrument, "record", lambda v, a: (replayed.append(v), real_record(v, a)))
    pair.feed(_values(50, seed=5), POOLS[0])
    pair.buffered.flush()
    assert replayed == [] and scans == []  # every value folded where it was found last time
    _assert_equal(reader)
