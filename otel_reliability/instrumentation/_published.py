"""Values kept in our own objects, published into *synchronous* instruments when a reader collects.

Why not observable instruments: the OpenTelemetry Python SDK spends ~25-40 µs per observable data point on every
collection (a Measurement object, attribute cleaning and hashing, an aggregation lookup), against ~4 µs for a
point of a synchronous instrument whose value did not change. A breaker is a dozen points, so 100 breakers made
every collection 25 ms. Here the live value is read by our own code (cheap), compared with what was published
last, and only a change reaches the SDK (``add`` of the difference). Gauges become up-down counters, which the
Prometheus exporters show as gauges, exactly as before.

Why not record on the call path: one SDK ``add`` costs more than a pybreaker call itself. So calls are counted in
plain integers and published at collection, like the rest.

The publishing runs at the start of *every* reader's collection (the Readings, the Prometheus endpoint, the
OTLP exporter) as a collection hook (``otel_reliability.collection``), so every reader sees the values of its
own moment.

The SDK has no API to end a series of a synchronous instrument; a breaker that is garbage-collected must
disappear, not stay at 0 forever. ``otel_reliability.upstream.sdk.drop_series`` removes it from the SDK's
storage; where its check finds the SDK's internals moved, the series is set to 0 instead (one WARNING).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import ExemplarReservoir
from opentelemetry.sdk.metrics.view import View

from otel_reliability import collection, gil, upstream
from otel_reliability.upstream.runtime import count_value, counter
from otel_reliability.upstream.sdk import find_aggregations as _find_aggregations
from otel_reliability.upstream.sdk import fold_values

__all__ = ["count_value", "counter"]  # lock-free counters for hot paths (see otel_reliability.upstream.runtime)

_logger = logging.getLogger(__name__)

Attributes = Mapping[str, Any]


class Published:
    """Series of one synchronous instrument whose values are set from outside, by key.

    ``monotonic`` (a counter): only increases are published; a total that went down (a restarted source) is
    taken as the new base. Otherwise (an up-down counter standing for a gauge) any difference is published.
    """

    __slots__ = ("_instrument", "_last", "_monotonic")

    def __init__(self, instrument: Any, *, monotonic: bool) -> None:
        self._instrument = instrument
        self._monotonic = monotonic
        self._last: dict[Hashable, tuple[Attributes, float]] = {}

    @classmethod
    def gauge(cls, meter: Meter, name: str, unit: str, description: str) -> Published:
        """A gauge published as an up-down counter (Prometheus shows a gauge)."""
        return cls(meter.create_up_down_counter(name, unit=unit, description=description), monotonic=False)

    @classmethod
    def counter(cls, meter: Meter, name: str, unit: str, description: str) -> Published:
        return cls(meter.create_counter(name, unit=unit, description=description), monotonic=True)

    def set(self, key: Hashable, value: float, attributes: Attributes) -> bool:
        """Publish ``value`` for the series ``key``; True when it changed."""
        last = self._last.get(key)
        previous = 0.0 if last is None else last[1]
        if last is not None and value == previous:
            return False
        delta = value - previous
        if self._monotonic and delta < 0:
            delta = 0.0  # the source restarted its count: nothing to add, the new value is the base
        if delta or last is None:
            self._instrument.add(delta, attributes)  # add(0) makes the series exist from the start
        self._last[key] = (attributes, value)
        return True

    def series(self) -> list[Hashable]:
        return list(self._last)

    def forget(self, key: Hashable) -> None:
        """End the series ``key``: it disappears from every reader's next collection."""
        last = self._last.pop(key, None)
        if last is None:
            return
        attributes, value = last
        if not _drop_series(self._instrument, attributes) and not self._monotonic and value:
            self._instrument.add(-value, attributes)


def _drop_series(instrument: Any, attributes: Attributes) -> bool:
    """Remove one attribute set's aggregation from every reader's storage (see the module docstring)."""
    if not upstream.usable("sdk.drop_series"):
        return False
    try:
        upstream.sdk.drop_series(instrument, attributes)
    except (AttributeError, TypeError):  # an instrument of another SDK (a proxy never bound): set to 0 instead
        return False
    return True


# --- histograms recorded on a hot path ----------------------------------------------------------------------------
# One SDK ``Histogram.record()`` costs ~8-13 µs here (a Measurement, attribute cleaning and hashing, a lookup and
# a lock per reader), more than the pool checkout or the SQLite statement it measures. ``BufferedHistogram``
# appends each value to its series' queue (~0.1 µs) and hands the values to the SDK when a reader collects
# (a collection hook), or when a queue reaches ``FLUSH_AT``. Handing over: the first value of a series goes through
# ``record()`` (the SDK creates the series in every reader's storage, as for any value), the rest, and every later
# value, are folded into those same explicit-bucket aggregations in the order they were observed: the bucket
# counts, count, min, max and the sum (added one by one, so even its rounding) are exactly what ``record()`` of
# each value would have produced. Where a series' aggregations are is found once and then checked by identity. The
# fold reaches into the SDK's storage (``otel_reliability.upstream.sdk``, checked once against ``record()``);
# anything it does not recognise (another aggregation from a View, attribute filtering, other buckets, a moved
# internal) replays the values through ``record()`` instead: slower, never different. Exemplars: a value
# measured in a sampled span is queued with that span's context (``record_sampled``); per bucket the last such
# value is handed over through ``record()`` in its span's context: the exemplar the SDK's default reservoir
# (last offered value per bucket, trace-based filter) would have kept for that bucket. Its timestamp is the
# hand-over's (at most one collection later), and the sum may differ in its last bit (another order).
FLUSH_AT = 4096


class HistogramSeries:
    """One attribute set of a ``BufferedHistogram``: ``record`` is the hot path."""

    __slots__ = ("_owner", "attributes", "exemplars", "targets", "values")

    def __init__(self, owner: BufferedHistogram, attributes: Attributes) -> None:
        self._owner = owner
        self.attributes = attributes
        self.values: deque[float] = deque()  # append/popleft are atomic: no lock on the hot path
        # Per bucket, the last value measured in a sampled span and that span's context: what the SDK's
        # default reservoir (AlignedHistogramBucketExemplarReservoir) would keep as that bucket's exemplar.
        self.exemplars: dict[int, tuple[float, Any]] = {}
        # Where the last fold found this series in the SDK's storage (table, key, aggregation per reader): found
        # by a scan once, then checked by identity, so a flush does not scan every series of the instrument.
        self.targets: list[tuple[Mapping[Any, Any], Any, Any]] | None = None

    def record(self, value: float) -> None:
        values = self.values
        values.append(value)
        if len(values) >= FLUSH_AT:  # nobody collects (a pull reader never scraped): do not grow without bound
            self._owner.flush_series(self)

    def record_sampled(self, value: float, span_context: Any) -> None:
        """``record`` of a value measured inside a sampled span: the exemplar candidate of its bucket."""
        self.values.append(value)  # first: a flush that sees the candidate has its value too
        self.exemplars[bisect_left(self._owner._boundaries, value)] = (value, span_context)
        if len(self.values) >= FLUSH_AT:
            self._owner.flush_series(self)


class BufferedHistogram:
    """An SDK explicit-bucket histogram (``instrument``, created on ``meter`` with ``boundaries``) fed through
    per-series queues, flushed at the start of every collection of ``meter``'s provider."""

    __slots__ = ("__weakref__", "_boundaries", "_instrument", "_lock", "_series")

    def __init__(self, meter: Meter, instrument: Any, boundaries: Iterable[float]) -> None:
        self._instrument = instrument
        self._boundaries = tuple(boundaries)
        self._series: dict[Hashable, HistogramSeries] = {}
        self._lock = threading.Lock()  # one flush at a time: values reach the SDK in the order observed
        _all_buffered.add(self)
        collection.before_collect(meter, FLUSH_HOOK, _Flusher()).members.add(self)

    def series(self, key: Hashable, attributes: Attributes) -> HistogramSeries:
        """The series ``key`` (made once; keep it with the object it measures, e.g. a pool)."""
        found = self._series.get(key)
        if found is None:
            with self._lock:
                found = self._series.setdefault(key, HistogramSeries(self, attributes))
        return found

    def record(self, value: float, attributes: Attributes) -> None:
        """Straight to the SDK: for values that need the context of the moment (an exemplar, a rare error)."""
        self._instrument.record(value, attributes)

    def flush(self) -> None:
        """Hand every queued value to the SDK (the collection hook of the histogram's meter runs this)."""
        for series in list(self._series.values()):
            queued = len(series.values)
            self.flush_series(series)
            gil.pause_point(queued // 8 + 1)  # a queued value costs about an eighth of a data point

    def flush_series(self, series: HistogramSeries) -> None:
        with self._lock:
            exemplars = series.exemplars  # taken before the values: each candidate's value is among them
            if exemplars:
                series.exemplars = {}
            values: list[float] = []
            queue = series.values
            try:
                while True:
                    values.append(queue.popleft())
            except IndexError:
                pass
            chosen = []
            for value, span_context in exemplars.values():
                with contextlib.suppress(ValueError):
                    values.remove(value)
                    chosen.append((value, span_context))
            self._hand_over(series, values)
            for value, span_context in chosen:  # through record(), in their span's context: the exemplars
                context = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
                self._instrument.record(value, series.attributes, context=context)

    def _hand_over(self, series: HistogramSeries, values: list[float]) -> None:
        if not values or (series.targets and _fold(self._instrument, self._boundaries, series, values)):
            return  # the series' aggregations were found before: every value folded into them
        self._instrument.record(values[0], series.attributes)  # creates the series wherever it is missing
        if len(values) > 1 and not _fold(self._instrument, self._boundaries, series, values[1:]):
            for value in values[1:]:
                self._instrument.record(value, series.attributes)


_all_buffered: weakref.WeakSet[BufferedHistogram] = weakref.WeakSet()

FLUSH_HOOK = "otel_reliability.histograms.flush"


class _Flusher:
    """The collection hook of one meter's BufferedHistograms: one per meter, since a meter keeps the first hook of
    a name (a second ``instrument()``, a second app on the same meter joins the first one's members)."""

    __slots__ = ("members",)

    def __init__(self) -> None:
        self.members: weakref.WeakSet[BufferedHistogram] = weakref.WeakSet()

    def __call__(self) -> None:
        for member in list(self.members):
            member.flush()


def _forget_after_fork() -> None:
    """A forked child (a prefork worker) must not count what its parent measured and had not handed over yet; a
    gunicorn master, whose SDK is a no-op proxy, would otherwise pass its start-up queries to every worker."""
    for histogram in list(_all_buffered):
        histogram._lock = threading.Lock()  # the parent may have held it while forking
        for series in list(histogram._series.values()):
            series.values.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _fold(instrument: Any, boundaries: tuple[float, ...], series: HistogramSeries, values: list[float]) -> bool:
    """Add ``values`` to the SDK aggregations of ``series`` as ``record()`` would; False: nothing was added."""
    if not all(0.0 <= v < math.inf for v in values) or not upstream.usable("sdk.histogram_fold"):
        return False  # record() drops the former with a warning: let it
    try:
        cached = series.targets
        if cached is None or any(table.get(key) is not aggregation for table, key, aggregation in cached):
            cached = series.targets = _find_aggregations(instrument, boundaries, series.attributes)
        if not cached:
            return False
        for _, _, aggregation in cached:
            fold_values(aggregation, boundaries, values)
        return True
    except (AttributeError, TypeError, KeyError):  # an instrument of another SDK: replayed
        return False


# --- exemplars -------------------------------------------------------------------------------------------------
# Our meters' values are states, counts and configuration: an exemplar (a trace id next to a value) says nothing
# about them. The SDK's default reservoir still costs ~13 µs per point per collection even when no exemplar is
# ever offered, more than the rest of a point's collection; these views give our meters a reservoir that keeps
# nothing. (The HTTP request histogram keeps its exemplars: they are not on these meters.)
QUIET_METERS = ("otel_reliability.breakers", "otel_reliability.pool", "otel_reliability.process")


class _NoExemplars(ExemplarReservoir):
    def __init__(self, **kwargs: Any) -> None:  # the SDK passes size/boundaries to the reservoirs it builds
        return None

    def offer(self, value: Any, time_unix_nano: int, attributes: Any, context: Any) -> None:
        return None

    def collect(self, point_attributes: Any) -> list[Any]:
        # The SDK calls this once per data point of our meters: the only code of ours that runs between the SDK's
        # own points, so a background collection of 100 breakers lets a waiting request run between them.
        gil.pause_point()
        return []


def _no_exemplars(aggregation_type: Any) -> Callable[..., ExemplarReservoir]:
    return _NoExemplars


def quiet_views() -> list[View]:
    """Views that give ``QUIET_METERS`` no exemplar reservoir (every other instrument keeps the default)."""
    return [View(meter_name=name, exemplar_reservoir_factory=_no_exemplars) for name in QUIET_METERS]


def install_quiet_views(provider: Any) -> bool:
    """Add ``quiet_views()`` to an SDK MeterProvider that was built without them (upstream's configuration
    builds it for us and takes no views). Views are looked up when an instrument is first measured, so this
    must run before the instrumentors; returns False when the provider is not one we can extend."""
    try:
        return upstream.sdk.add_views(provider, quiet_views())
    except (AttributeError, TypeError):  # not an SDK provider: keep the defaults
        return False
