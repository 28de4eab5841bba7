"""Values kept in our own objects, published into *synchronous* instruments when a reader collects.

Why not observable instruments: the OpenTelemetry Python SDK spends ~25-40 µs per observable data point on every
collection (a Measurement object, attribute cleaning and hashing, an aggregation lookup), against ~4 µs for a
point of a synchronous instrument whose value did not change. A breaker is a dozen points, so 100 breakers made
every collection 25 ms. Here the live value is read by our own code (cheap), compared with what was published
last, and only a change reaches the SDK (``add`` of the difference). Gauges become up-down counters, which the
Prometheus exporters show as gauges, exactly as before.

Why not record on the call path: one SDK ``add`` costs more than a pybreaker call itself. So calls are counted in
plain integers and published at collection, like the rest.

``on_collect`` runs the publishing at the start of *every* reader's collection (the Readings, the Prometheus
endpoint, the OTLP exporter), through an observable instrument that reports no points, so every reader sees
the values of its own moment.

The SDK has no API to end a series of a synchronous instrument; a breaker that is garbage-collected must
disappear, not stay at 0 forever. ``_drop_series`` removes it from the SDK's storage; if the SDK's internals
ever move, the series is set to 0 instead (and the loss is logged once).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import ExemplarReservoir
from opentelemetry.sdk.metrics.view import View

from otel_reliability import giveway

_logger = logging.getLogger(__name__)
_drop_warned = False

Attributes = Mapping[str, Any]


def on_collect(meter: Meter, name: str, publish: Callable[[], None]) -> None:
    """Call ``publish()`` at the start of every collection of every reader of ``meter``'s provider."""
    lock = threading.Lock()  # two readers collecting at once must not publish the same difference twice

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        with lock:
            try:
                publish()
            except Exception:  # a failing source must not break the collection of everything else
                _logger.debug("otel-reliability: publishing %s failed", name, exc_info=True)
        return ()

    meter.create_observable_gauge(name, [callback], description="(internal: publishes values; no data points)")


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

    def forget_all(self) -> None:
        for key in self.series():
            self.forget(key)


def _drop_series(instrument: Any, attributes: Attributes) -> bool:
    """Remove one attribute set's aggregation from every reader's storage (see the module docstring)."""
    global _drop_warned
    try:
        instrument = getattr(instrument, "_real_instrument", None) or instrument  # the API's proxy, if any
        consumer = instrument._measurement_consumer
        wanted = dict(attributes)
        for storage in list(consumer._reader_storages.values()):
            for match in storage._instrument_view_instrument_matches.get(instrument, ()):
                with match._lock:
                    for aggr_key, aggregation in list(match._attributes_aggregation.items()):
                        if dict(aggregation._attributes or {}) == wanted:
                            del match._attributes_aggregation[aggr_key]
        return True
    except (AttributeError, TypeError):
        if not _drop_warned:
            _drop_warned = True
            _logger.info(
                "otel-reliability: this OpenTelemetry SDK cannot end a series; series of breakers that are gone "
                "stay at 0 instead of disappearing"
            )
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
        giveway.pause_point()  # the SDK calls this once per data point of our meters: a background collection
        return []  # of 100 breakers lets a waiting request run between its points (see otel_reliability.giveway)


def _no_exemplars(aggregation_type: Any) -> Callable[..., ExemplarReservoir]:
    return _NoExemplars


def quiet_views() -> list[View]:
    """Views that give ``QUIET_METERS`` no exemplar reservoir (every other instrument keeps the default)."""
    return [View(meter_name=name, exemplar_reservoir_factory=_no_exemplars) for name in QUIET_METERS]


def install_quiet_views(provider: Any) -> bool:
    """Add ``quiet_views()`` to an SDK MeterProvider that was built without them (upstream's configuration
    builds it for us and takes no views). Views are looked up when an instrument is first measured, so this
    must run before the instrumentors; returns False when the provider is not one we can extend."""
    sdk_config = getattr(provider, "_sdk_config", None)
    if sdk_config is None or not hasattr(sdk_config, "views"):
        return False
    try:
        sdk_config.views = [*sdk_config.views, *quiet_views()]
    except (AttributeError, TypeError):  # a frozen configuration in some future SDK: keep the defaults
        return False
    return True
