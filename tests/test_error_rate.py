"""Error rate from the http.server.request.duration counts: exact counts, a sliding window, spike logging.

The Readings run with a fake clock and no background thread (``r.tick()`` is one periodic snapshot), so
windows of minutes are tested without sleeping. Attributes are recorded exactly as the ASGI
instrumentation records them with OTEL_SEMCONV_STABILITY_OPT_IN=http: the status code is an int, error.type
the status as a string (5xx only), and http.route absent for requests that matched no route.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Histogram, MeterProvider

from otel_reliability import config, request_errors
from otel_reliability.health.model import CheckContext, Status
from otel_reliability.health.views import error_rate
from otel_reliability.readings import Readings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.clock = Clock()
        self.readings = Readings(background=False, clock=self.clock, retention=420.0)
        self.provider = MeterProvider(metric_readers=[self.readings])
        self.histogram: Histogram = self.provider.get_meter("test.http").create_histogram(  # type: ignore[assignment]
            "http.server.request.duration", unit="s"
        )
        self.settings = config.load(env or {})

    def request(self, status: int, route: str | None = "/items/{item_id}", n: int = 1, method: str = "GET") -> None:
        attrs: dict[str, Any] = {"http.request.method": method, "http.response.status_code": status}
        if route is not None:
            attrs["http.route"] = route
        if status >= 500:
            attrs["error.type"] = str(status)
        for _ in range(n):
            self.histogram.record(0.001, attrs)

    def at(self, seconds: float) -> None:
        """Move the clock and take one periodic snapshot there."""
        self.clock.now = 1000.0 + seconds
        self.readings.tick()

    def view(self) -> tuple[Status, dict[str, Any]]:
        self.clock.now += 1.5  # past the snapshot cache (1 s)
        result = error_rate.compute(CheckContext(readings=self.readings, settings=self.settings))
        return result.status, dict(result.body)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.provider.shutdown()


def test_more_than_1000_errors_in_the_window_are_counted_exactly(h: Harness) -> None:
    h.at(0)
    h.request(500, n=1234)
    h.request(503, route="/upload", n=321)
    h.request(404, n=777)
    h.request(200, n=2500)
    h.request(201, route="/upload", n=10)
    h.at(5)
    h.request(500, n=66)  # after the last periodic snapshot: still in the window (read live)
    status, body = h.view()
    assert body["error_count"] == 1234 + 321 + 66
    assert body["client_error_count"] == 777
    assert body["success_count"] == 2510
    assert body["total_requests"] == 1234 + 321 + 66 + 777 + 2510
    assert body["error_rate_percent"] == round(100 * 1621 / 4908, 2)
    assert body["window_seconds"] == 300
    assert body["top_routes"][0] == {"route": "/items/{item_id}", "errors": 1300, "client_errors": 777,
                                     "requests": 1300 + 777 + 2500}  # fmt: skip
    assert body["top_routes"][1]["route"] == "/upload"
    assert status is Status.DEGRADED


def test_old_requests_leave_the_window(h: Harness) -> None:
    h.at(0)
    h.request(500, n=1500)
    h.at(10)
    h.request(500, n=7)
    h.request(200, n=3)
    h.at(200)
    _, body = h.view()
    assert body["error_count"] == 1507  # both batches inside 300 s
    for t in range(205, 320, 5):  # the sampler keeps ticking
        h.at(t)
    _, body = h.view()
    # the window now starts after the 10 s snapshot: the first batch is out, the second still in
    assert (body["error_count"], body["success_count"]) == (7, 3)
    assert 300 <= body["covered_seconds"] <= 305
    for t in range(320, 520, 5):
        h.at(t)
    _, body = h.view()
    assert body["total_requests"] == 0
    assert body["error_rate_percent"] == 0


def test_statuses_as_strings_and_raised_requests_count_as_errors(h: Harness) -> None:
    h.at(0)
    # another instrumentation (or a converted path) may carry the status as a string
    h.histogram.record(0.1, {"http.route": "/a", "http.response.status_code": "502", "http.request.method": "GET"})
    # raised before a response: no status, error.type is the exception type
    h.histogram.record(0.1, {"http.route": "/a", "error.type": "RuntimeError", "http.request.method": "GET"})
    # no error.type and no status at all: no response was sent
    h.histogram.record(0.1, {"http.route": "/a", "http.request.method": "GET"})
    h.histogram.record(0.1, {"http.route": "/a", "http.response.status_code": "404", "http.request.method": "GET"})
    _, body = h.view()
    assert (body["error_count"], body["client_error_count"], body["success_count"]) == (3, 1, 0)


def test_unmatched_requests_share_one_bucket_and_health_paths_are_not_counted(h: Harness) -> None:
    h.at(0)
    h.request(404, route=None, n=40)
    h.request(500, route=None, n=2)
    h.request(500, route="/api/health/{view}", n=50)
    h.request(200, route="/api/health", n=50)
    h.request(500, route="/api/admin/monitoring/stuck-operations", n=5)
    h.request(200, route="/metrics", n=9)
    h.request(500, route="/api/healthy-looking-route", n=1)  # not under /api/health/: counted
    _, body = h.view()
    assert body["total_requests"] == 43
    assert {r["route"] for r in body["top_routes"]} == {request_errors.UNMATCHED, "/api/healthy-looking-route"}
    assert body["top_routes"][0] == {"route": "(unmatched)", "errors": 2, "client_errors": 40, "requests": 42}


def test_degraded_only_above_threshold_with_enough_requests() -> None:
    h = Harness({"OTEL_RELIABILITY_ERROR_RATE_THRESHOLD": "5", "OTEL_RELIABILITY_ERROR_MIN_REQUESTS": "20"})
    h.at(0)
    h.request(500, n=1)
    h.request(200, n=1)  # 50% of 2 requests at 3 a.m.
    status, body = h.view()
    assert body["error_rate_percent"] == 50.0 and status is Status.HEALTHY
    h.request(200, n=18)  # 1 in 20 = 5%: at, not above, the threshold
    status, _ = h.view()
    assert status is Status.HEALTHY
    h.request(500, n=1)  # 2 in 21 = 9.5%
    status, body = h.view()
    assert body["total_requests"] == 21 and status is Status.DEGRADED
    h.provider.shutdown()


def test_requests_before_the_first_snapshot_are_in_the_window(h: Harness) -> None:
    h.clock.now = 1001.0
    h.request(500, n=5)
    h.at(5)  # first periodic snapshot
    h.request(500, n=3)
    _, body = h.view()
    assert body["error_count"] == 8


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "error spike" in r.getMessage()]


def test_spike_logs_once_per_episode(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="otel_reliability")
    detector = request_errors.SpikeDetector(h.settings)  # threshold 10 in 60 s
    h.readings.add_listener(detector)
    h.at(0)
    h.request(500, n=9)
    h.request(200, n=100)
    h.at(5)
    assert error_lines(caplog) == [] and not detector.in_spike  # 9 < 10
    h.request(500, route="/upload", n=1)
    h.request(500, route=None, n=5)
    h.at(10)
    lines = error_lines(caplog)
    assert len(lines) == 1
    assert "15 errors in the last 60s" in lines[0]
    assert "/items/{item_id} (9), (unmatched) (5), /upload (1)" in lines[0]
    for t in range(15, 60, 5):  # more errors during the same episode: silence
        h.request(500, n=20)
        h.at(t)
    assert len(error_lines(caplog)) == 1
    for t in range(60, 130, 5):  # errors stop; after 60 s the spike has cleared
        h.at(t)
    assert not detector.in_spike
    assert any("error spike cleared" in r.getMessage() for r in caplog.records)
    h.request(502, route="/upload", n=12)  # a new episode
    h.at(130)
    lines = error_lines(caplog)
    assert len(lines) == 2 and "12 errors" in lines[1] and "/upload (12)" in lines[1]


def test_spike_detector_installs_once_per_readings(h: Harness) -> None:
    first = request_errors.install_spike_detector(h.readings, h.settings)
    assert request_errors.install_spike_detector(h.readings, h.settings) is first
    assert h.readings._listeners.count(first) == 1
