"""The in-process reader: what the health endpoints and the CLI see is what the exporters see.

``Readings`` is an OpenTelemetry ``MetricReader`` on the same ``MeterProvider`` as the Prometheus and OTLP
readers. Health views never reach into an instrumentor's private state: they ask the Readings for a
``Snapshot`` (one collection, cached for a short moment so a burst of health calls collects once) or for a
``Window`` (the change of cumulative counts over the last N seconds).

Windows come from periodic snapshots of the cumulative sums and histogram counts: the count of errors in
the last 300 s is ``count(now) - count(at the newest snapshot taken at least 300 s ago)``. That is exact at
any request rate and costs memory proportional to (window / snapshot interval) x number of series, never
proportional to traffic (a deque of the last N events would be wrong as soon as more than N events fall
in the window). The window's start is known to within one snapshot interval; ``Window``
reports the seconds it really covers.

Names: *readings* are what a reader answers (``snapshot()``, ``window()``). ``Readings`` is the reader of one
process and ``process_readings()`` this process's installed one; ``host.HostReadings`` answers the same calls for
every worker of a prefork host, and ``host.health_readings()`` is what health views read (the host's readings in a
prefork worker, else the process's).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricReader, MetricsData

from otel_reliability import changes, collection, gil, threads, upstream
from otel_reliability.readings.history import _cumulative_values, _History
from otel_reliability.readings.model import (
    Attributes,
    Point,
    Snapshot,
    Window,
    quantile,
    rfc3339,
    to_snapshot,
    window_between,
)

__all__ = [
    "Attributes",
    "Point",
    "Readings",
    "Snapshot",
    "Window",
    "install",
    "installed",
    "process_readings",
    "quantile",
    "retention",
    "rfc3339",
]

_logger = logging.getLogger(__name__)

KEEP_FRESH_MIN = 0.25  # seconds: a shorter cache time is not chased by the background thread

_CUMULATIVE: dict[type, AggregationTemporality] = {
    Counter: AggregationTemporality.CUMULATIVE,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
    Histogram: AggregationTemporality.CUMULATIVE,
    ObservableCounter: AggregationTemporality.CUMULATIVE,
    ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableGauge: AggregationTemporality.CUMULATIVE,
}


class Readings(MetricReader):
    """A MetricReader that keeps the latest collection and a short history of cumulative values."""

    def __init__(
        self,
        *,
        snapshot_interval: float = 1.0,
        retention: float = 360.0,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        super().__init__(preferred_temporality=_CUMULATIVE)
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._snapshot_interval = snapshot_interval
        self._lock = threading.RLock()  # held while collecting
        self._history_lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._received: Snapshot | None = None
        self._history = _History(retention=retention)
        self._started_at = clock()
        self._background = background
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[Callable[[Readings], None]] = []
        self._wake = threading.Event()  # a health call asks the background thread for a refresh
        self._duration = 0.0  # how long the last background collection took
        self._received_data: MetricsData | None = None
        self._resource: Attributes = MappingProxyType({})

    def bind(self, provider: Any) -> Readings:
        """Register on ``provider`` and remember its resource (service name and instance id for every view)."""
        if self._collect is None:  # type: ignore[has-type]
            provider.add_metric_reader(self)
        attributes = upstream.sdk.provider_resource(provider) if upstream.usable("sdk.config_resource") else None
        if attributes is not None:  # else taken from the first collection received (the same resource)
            self._resource = MappingProxyType(attributes)
        return self

    # --- MetricReader ---------------------------------------------------------------------------------
    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._received_data = metrics_data
        if not self._resource and metrics_data.resource_metrics:
            self._resource = MappingProxyType(dict(metrics_data.resource_metrics[0].resource.attributes))
        self._received = to_snapshot(metrics_data, self._clock(), self._resource, time.time())

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._stop.set()
        self._wake.set()

    # --- snapshots --------------------------------------------------------------------------------------
    def snapshot(self, max_age: float | None = None) -> Snapshot:
        """The current metrics: one collection, reused for at most ``max_age`` seconds (default: the cache
        time) and never past a change (``otel_reliability.changes``): a breaker transition, a new breaker or
        pool, a failed connection, an operation turning stuck each make the next call collect anew.

        Kept fresh in the background: the Readings' thread collects again before the last collection is older
        than the cache time (``_period``), so a caller, steady or sporadic, finds a usable collection and never
        collects itself unless something changed. With a cache time too short for that (< ``KEEP_FRESH_MIN``), a
        caller that finds the collection past 3/4 of its age limit asks the thread for a refresh instead.
        """
        max_age = self._cache_seconds if max_age is None else max_age
        latest = self._latest  # one reference read: no lock on the fast path
        if latest is not None and self._usable(latest, max_age):
            if 0 < max_age < KEEP_FRESH_MIN and self._clock() - latest.taken_at > max_age * 0.75:
                self._refresh_in_background()
            return latest
        with self._lock:
            latest = self._latest  # another thread may have collected while this one waited
            if latest is not None and self._usable(latest, max_age):
                return latest
            return self._collect_now()

    @property
    def cache_seconds(self) -> float:
        """How long a collection is reused by default (``OTEL_RELIABILITY_HEALTH_CACHE``)."""
        return self._cache_seconds

    def _usable(self, snap: Snapshot, max_age: float) -> bool:
        return (
            snap.generation == changes.generation() and self._clock() - snap.taken_at <= max_age and not changes.due()
        )

    def is_fresh(self) -> bool:
        """A snapshot usable by ``snapshot()`` without collecting."""
        latest = self._latest
        return latest is not None and self._usable(latest, self._cache_seconds)

    @property
    def latest(self) -> Snapshot | None:
        """The newest collection, whatever its age (None before the first)."""
        return self._latest

    def export(self) -> MetricsData | None:
        """Collect now and return the raw collection, for an exporter that renders it (the :9464 endpoint):
        one reader, so every measurement is aggregated once and a scrape equals what health reads."""
        return self.export_with_snapshot()[0]

    def export_with_snapshot(self) -> tuple[MetricsData | None, Snapshot]:
        """``export()`` and the Snapshot of the same collection (a prefork worker publishes the one and keeps
        the other, to take its own part out of the host's combination)."""
        with self._lock:
            snap = self._collect_now()
            return self._received_data, snap

    def _collect_now(self) -> Snapshot:
        with self._lock:
            self._received = None
            self._received_data = None
            generation = changes.generation()  # a change during the collection makes it stale at once
            changes.settle(time.monotonic())
            with collection.hooks_first():  # the values our publishers keep outside the SDK go in first
                self.collect()
            received = self._received
            if received is None:
                received = Snapshot(self._clock(), self._resource, MappingProxyType({}), observed_at=time.time())
            snap = replace(received, generation=generation)
            self._latest = snap
            self._ensure_sampler()
            return snap

    def _refresh_in_background(self) -> None:
        """Ask the background thread to collect now (it is the only one that collects off the request path)."""
        if self._background:
            self._wake.set()

    def tick(self) -> Snapshot:
        """Collect now and record the cumulative values in the history (the sampler thread calls this)."""
        snap = self._collect_now()
        self._record(snap)
        return snap

    def _record(self, snap: Snapshot) -> None:
        """Add ``snap``'s cumulative values to the history and tell the listeners."""
        values = _cumulative_values(snap)
        with self._history_lock:
            self._history.add(snap.taken_at, values)
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:
                _logger.exception("otel-reliability: a Readings listener failed")

    def window(self, seconds: float, names: Iterable[str] | None = None) -> Window:
        """The change of every cumulative series (sums, histogram counts) over the last ``seconds``; only of
        the metrics ``names`` when given (a view that needs one metric does not pay for all of them)."""
        now = self.snapshot()  # never holds the collection lock when a snapshot is fresh
        with self._history_lock:  # short: a collection in progress does not block a window
            base = self._history.base(now.taken_at - seconds)
            if base is None:
                if now.taken_at - self._started_at <= seconds or not (self._history.older or self._history.recent):
                    base = (self._started_at, {})  # the reader is younger than the window: all it saw is inside
                else:
                    base = self._history.entries[0]  # history started late: cover what we have
        base_at, base_values = base
        return window_between(now, base_at, base_values, seconds, names)

    def add_listener(self, listener: Callable[[Readings], None]) -> None:
        """Call ``listener(readings)`` after each periodic snapshot (e.g. spike detection), off the request path."""
        self._listeners.append(listener)

    # --- the sampler thread ---------------------------------------------------------------------------
    def _ensure_sampler(self) -> None:
        if not self._background or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threads.start(self._run, "otel-reliability-readings")

    def start(self) -> None:
        """Start the periodic snapshots (idempotent; restarted in a forked child)."""
        with self._lock:
            self._ensure_sampler()

    def _period(self) -> float:
        """How often the background thread collects: every snapshot interval, and sooner when the cache time is
        shorter, by enough that a collection ends before the previous one expires (three times the last one's
        duration, at least 50 ms)."""
        cache = self._cache_seconds
        if cache < KEEP_FRESH_MIN:
            return self._snapshot_interval
        return min(self._snapshot_interval, cache - min(cache / 2, max(0.05, 3 * self._duration)))

    def _run(self) -> None:
        """Every background collection happens here, giving way to requests (``otel_reliability.gil``):
        one every ``_period()`` (at most the snapshot interval), one at once when a health call asks, none
        while a collection made by a caller (after a change) is still recent. A collection at least ~one
        snapshot interval after the last history entry is the next history entry, so the history costs no
        collections of its own."""
        last_entry = -math.inf
        next_at = self._clock() + self._period()
        while not self._stop.is_set():
            asked = self._wake.wait(max(0.0, next_at - self._clock()))
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                with gil.yielding_to_requests():
                    period = self._period()
                    latest = self._latest
                    if (
                        not asked
                        and latest is not None
                        and self._usable(latest, self._cache_seconds)
                        and self._clock() - latest.taken_at < period / 2
                    ):
                        snap = latest  # a caller collected a moment ago
                    else:
                        started = self._clock()
                        snap = self._collect_now()
                        self._duration = self._clock() - started
                    if snap.taken_at - last_entry >= self._snapshot_interval * 0.9:
                        self._record(snap)
                        last_entry = snap.taken_at
                    next_at = snap.taken_at + period
                self._wake.clear()  # a refresh asked for during this collection is answered by it
            except Exception:
                next_at = self._clock() + self._snapshot_interval
                _logger.debug("otel-reliability: background collection failed", exc_info=True)

    def _after_fork(self) -> None:
        # The child inherits the parent's cumulative counts and history (still valid baselines) but not the
        # sampler thread, nor a lock another thread may have held at fork time.
        self._lock = threading.RLock()
        self._history_lock = threading.Lock()
        self._thread = None
        self._latest = None
        self._wake = threading.Event()


# --- the process-wide Readings ------------------------------------------------------------------------------
_process_readings: Readings | None = None
_process_lock = threading.Lock()
_all: weakref.WeakSet[Readings] = weakref.WeakSet()


def process_readings() -> Readings:
    """The Readings of this process, attached to the global MeterProvider on first use if no configurator did."""
    global _process_readings
    with _process_lock:
        if _process_readings is None:
            _process_readings = _attach_late()
        return _process_readings


def installed() -> bool:
    """Whether this process has its Readings already (a configurator installed them, or they were attached)."""
    return _process_readings is not None


def install(reader: Readings) -> None:
    """Make ``reader`` the process-wide Readings (the configurator calls this with the reader it registered)."""
    global _process_readings
    with _process_lock:
        _process_readings = reader
        _all.add(reader)
    reader.start()


def _attach_late() -> Readings:
    """Another configurator built the MeterProvider: add our reader to it (observable values are all there;
    synchronous measurements made before this moment are not)."""
    from opentelemetry import metrics

    from otel_reliability.config import settings

    current = settings()
    reader = Readings(
        snapshot_interval=current.snapshot_interval,
        retention=retention(current.error_window),
        cache_seconds=current.health_cache,
    )
    provider = metrics.get_meter_provider()
    if not hasattr(provider, "add_metric_reader"):
        _logger.warning(
            "otel-reliability: no SDK MeterProvider is configured; health views will show no metrics. "
            "Run under opentelemetry-instrument or call otel_reliability.configure()."
        )
    else:
        reader.bind(provider)
    _all.add(reader)
    reader.start()
    return reader


def retention(error_window: float) -> float:
    """Seconds of window history to keep for an error window (``OTEL_RELIABILITY_ERROR_WINDOW``): the window plus
    a minute, and never under two minutes, so a window always finds a snapshot at least as old as its start."""
    return max(error_window, 60.0) + 60.0


def _reset_after_fork() -> None:
    for reader in list(_all):
        reader._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
