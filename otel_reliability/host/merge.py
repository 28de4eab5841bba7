"""Adding up workers: one host's readings from every worker's, for health (Snapshots) and for :9464 (raw).

The rules, per kind of series:

- monotonic series (counters, histograms) are summed over every worker that ever published, dead ones
  included (a dead worker's last values stay in the sum, so host counters never go backwards);
- every other series is a gauge of a live worker; a dead worker's gauges are dropped (the breaker state,
  the connections in use, the operations in flight of a process that is gone are not the host's any more).
  For health they are combined per series: summed by default (connections in use, operations in flight,
  RSS, workers in each breaker state), the maximum for settings and ages (a breaker's threshold, a pool's
  wait timeout, the oldest operation's age, consecutive failures), the minimum for the database
  statement_timeout (the least protected connection is the one to report). For :9464 they stay per worker,
  labelled with the worker's ``service.instance.id`` (README: "Prefork servers").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_reliability import gil, semconv
from otel_reliability.host.store import AttrsKey, Row
from otel_reliability.readings import Point, Snapshot
from otel_reliability.readings.model import attrs_key

_logger = logging.getLogger(__name__)

INSTANCE_ID = semconv.ATTR_SERVICE_INSTANCE_ID

# Gauges that are settings or ages: the host's value is the largest worker's, not a sum.
MAX_GAUGES = frozenset(
    {
        semconv.METRIC_CIRCUIT_BREAKER_CONSECUTIVE_FAILURES,
        semconv.METRIC_CIRCUIT_BREAKER_FAILURE_THRESHOLD,
        semconv.METRIC_CIRCUIT_BREAKER_RESET_TIMEOUT,
        semconv.METRIC_DB_CLIENT_CONNECTION_WAIT_TIMEOUT,
        semconv.METRIC_OPERATION_OLDEST_AGE,
        semconv.METRIC_PROCESS_MEMORY_LIMIT,
    }
)
MIN_GAUGES = frozenset({semconv.METRIC_DB_CLIENT_STATEMENT_TIMEOUT})


@dataclass(frozen=True)
class HostSnapshot(Snapshot):
    """A Snapshot of the whole host: ``workers`` live workers, each one's own gauges in ``per_worker``."""

    workers: int = 1
    per_worker: tuple[tuple[str | None, Snapshot], ...] = ()


class Accumulator:
    """Series combined over workers for health, keyed by (metric name, attributes).

    Each series is ``[attributes, value, total, contributors]``. The master combines every worker once
    (``add`` with ``source``: the worker's file name) and writes the result (``dump``); a worker takes its own
    published part out (``without``) and puts its fresh readings in (``with_own``). For a gauge combined by
    max or min, ``ranked`` keeps each live worker's value, since a maximum cannot be subtracted from.
    """

    __slots__ = ("monotonic", "ranked", "series")

    def __init__(self) -> None:
        self.series: dict[str, dict[AttrsKey, list[Any]]] = {}
        self.monotonic: set[str] = set()
        self.ranked: dict[str, dict[AttrsKey, dict[str, float]]] = {}

    def add(
        self, rows: Mapping[str, Iterable[Row]], monotonic: AbstractSet[str], live: bool, source: str | None = None
    ) -> None:
        """Add one worker's series (``rows``: a published file's, or ``rows_of(snapshot)``); only its monotonic
        ones when it is not ``live``. ``source`` (the worker's file) is kept for gauges combined by max or min."""
        for name, series_rows in rows.items():
            mono = name in monotonic
            if not mono and not live:
                continue
            if mono:
                self.monotonic.add(name)
            rule = _rule(name)
            series = self.series.setdefault(name, {})
            for key, attributes, value, total in series_rows:
                found = series.get(key)
                if found is None:
                    series[key] = [attributes, value, total, 1]
                else:
                    found[3] += 1
                    if mono or rule is None:
                        found[1] += value
                        if total is not None:
                            found[2] = (found[2] or 0.0) + total
                    else:
                        found[1] = rule(found[1], value)
                if rule is not None and not mono and source is not None:
                    self.ranked.setdefault(name, {}).setdefault(key, {})[source] = value

    def without(self, source: str, own: Snapshot) -> Accumulator:
        """This combination less one worker's part (``own``: exactly what was added for ``source``)."""
        out = Accumulator()
        out.monotonic = set(self.monotonic)
        for name, points in self.series.items():
            mine = {_key(p.attributes): p for p in own.metrics.get(name, ())}
            mono, rule = name in self.monotonic, _rule(name)
            ranked = self.ranked.get(name, {})
            series: dict[AttrsKey, list[Any]] = {}
            for key, (attributes, value, total, n) in points.items():
                p = mine.get(key)
                if p is None:
                    series[key] = [attributes, value, total, n]
                elif n <= 1:
                    continue  # only this worker had it
                elif mono or rule is None:
                    rest = None if total is None else total - (p.total or 0.0)
                    series[key] = [attributes, value - p.value, rest, n - 1]
                else:
                    others = [v for s, v in ranked.get(key, {}).items() if s != source]
                    if others:
                        series[key] = [attributes, rule(others), total, n - 1]
            if series:
                out.series[name] = series
        return out

    def with_own(self, own: Snapshot, per_worker: tuple[tuple[str | None, Snapshot], ...]) -> HostSnapshot:
        """The host's snapshot: this combination (the other workers) plus ``own``, this worker's fresh
        readings, stamped with its collection (time, resource, change generation). One pass, no copy."""
        metrics: dict[str, tuple[Point, ...]] = {}
        monotonic = set(self.monotonic) | own.monotonic
        for name in self.series.keys() | own.metrics.keys():
            others = self.series.get(name, {})
            mine = own.metrics.get(name, ())
            if not mine:
                metrics[name] = tuple(Point(a, v, t) for a, v, t, _ in others.values())
                continue
            mono, rule = name in monotonic, _rule(name)
            combined: dict[AttrsKey, Point] = {}
            for p in mine:
                key = _key(p.attributes)
                found = others.get(key)
                if found is None:
                    combined[key] = p
                elif mono or rule is None:
                    total = found[2] if p.total is None else (found[2] or 0.0) + p.total
                    combined[key] = Point(p.attributes, found[1] + p.value, total)
                else:
                    combined[key] = Point(p.attributes, rule(found[1], p.value), p.total)
            points = [Point(a, v, t) for key, (a, v, t, _) in others.items() if key not in combined]
            metrics[name] = (*points, *combined.values())
        return HostSnapshot(
            own.taken_at,
            own.resource,
            MappingProxyType(metrics),
            frozenset(monotonic),
            observed_at=own.observed_at,
            generation=own.generation,
            workers=len(per_worker),
            per_worker=per_worker,
        )

    def snapshot(self, own: Snapshot, per_worker: tuple[tuple[str | None, Snapshot], ...]) -> HostSnapshot:
        """This combination alone, stamped with ``own``'s collection."""
        return Accumulator.with_own(self, Snapshot(own.taken_at, own.resource, MappingProxyType({}), frozenset(),
                                                   own.observed_at, own.generation), per_worker)  # fmt: skip

    def dump(self) -> dict[str, Any]:
        """Plain values for ``marshal`` (the master's combined file)."""
        return {
            "series": {n: {k: [dict(v[0]), *v[1:]] for k, v in pts.items()} for n, pts in self.series.items()},
            "monotonic": list(self.monotonic),
            "ranked": self.ranked,
        }

    @classmethod
    def load(cls, raw: Mapping[str, Any]) -> Accumulator:
        acc = cls()
        acc.series, acc.monotonic, acc.ranked = raw["series"], set(raw["monotonic"]), raw["ranked"]
        return acc


def _rule(name: str) -> Any:
    return max if name in MAX_GAUGES else min if name in MIN_GAUGES else None


def rows_of(snap: Snapshot) -> dict[str, list[Row]]:
    """A Snapshot's series in the form ``Accumulator.add`` takes."""
    return {
        name: [(_key(p.attributes), dict(p.attributes), p.value, p.total) for p in points]
        for name, points in snap.metrics.items()
    }


_KEYS: dict[int, tuple[Mapping[str, Any], AttrsKey]] = {}


def _key(attributes: Mapping[str, Any]) -> AttrsKey:
    """A series' key, cached per attributes object: the SDK hands the same dict for a series at every
    collection, so a worker keys its own readings once, not at every combination. The cache holds the object
    (its id cannot be reused meanwhile) and is bounded."""
    found = _KEYS.get(id(attributes))
    if found is not None and found[0] is attributes:
        return found[1]
    try:
        key = frozenset(attributes.items())  # the SDK's attributes: sequences are already tuples
    except TypeError:
        key = attrs_key(attributes)
    if len(_KEYS) >= 65536:
        _KEYS.clear()
    _KEYS[id(attributes)] = (attributes, key)
    return key


# --- raw: what the :9464 endpoint renders ---------------------------------------------------------------------
_ScopeKey = tuple[str, str | None, str | None]


class RawAccumulator:
    """Published metrics combined for the Prometheus endpoint (and for retired.marshal): monotonic series summed,
    histogram buckets included; gauges kept per live worker under its ``service.instance.id``."""

    def __init__(self) -> None:
        self.metrics: dict[tuple[_ScopeKey, str], dict[str, Any]] = {}

    def add(self, metrics: Iterable[dict[str, Any]], live: bool, instance: str | None = None) -> None:
        for metric in metrics:
            mono = bool(metric["m"])
            if not mono and not live:
                continue
            scope = tuple(metric.get("s") or ("", None, None))
            entry = self.metrics.setdefault(
                (scope, metric["n"]),  # type: ignore[index]
                {"n": metric["n"], "s": list(scope), "d": metric.get("d", ""), "u": metric.get("u", ""),
                 "k": metric["k"], "m": mono, "points": {}},
            )  # fmt: skip
            points: dict[AttrsKey, dict[str, Any]] = entry["points"]
            for p in metric["p"]:
                attrs = p["a"] if mono or instance is None else {**p["a"], INSTANCE_ID: instance}
                key = attrs_key(attrs)
                found = points.get(key)
                if found is None:
                    points[key] = {**p, "a": attrs, **({"b": list(p["b"])} if "b" in p else {})}
                elif mono:
                    _add_point(found, p, metric["n"])
                else:
                    found["v"] = p["v"]

    def published(self) -> list[dict[str, Any]]:
        """The combined metrics in the published file format (retired.marshal)."""
        return [
            {k: v for k, v in entry.items() if k != "points"} | {"p": list(entry["points"].values())}
            for entry in self.metrics.values()
        ]

    def cumulative(self) -> list[list[Any]]:
        """[name, attributes, value, total] of every monotonic series (a history file's values)."""
        totals: dict[tuple[str, AttrsKey], list[Any]] = {}
        for (_, name), entry in self.metrics.items():
            if not entry["m"]:
                continue
            for key, p in entry["points"].items():
                found = totals.get((name, key))
                if found is None:
                    totals[(name, key)] = [name, p["a"], p["v"], p.get("t")]
                else:
                    found[2] += p["v"]
                    if p.get("t") is not None:
                        found[3] = (found[3] or 0.0) + p["t"]
        return list(totals.values())

    def metrics_data(self, resource: Mapping[str, Any], time_unix_nano: int) -> MetricsData:
        """The combined metrics as the SDK's MetricsData, for the Prometheus exporter's own translation."""
        scopes: dict[_ScopeKey, list[Metric]] = {}
        for (scope, _), entry in self.metrics.items():
            scopes.setdefault(scope, []).append(_metric(entry, time_unix_nano))
        scope_metrics = [
            ScopeMetrics(InstrumentationScope(name, version, schema_url), metrics, schema_url or "")
            for (name, version, schema_url), metrics in scopes.items()
        ]
        return MetricsData([ResourceMetrics(Resource(dict(resource)), scope_metrics, "")])


def _add_point(into: dict[str, Any], p: Mapping[str, Any], name: str) -> None:
    into["v"] += p["v"]
    if p.get("t") is not None:
        into["t"] = (into.get("t") or 0.0) + p["t"]
    if "b" in p:
        if into.get("e") == p.get("e") and len(into["b"]) == len(p["b"]):
            into["b"] = [a + b for a, b in zip(into["b"], p["b"], strict=True)]
        else:  # workers disagree on the bucket bounds (a view changed between deploys): buckets cannot add up
            _logger.debug("otel-reliability: %s: histogram bounds differ between workers; buckets not summed", name)
        for bound, pick in (("mn", min), ("mx", max)):
            if p.get(bound) is not None:
                into[bound] = p[bound] if into.get(bound) is None else pick(into[bound], p[bound])


def _metric(entry: Mapping[str, Any], time_unix_nano: int) -> Metric:
    points = entry["points"].values()
    data: Any
    if entry["k"] == "hist":
        data = HistogramData(
            [
                HistogramDataPoint(
                    p["a"],
                    0,
                    time_unix_nano,
                    int(p["v"]),
                    p.get("t") or 0.0,
                    p["b"],
                    p["e"],
                    p.get("mn") if p.get("mn") is not None else 0.0,
                    p.get("mx") if p.get("mx") is not None else 0.0,
                )
                for p in points
            ],
            AggregationTemporality.CUMULATIVE,
        )
    else:
        numbers = [NumberDataPoint(p["a"], 0, time_unix_nano, p["v"]) for p in points]
        if entry["k"] == "sum":
            data = Sum(numbers, AggregationTemporality.CUMULATIVE, bool(entry["m"]))
        else:
            data = Gauge(numbers)
    return Metric(entry["n"], entry.get("d") or "", entry.get("u") or "", data)


def encode(data: MetricsData) -> list[dict[str, Any]]:
    """A worker's collection in the published format: name, scope, kind, monotonic, points."""
    out: list[dict[str, Any]] = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            scope = [sm.scope.name, sm.scope.version, sm.scope.schema_url]
            for metric in sm.metrics:
                payload = metric.data
                points: list[dict[str, Any]] = []
                if isinstance(payload, HistogramData):
                    kind, mono = "hist", True
                    for hp in payload.data_points:
                        assert isinstance(hp, HistogramDataPoint)
                        points.append(
                            {"a": _plain_attrs(hp.attributes), "v": hp.count, "t": hp.sum, "b": list(hp.bucket_counts),
                             "e": list(hp.explicit_bounds), "mn": _finite(hp.min), "mx": _finite(hp.max)}
                        )  # fmt: skip
                elif isinstance(payload, Sum | Gauge):
                    kind = "sum" if isinstance(payload, Sum) else "gauge"
                    mono = isinstance(payload, Sum) and payload.is_monotonic
                    for np in payload.data_points:
                        assert isinstance(np, NumberDataPoint)
                        points.append({"a": _plain_attrs(np.attributes), "v": np.value})
                else:
                    continue
                gil.pause_point(len(points))
                out.append(
                    {"n": metric.name, "s": scope, "d": metric.description, "u": metric.unit, "k": kind, "m": mono,
                     "p": points}
                )  # fmt: skip
    return out


def _plain_attrs(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(attributes or {})  # sequence values are the SDK's tuples: marshal keeps them


def _finite(value: float | None) -> float | None:
    return value if value is not None and value not in (float("inf"), float("-inf")) else None
