"""The Readings' data model: one collection as a ``Snapshot`` of ``Point``s, and a ``Window`` of changes.

Plain frozen values, no SDK objects kept: the views, the host merge and the CLI read these, so they are the
vocabulary of everything above the reader. ``to_snapshot`` turns one SDK collection into a Snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    HistogramDataPoint,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import (
    Histogram as HistogramData,
)

from otel_reliability import gil, semconv

Attributes = Mapping[str, Any]

KEEP_BUCKETS = frozenset({semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIME})
"""Histograms whose bucket counts a Snapshot and the window history keep (for a quantile: the pool's wait p95).
Only these: copying every HTTP histogram's buckets would cost each collection and the history's memory."""


def rfc3339(at: float) -> str:
    """A ``time.time()`` value as RFC 3339 UTC with milliseconds."""
    moment = datetime.fromtimestamp(at, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


_SeriesKey = tuple[str, frozenset[tuple[str, Any]]]


@dataclass(frozen=True, slots=True)
class Point:
    """One series of one metric: its attributes and its value.

    For sums and gauges ``value`` is the value; for histograms it is the count and ``total`` the sum, and for the
    histograms of ``KEEP_BUCKETS`` ``buckets`` the count per bucket of ``bounds`` (the last one above them).
    """

    attributes: Attributes
    value: float
    total: float | None = None
    buckets: tuple[float, ...] | None = None
    bounds: tuple[float, ...] | None = None

    def matches(self, where: Attributes | None) -> bool:
        return where is None or all(self.attributes.get(k) == v for k, v in where.items())


def quantile(points: Iterable[Point], q: float) -> float | None:
    """The ``q`` quantile of histogram points with buckets (added up), interpolated within its bucket as
    Prometheus' ``histogram_quantile`` does; None without buckets or observations. Above the last bound: that bound."""
    counts: list[float] = []
    bounds: tuple[float, ...] = ()
    for point in points:
        if point.buckets is None or point.bounds is None:
            continue
        if not counts:
            counts, bounds = [0.0] * len(point.buckets), point.bounds
        if point.bounds != bounds:
            return None
        counts = [a + b for a, b in zip(counts, point.buckets, strict=True)]
    total = sum(counts)
    if not counts or total <= 0:
        return None
    rank, seen = q * total, 0.0
    for index, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            if index >= len(bounds):
                return bounds[-1] if bounds else None
            lower = bounds[index - 1] if index > 0 else 0.0
            return lower + (bounds[index] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1] if bounds else None


@dataclass(frozen=True)
class Snapshot:
    """Every metric of one collection, by name.

    ``taken_at`` is on the monotonic clock (ages, windows); ``observed_at`` is the wall-clock time of the same
    instant (what responses show); ``generation`` the change generation the collection started in.
    """

    taken_at: float
    resource: Attributes
    metrics: Mapping[str, tuple[Point, ...]]
    monotonic: frozenset[str] = frozenset()  # names of cumulative sums and histograms (windowable)
    observed_at: float = 0.0
    generation: int = -1

    def points(self, name: str, where: Attributes | None = None) -> tuple[Point, ...]:
        found = self.metrics.get(name, ())
        return found if where is None else tuple(p for p in found if p.matches(where))

    def value(self, name: str, where: Attributes | None = None, default: float | None = None) -> float | None:
        """The value of the first series matching ``where``, or ``default``."""
        for point in self.points(name, where):
            return point.value
        return default

    def total(self, name: str, where: Attributes | None = None) -> float:
        """The sum of the values of every series matching ``where`` (0 when none)."""
        return sum(p.value for p in self.points(name, where))

    def group(self, name: str, by: str, where: Attributes | None = None) -> dict[Any, list[Point]]:
        """The matching series of ``name`` grouped by the value of attribute ``by``."""
        groups: dict[Any, list[Point]] = {}
        for point in self.points(name, where):
            groups.setdefault(point.attributes.get(by), []).append(point)
        return groups

    @property
    def observed_at_text(self) -> str:
        """``observed_at`` in RFC 3339, UTC, milliseconds (``2026-11-28T19:40:01.123Z``)."""
        return rfc3339(self.observed_at)

    @property
    def service(self) -> dict[str, Any]:
        return {
            "name": self.resource.get(semconv.ATTR_SERVICE_NAME, "unknown_service"),
            "instance_id": self.resource.get(semconv.ATTR_SERVICE_INSTANCE_ID),
        }


@dataclass(frozen=True)
class Window(Snapshot):
    """The change of every cumulative series over the last ``seconds`` (``covered`` is what was really seen)."""

    seconds: float = 0.0
    covered: float = 0.0


def attrs_key(attributes: Attributes) -> frozenset[tuple[str, Any]]:
    """A hashable key for a series' attributes (sequence values as tuples)."""
    return frozenset((k, tuple(v) if isinstance(v, list) else v) for k, v in attributes.items())


def window_between(
    now: Snapshot,
    base_at: float,
    base_values: Mapping[tuple[str, frozenset[tuple[str, Any]]], tuple[Any, ...]],
    seconds: float,
    names: Iterable[str] | None = None,
) -> Window:
    """The change of every cumulative series of ``now`` since the cumulative values ``base_values`` taken at
    ``base_at`` (only of the metrics ``names`` when given): one process's window and the host's alike."""
    metrics: dict[str, tuple[Point, ...]] = {}
    wanted = now.monotonic if names is None else now.monotonic.intersection(names)
    for name in wanted:
        deltas = []
        for p in now.metrics.get(name, ()):
            old = base_values.get((name, attrs_key(p.attributes)))
            old_value, old_total = (old[0], old[1]) if old is not None else (0.0, 0.0)
            total = None if p.total is None else p.total - (old_total or 0.0)
            buckets = p.buckets
            if buckets is not None and old is not None:  # a base without buckets (a host's history): unknown
                old_buckets = old[2] if len(old) > 2 else None
                if old_buckets is None or len(old_buckets) != len(buckets):
                    buckets = None
                else:
                    buckets = tuple(a - b for a, b in zip(buckets, old_buckets, strict=True))
            deltas.append(Point(p.attributes, p.value - old_value, total, buckets, p.bounds))
        metrics[name] = tuple(deltas)
    return Window(
        now.taken_at,
        now.resource,
        MappingProxyType(metrics),
        now.monotonic,
        now.observed_at,
        now.generation,
        seconds=seconds,
        covered=max(0.0, min(seconds, now.taken_at - base_at)),
    )


_NO_ATTRIBUTES: Attributes = MappingProxyType({})


def to_snapshot(data: MetricsData, taken_at: float, resource: Attributes, observed_at: float) -> Snapshot:
    # The data points' attribute mappings are the SDK's own copies, never changed after collection: shared, not
    # copied again (this loop runs over every point of every collection).
    metrics: dict[str, list[Point]] = {}
    monotonic: set[str] = set()
    for rm in data.resource_metrics:
        resource = MappingProxyType(dict(rm.resource.attributes))
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = metrics.setdefault(metric.name, [])
                payload = metric.data
                if isinstance(payload, HistogramData) and metric.name in KEEP_BUCKETS:
                    monotonic.add(metric.name)
                    points.extend(
                        Point(
                            hp.attributes or _NO_ATTRIBUTES,
                            float(hp.count),
                            hp.sum,
                            tuple(hp.bucket_counts),
                            tuple(hp.explicit_bounds),
                        )
                        for hp in payload.data_points
                        if isinstance(hp, HistogramDataPoint)
                    )
                elif isinstance(payload, HistogramData):
                    monotonic.add(metric.name)
                    for part in gil.in_slices(payload.data_points):
                        points.extend(
                            Point(hp.attributes or _NO_ATTRIBUTES, float(hp.count), hp.sum)
                            for hp in part
                            if isinstance(hp, HistogramDataPoint)
                        )
                elif isinstance(payload, Sum | Gauge):
                    if isinstance(payload, Sum) and payload.is_monotonic:
                        monotonic.add(metric.name)
                    for numbers in gil.in_slices(payload.data_points):
                        points.extend(
                            Point(np.attributes or _NO_ATTRIBUTES, float(np.value))
                            for np in numbers
                            if isinstance(np, NumberDataPoint)
                        )
    frozen = {name: tuple(points) for name, points in metrics.items()}
    return Snapshot(taken_at, resource, MappingProxyType(frozen), frozenset(monotonic), observed_at=observed_at)
