"""What the status page computes from the Readings' window history: the 15-minute error sparkline and how long
a breaker has been open. Real SDK instruments and Readings on a fake clock (the history's steps are in seconds)."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider

from otel_reliability import config, semconv
from otel_reliability.health.fastapi import _prefers_html
from otel_reliability.health.model import CheckContext
from otel_reliability.health.page import model
from otel_reliability.readings import Readings


class FakeClock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


def setup() -> tuple[FakeClock, Readings, MeterProvider, CheckContext]:
    clock = FakeClock()
    settings = config.load({})
    readings = Readings(background=False, clock=clock, cache_seconds=0.0, retention=360)
    provider = MeterProvider(metric_readers=[readings])
    return clock, readings, provider, CheckContext(readings, settings)


def test_the_sparkline_puts_each_error_in_its_30_s_bar_over_15_minutes() -> None:
    clock, readings, provider, ctx = setup()
    duration = provider.get_meter("t").create_histogram(semconv.METRIC_HTTP_SERVER_REQUEST_DURATION, unit="s")
    ok = {semconv.ATTR_HTTP_ROUTE: "/items/{id}", semconv.ATTR_HTTP_RESPONSE_STATUS_CODE: 200}
    bad = {semconv.ATTR_HTTP_ROUTE: "/items/{id}", semconv.ATTR_HTTP_RESPONSE_STATUS_CODE: 503}
    start = clock.now
    for second in range(1000):
        duration.record(0.01, ok)
        if 1000 - 600 <= second < 1000 - 570:  # 10 minutes ago: one error a second for 30 s
            duration.record(0.01, bad)
        readings.tick()
        clock.now += 1
    assert clock.now - start == 1000
    spark = model.sparkline(ctx)
    bars = spark["bars"]
    assert len(bars) == 30 and None not in bars  # the history reaches 15 minutes back
    assert sum(b["requests"] for b in bars) in range(900 + 30 - 31, 900 + 30 + 31)
    erring = [i for i, b in enumerate(bars) if b["errors"]]
    assert sum(b["errors"] for b in bars) == 30
    assert erring and all(10 <= i <= 11 for i in erring)  # bars 10-11 of 30 (oldest first): ~10 minutes ago
    assert all(25 <= b["requests"] <= 65 for b in bars)  # ~30 requests (+ errors) per bar, within a step


def test_a_young_history_leaves_the_older_bars_empty() -> None:
    clock, readings, _provider, ctx = setup()
    for _ in range(120):
        readings.tick()
        clock.now += 1
    bars = model.sparkline(ctx)["bars"]
    assert bars[:25] == [None] * 25 and all(b is not None for b in bars[-3:])


def test_open_for_is_the_age_of_the_last_opening_within_the_historys_step() -> None:
    clock, readings, provider, ctx = setup()
    transitions = provider.get_meter("t").create_counter(semconv.METRIC_CIRCUIT_BREAKER_TRANSITIONS)
    opened = {semconv.ATTR_CIRCUIT_BREAKER_NAME: "gemini", semconv.ATTR_CIRCUIT_BREAKER_STATE: "open"}
    for second in range(1000):
        if second in (100, 1000 - 125):  # opened twice; the last time 125 s ago
            transitions.add(1, opened)
        readings.tick()
        clock.now += 1
    age = model._open_for(ctx, "gemini")
    assert not age["at_least"] and 125 - 1 <= age["seconds"] <= 125 + 5
    assert model._open_for(ctx, "payments") == {"seconds": 900, "at_least": True}  # not opened in 15 min


def test_a_browser_gets_html_and_probes_and_scripts_get_json() -> None:
    assert _prefers_html("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
    assert _prefers_html("text/html")
    for accept in ("", "*/*", "application/json", "text/html;q=0.5, application/json", "text/html;q=0", "text/*"):
        assert not _prefers_html(accept), accept
