"""HTTP server errors counted from the standard ``http.server.request.duration`` histogram, and spike logging.

No request pays anything for this: every OTel HTTP server instrumentation (ASGI/FastAPI, WSGI, Django,
Flask ... with ``OTEL_SEMCONV_STABILITY_OPT_IN=http``, which the distro sets) already records one histogram
count per request with ``http.route``, ``http.request.method``, ``http.response.status_code`` and
``error.type``. Counts over a window are differences of those cumulative counts (see readings/history.py), exact at
any request rate.

A request is
- an *error* when its status is >= 500, when ``error.type`` is set (the request raised, or the server could
  not send a valid status), or when it has no status at all (it raised before any response was sent);
- a *client error* when its status is 4xx;
- a *success* otherwise.
Requests to the health, admin and metrics paths are never counted: the distro already keeps them out of
the histogram, and ``classify`` drops them again in case a user's own ``OTEL_PYTHON_EXCLUDED_URLS`` lets
them in. Routes are the instrumentation's route templates; requests that matched no route (404 on an
unknown path, which has no ``http.route``) share the bucket ``UNMATCHED``, so no raw path becomes a key.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from otel_reliability import semconv
from otel_reliability.config import Settings
from otel_reliability.readings import Point, Readings, Snapshot

_logger = logging.getLogger("otel_reliability.errors")  # the name log configurations already filter on

HTTP_SERVER_DURATION = semconv.METRIC_HTTP_SERVER_REQUEST_DURATION
ROUTE = semconv.ATTR_HTTP_ROUTE
STATUS = semconv.ATTR_HTTP_RESPONSE_STATUS_CODE
ERROR_TYPE = semconv.ATTR_ERROR_TYPE
UNMATCHED = "(unmatched)"
SPIKE_WINDOW = 60.0
"""Seconds over which errors are counted for spike detection ("errors in the last minute": short enough to tell a
burst from the error-rate window's steady share)."""


@dataclass
class RouteCounts:
    requests: int = 0
    errors: int = 0
    client_errors: int = 0


@dataclass
class ErrorCounts:
    """Requests in a window (or since start), by outcome and by route template."""

    errors: int = 0
    client_errors: int = 0
    successes: int = 0
    routes: dict[str, RouteCounts] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.errors + self.client_errors + self.successes

    @property
    def error_rate_percent(self) -> float:
        return 100.0 * self.errors / self.total if self.total else 0.0

    def top_routes(self, limit: int = 5) -> list[tuple[str, RouteCounts]]:
        """Routes with at least one error, most errors first (ties: by name, so the order is stable)."""
        erring = [(route, c) for route, c in self.routes.items() if c.errors > 0]
        erring.sort(key=lambda item: (-item[1].errors, item[0]))
        return erring[:limit]


def _status(value: Any) -> int | None:
    # The SDK keeps the int the instrumentation recorded; other paths (or instrumentations) may give "500".
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _excluded(route: str, settings: Settings) -> bool:
    for base in (settings.health_path, settings.admin_path, "/metrics"):
        if route == base or route.startswith(base + "/"):
            return True
    return False


def classify(points: Iterable[Point], settings: Settings) -> ErrorCounts:
    """Count the histogram points (each ``value`` is a request count) by outcome and route."""
    counts = ErrorCounts()
    for point in points:
        n = round(point.value)
        if n <= 0:
            continue
        route_value = point.attributes.get(ROUTE)
        route = str(route_value) if route_value else UNMATCHED
        if route != UNMATCHED and _excluded(route, settings):
            continue
        status = _status(point.attributes.get(STATUS))
        per_route = counts.routes.setdefault(route, RouteCounts())
        per_route.requests += n
        if point.attributes.get(ERROR_TYPE) or status is None or status >= 500:
            counts.errors += n
            per_route.errors += n
        elif 400 <= status < 500:
            counts.client_errors += n
            per_route.client_errors += n
        else:
            counts.successes += n
    return counts


def count(snapshot: Snapshot, settings: Settings) -> ErrorCounts:
    return classify(snapshot.points(HTTP_SERVER_DURATION), settings)


def describe_routes(counts: ErrorCounts, limit: int = 3) -> str:
    top = counts.top_routes(limit)
    return ", ".join(f"{route} ({c.errors})" for route, c in top) or "none"


class SpikeDetector:
    """A Readings listener: one ERROR line when errors in the last 60 s reach the threshold, then silence
    until the count has fallen below the threshold again (one line per episode, never one per error).

    It runs in the Readings' sampler thread after each periodic snapshot, never on the request path, so an
    episode is noticed within one snapshot interval (OTEL_RELIABILITY_SNAPSHOT_INTERVAL).
    """

    def __init__(self, settings: Settings, *, window: float = SPIKE_WINDOW) -> None:
        self._settings = settings
        self._window = window
        self._in_spike = False
        self._lock = threading.Lock()

    @property
    def in_spike(self) -> bool:
        return self._in_spike

    def __call__(self, readings: Readings) -> None:
        counts = count(readings.window(self._window, (HTTP_SERVER_DURATION,)), self._settings)
        threshold = self._settings.error_spike_threshold
        with self._lock:
            if counts.errors >= threshold and not self._in_spike:
                self._in_spike = True
                _logger.error(
                    "otel-reliability: error spike: %d errors in the last %gs (threshold %d) out of %d "
                    "requests; top routes: %s",
                    counts.errors,
                    self._window,
                    threshold,
                    counts.total,
                    describe_routes(counts),
                )
            elif counts.errors < threshold and self._in_spike:
                self._in_spike = False
                _logger.info(
                    "otel-reliability: error spike cleared: %d errors in the last %gs", counts.errors, self._window
                )


_installed: weakref.WeakKeyDictionary[Readings, SpikeDetector] = weakref.WeakKeyDictionary()
_installed_lock = threading.Lock()


def install_spike_detector(readings: Readings, settings: Settings) -> SpikeDetector:
    """Attach one SpikeDetector to ``readings`` (idempotent: a second call returns the first detector)."""
    with _installed_lock:
        detector = _installed.get(readings)
        if detector is None:
            detector = SpikeDetector(settings)
            readings.add_listener(detector)
            _installed[readings] = detector
        return detector
