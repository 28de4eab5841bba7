"""A breaker whose reset timeout has passed without a call is half-open (the next call is a trial), on health, on
the scrape and on the status page, for pybreaker, circuitbreaker and purgatory: an idle service's
``CircuitBreakerOpen`` clears.

pybreaker and purgatory only enter half-open on the first call after the timeout; circuitbreaker computes it.
Either way nothing calls the breaker of an idle service, so "open" would stay on the scrape for ever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import circuitbreaker
import purgatory
import pybreaker
import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from otel_reliability import config
from otel_reliability.health.model import CheckContext
from otel_reliability.health.views import breakers as view
from otel_reliability.readings import Readings
from tests.support import breakers_instrumented

TIMEOUT = 2.0  # long enough for the three "open" reads on a loaded machine; the test waits it out once


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("down")


class Stack:
    """One MeterProvider with the Readings (health) and a Prometheus reader (the scrape)."""

    def __init__(self) -> None:
        self.readings = Readings(background=False, cache_seconds=0.0)
        self.prometheus = PrometheusMetricReader()
        self.registry = CollectorRegistry()
        self.registry.register(self.prometheus._collector)
        self.provider = MeterProvider(metric_readers=[self.readings, self.prometheus])

    def health_state(self, name: str) -> str:
        settings = config.load({})
        body = view.compute(CheckContext(readings=self.readings, settings=settings)).body
        return str(body["breakers"][name]["state"])

    def page_state(self, name: str) -> str:
        """The state the status page (GET {health}/ui) shows on the breaker's card."""
        import asyncio
        import re

        from otel_reliability.health.model import HealthRegistry, HealthView
        from otel_reliability.health.page import model, render

        registry = HealthRegistry()
        registry.add_view(HealthView("circuit-breakers", view.compute))
        ctx = CheckContext(readings=self.readings, settings=config.load({}))
        html = render.sections(asyncio.run(model.gather(ctx, registry, {})))
        found = re.search(rf'class="breaker b-(\w+)" data-breaker="{name}"', html)
        assert found is not None, html
        return found.group(1)

    def scraped_state(self, name: str) -> str:
        """The state whose ``circuit_breaker_state`` series is 1 on the scrape."""
        text = generate_latest(self.registry).decode()
        current = [
            line.split('circuit_breaker_state="')[1].split('"')[0]
            for line in text.splitlines()
            if line.startswith("circuit_breaker_state{")
            and f'circuit_breaker_name="{name}"' in line
            and line.endswith(" 1.0")
        ]
        assert len(current) == 1, text
        return current[0]


@pytest.fixture
def stack() -> Iterator[Stack]:
    built = Stack()
    with breakers_instrumented(built.provider):
        yield built


def _attempt(call: Callable[[], Any]) -> str:
    try:
        call()
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def _pybreaker() -> tuple[Callable[[Callable[[], Any]], Any], Any]:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=TIMEOUT, name="idle")
    return breaker.call, breaker


def _circuitbreaker() -> tuple[Callable[[Callable[[], Any]], Any], Any]:
    breaker = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=TIMEOUT, name="idle")
    return (lambda fn: breaker.call(fn)), breaker


def _purgatory() -> tuple[Callable[[Callable[[], Any]], Any], Any]:
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=1, default_ttl=TIMEOUT)

    def call(fn: Callable[[], Any]) -> Any:
        with factory.get_breaker("idle"):
            return fn()

    return call, factory


@pytest.mark.parametrize("make", [_pybreaker, _circuitbreaker, _purgatory], ids=lambda m: m.__name__.strip("_"))
def test_an_idle_open_breaker_is_half_open_once_its_reset_timeout_passed(stack: Stack, make: Any) -> None:
    call, keep = make()
    assert _attempt(lambda: call(boom)) in {"Boom", "CircuitBreakerError"}  # the failure that trips it
    assert stack.health_state("idle") == "open" and stack.scraped_state("idle") == "open"
    assert stack.page_state("idle") == "open"

    time.sleep(TIMEOUT + 0.5)  # nobody calls: the service is idle
    assert stack.health_state("idle") == "half_open"
    assert stack.scraped_state("idle") == "half_open"
    assert stack.page_state("idle") == "half_open"

    assert _attempt(lambda: call(lambda: "fine")) == "ok"  # the trial succeeds: closed
    assert stack.health_state("idle") == "closed" and stack.scraped_state("idle") == "closed"
    del keep


def test_a_breaker_still_inside_its_reset_timeout_stays_open(stack: Stack) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, name="recent")
    assert _attempt(lambda: breaker.call(boom)) == "CircuitBreakerError"
    time.sleep(0.2)
    assert stack.health_state("recent") == "open" and stack.scraped_state("recent") == "open"
