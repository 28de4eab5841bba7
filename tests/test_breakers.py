"""Circuit breaker instrumentation in-process: outcomes, transitions, spans, registry, health, HTTP mapping."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import circuitbreaker
import purgatory
import pybreaker
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.testclient import TestClient

from otel_reliability import config
from otel_reliability.health.model import CheckContext, Status
from otel_reliability.health.views import breakers as view
from otel_reliability.instrumentation._instrumented import is_wrapped
from otel_reliability.instrumentation.breakers import BreakersInstrumentor, register_breaker, unregister_breaker
from otel_reliability.instrumentation.breakers import circuitbreaker as circuitbreaker_adapter
from otel_reliability.instrumentation.breakers import purgatory as purgatory_adapter
from otel_reliability.instrumentation.breakers import pybreaker as pybreaker_adapter
from otel_reliability.instrumentation.breakers._registry import BREAKERS
from otel_reliability.readings import Readings
from tests.support import breakers_instrumented


class Boom(Exception):
    pass


class Business(Exception):
    pass


def behave(kind: str) -> str:
    """A guarded dependency: ``boom`` is a failure the breaker counts, ``business`` an error it must not count."""
    if kind == "boom":
        raise Boom("down")
    if kind == "business":
        raise Business("not a failure of the dependency")
    return "ok"


def boom() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


@pytest.fixture
def readings() -> Iterator[Readings]:
    reader = Readings(background=False, cache_seconds=0.0)
    provider = MeterProvider(metric_readers=[reader])
    reader.test_provider = provider  # type: ignore[attr-defined]
    try:
        with breakers_instrumented(provider):
            yield reader
    finally:
        config.set_settings(config.load({}))


def reinstrument(reader: Readings) -> None:
    BreakersInstrumentor().instrument(meter_provider=reader.test_provider)  # type: ignore[attr-defined]


@pytest.fixture
def spans() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter


def health(reader: Readings, **env: str) -> Any:
    settings = config.load({f"OTEL_RELIABILITY_{k.upper()}": v for k, v in env.items()})
    return view.compute(CheckContext(readings=reader, settings=settings))


def entry(reader: Readings, name: str) -> dict[str, Any]:
    return dict(health(reader).body["breakers"][name])


def attempt(fn: Any, *args: Any) -> str:
    try:
        fn(*args)
    except Exception as exc:
        return type(exc).__name__
    return "ok"


# --- pybreaker --------------------------------------------------------------------------------------------------
def test_pybreaker_outcomes_trip_is_failure_refusal_is_rejected_excluded_is_success(readings: Readings) -> None:
    # Open for a minute while the refusals are counted (a slow machine must not see it go half-open), then a
    # short timeout, slept past by a wide margin, for the half-open part.
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=60, exclude=[Business], name="pb")
    assert entry(readings, "pb")["state"] == "closed"  # known before its first call

    def business() -> None:
        raise Business("not the dependency's fault")

    results = [attempt(breaker.call, f) for f in (ok, business, boom, boom, ok, ok)]
    assert results == ["ok", "Business", "Boom", "CircuitBreakerError", "CircuitBreakerError", "CircuitBreakerError"]
    found = entry(readings, "pb")
    assert found["calls"] == {"success": 2, "failure": 2, "rejected": 2}
    assert found["state"] == "open" and found["failure_count"] == 2
    assert found["transitions"] == {"closed": 0, "open": 1, "half_open": 0}

    # pybreaker enters half-open lazily, by the first call after the timeout; until then the breaker is reported
    # half_open (the next call is a trial), though no transition has happened yet (tests/test_breakers_idle.py).
    breaker.reset_timeout = 0.05
    time.sleep(0.2)
    assert entry(readings, "pb")["state"] == "half_open"
    assert entry(readings, "pb")["transitions"] == {"closed": 0, "open": 1, "half_open": 0}
    assert attempt(breaker.call, boom) == "CircuitBreakerError"  # failed trial: a failure, opened again
    found = entry(readings, "pb")
    assert found["calls"] == {"success": 2, "failure": 3, "rejected": 2}
    assert found["transitions"] == {"closed": 0, "open": 2, "half_open": 1}
    time.sleep(0.2)
    assert attempt(breaker.call, ok) == "ok"
    assert entry(readings, "pb")["transitions"] == {"closed": 1, "open": 2, "half_open": 2}


def test_pybreaker_decorator_and_calling_context_manager_count(readings: Readings) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, name="forms")

    @breaker
    def decorated() -> str:
        return "ok"

    decorated()
    with breaker.calling():
        pass
    with pytest.raises(pybreaker.CircuitBreakerError), breaker.calling():  # trips (fail_max=1)
        raise Boom("down")
    with pytest.raises(pybreaker.CircuitBreakerError), breaker.calling():  # refused at entry
        raise AssertionError("the body of a refused call never runs")
    assert entry(readings, "forms")["calls"] == {"success": 2, "failure": 1, "rejected": 1}


def test_pybreaker_spans_carry_name_state_rejection_and_transition(
    readings: Readings, spans: tuple[Any, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, name="gemini")
    with tracer.start_as_current_span("trip"):
        attempt(breaker.call, boom)
    with tracer.start_as_current_span("refused"):
        attempt(breaker.call, ok)
    trip, refused = exporter.get_finished_spans()
    assert trip.attributes["circuit_breaker.name"] == "gemini"
    assert trip.attributes["circuit_breaker.state"] == "closed"
    (change,) = [e for e in trip.events if e.name == "circuit_breaker.state_change"]
    assert change.attributes == {
        "circuit_breaker.name": "gemini",
        "circuit_breaker.state": "open",
        "circuit_breaker.previous_state": "closed",
    }
    assert [e.name for e in refused.events] == ["circuit_breaker.rejected"]
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes["error.type"] == "CircuitBreakerError"
    assert refused.attributes["circuit_breaker.state"] == "open"


def test_unnamed_pybreaker_is_named_after_the_line_that_created_it(readings: Readings) -> None:
    line = 1 + __import__("inspect").currentframe().f_lineno  # type: ignore[union-attr]
    breaker = pybreaker.CircuitBreaker()
    assert f"{__name__}:{line}" in health(readings).body["breakers"]
    del breaker


def test_breaker_created_before_instrumentation_is_adopted_by_register_breaker(readings: Readings) -> None:
    BreakersInstrumentor().uninstrument()
    early = pybreaker.CircuitBreaker(fail_max=1, name="early")
    reinstrument(readings)
    assert "early" not in health(readings).body["breakers"]  # pybreaker keeps no registry: unknowable
    register_breaker("early-renamed", early)
    attempt(early.call, ok)
    assert entry(readings, "early-renamed")["calls"] == {"success": 1, "failure": 0, "rejected": 0}


def test_garbage_collected_breaker_disappears_from_metrics_and_health(readings: Readings) -> None:
    breaker = pybreaker.CircuitBreaker(name="temporary")
    attempt(breaker.call, ok)
    assert "temporary" in health(readings).body["breakers"]
    del breaker
    gc.collect()
    assert "temporary" not in health(readings).body["breakers"]
    assert not readings.snapshot(max_age=0).points("circuit_breaker.calls", {"circuit_breaker.name": "temporary"})


def test_two_live_breakers_with_one_name_are_told_apart(readings: Readings) -> None:
    first, second = pybreaker.CircuitBreaker(name="twin"), pybreaker.CircuitBreaker(name="twin")
    attempt(second.call, ok)
    found = health(readings).body["breakers"]
    assert found["twin"]["calls"]["success"] == 0 and found["twin#2"]["calls"]["success"] == 1
    del first, second


# --- circuitbreaker ---------------------------------------------------------------------------------------------
class FakeClock:
    """A library's clock under the test's control: a state that depends on time changes when the test says."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def test_circuitbreaker_outcomes_fallback_and_computed_half_open(
    readings: Readings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(time.monotonic())
    monkeypatch.setattr(circuitbreaker, "monotonic", clock)  # the library's clock for opened-at and half-open

    guarded = circuitbreaker.circuit(failure_threshold=2, recovery_timeout=0.3, expected_exception=Boom, name="cb")(
        behave
    )

    served = []
    fallback_breaker = circuitbreaker.CircuitBreaker(
        failure_threshold=1, recovery_timeout=60, name="with-fallback", fallback_function=lambda: served.append(1)
    )
    results = [attempt(guarded, k) for k in ("ok", "business", "boom", "boom", "ok")]
    assert results == ["ok", "Business", "Boom", "Boom", "CircuitBreakerError"]
    found = entry(readings, "cb")
    assert found["calls"] == {"success": 2, "failure": 2, "rejected": 1}
    assert found["state"] == "open" and found["fail_max"] == 2 and found["reset_timeout"] == 0.3
    clock.now += 0.29
    assert entry(readings, "cb")["state"] == "open"
    clock.now += 0.02
    assert entry(readings, "cb")["state"] == "half_open"  # computed by the library from the clock
    assert attempt(guarded, "ok") == "ok"
    assert entry(readings, "cb")["transitions"] == {"closed": 1, "open": 1, "half_open": 1}

    wrapped = fallback_breaker(lambda: boom())
    attempt(wrapped)
    assert wrapped() is None and served == [1]  # refused, served by the fallback: still a rejected call
    assert entry(readings, "with-fallback")["calls"] == {"success": 0, "failure": 1, "rejected": 1}


def test_circuitbreaker_async_and_breakers_decorated_before_instrumentation(readings: Readings) -> None:
    BreakersInstrumentor().uninstrument()

    @circuitbreaker.circuit(failure_threshold=1, recovery_timeout=60, name="decorated-early")
    async def early() -> None:
        raise Boom("down")

    reinstrument(readings)
    # CircuitBreakerMonitor knows it: found at collection, counted from its next call on.
    assert entry(readings, "decorated-early")["state"] == "closed"
    for _ in range(2):
        with pytest.raises((Boom, circuitbreaker.CircuitBreakerError)):
            asyncio.run(early())
    found = entry(readings, "decorated-early")
    assert found["calls"] == {"success": 0, "failure": 1, "rejected": 1} and found["state"] == "open"


# --- purgatory ----------------------------------------------------------------------------------------------
def test_purgatory_sync_factory_exclude_is_success_and_lazy_half_open(
    readings: Readings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from purgatory.domain import model

    clock = FakeClock(time.time())
    monkeypatch.setattr(model, "time", types.SimpleNamespace(time=clock))  # the library's clock for its ttl
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=2, default_ttl=0.3, exclude=[Business])

    guarded = factory("pg")(behave)

    results = [attempt(guarded, k) for k in ("ok", "business", "boom", "boom", "ok")]
    assert results == ["ok", "Business", "Boom", "Boom", "OpenedState"]
    found = entry(readings, "pg")
    assert found["calls"] == {"success": 2, "failure": 2, "rejected": 1}
    assert found["state"] == "open" and found["failure_count"] == 2 and found["fail_max"] == 2
    clock.now += 0.29
    assert attempt(guarded, "ok") == "OpenedState"  # not yet
    clock.now += 0.02
    assert attempt(guarded, "ok") == "ok"
    found = entry(readings, "pg")
    assert found["state"] == "closed" and found["failure_count"] == 0
    assert found["transitions"] == {"closed": 1, "open": 1, "half_open": 1}


def test_purgatory_async_factory_and_factory_garbage_collected(readings: Readings) -> None:
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=60)

    async def scenario(breakers: purgatory.AsyncCircuitBreakerFactory) -> list[str]:
        out = []
        for _ in range(2):
            try:
                async with await breakers.get_breaker("async-pg"):
                    raise Boom("down")
            except Exception as exc:
                out.append(type(exc).__name__)
        return out

    assert asyncio.run(scenario(factory)) == ["Boom", "OpenedState"]
    assert entry(readings, "async-pg")["calls"] == {"success": 0, "failure": 1, "rejected": 1}
    del factory
    gc.collect()
    assert "async-pg" not in health(readings).body["breakers"]


# --- concurrency ------------------------------------------------------------------------------------------------
def _hammer(call: Any, threads: int = 8, per_thread: int = 200) -> None:
    barrier = threading.Barrier(threads)

    def worker(index: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            fail = (i + 5 * index) % 40 < 20  # runs of failures that trip it, runs of successes that close it
            with contextlib.suppress(Exception):  # the breaker's errors: counted, not needed here
                call(fail)

    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(30)


@pytest.mark.parametrize("library", ["pybreaker", "circuitbreaker", "purgatory"])
def test_eight_threads_through_one_tripping_breaker_counts_add_up(readings: Readings, library: str) -> None:
    def dependency(fail: bool) -> None:
        time.sleep(0)  # let the threads interleave
        if fail:
            raise Boom("down")

    if library == "pybreaker":
        breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=0.001, name="shared")

        def call(fail: bool) -> None:
            breaker.call(dependency, fail)
    elif library == "circuitbreaker":
        call = circuitbreaker.circuit(failure_threshold=5, recovery_timeout=0.001, name="shared")(dependency)
    else:
        factory = purgatory.SyncCircuitBreakerFactory(default_threshold=5, default_ttl=0.001)
        call = factory("shared")(dependency)

    _hammer(call)
    found = entry(readings, "shared")
    assert sum(found["calls"].values()) == 8 * 200, found
    assert found["calls"]["failure"] > 0 and found["calls"]["success"] > 0
    assert found["calls"]["rejected"] > 0 and found["transitions"]["open"] >= 1


# --- register_breaker -------------------------------------------------------------------------------------------
class HandWritten:
    """A hand-written breaker as apps write them: ``get_state()`` returns a dict with a ``state`` key."""

    def __init__(self) -> None:
        self.state = "closed"
        self.failures = 0

    def get_state(self) -> dict[str, Any]:
        return {"state": self.state, "failure_count": self.failures, "fail_max": 5, "reset_timeout": 60}


def test_register_breaker_with_a_hand_written_object(readings: Readings) -> None:
    breaker = HandWritten()
    handle = register_breaker("gcs", breaker)
    assert entry(readings, "gcs") | {"transitions": None} == {
        "state": "closed", "failure_count": 0, "fail_max": 5, "reset_timeout": 60, "critical": False,
        "calls": None, "transitions": None, "workers_by_state": {"closed": 1},
    }  # fmt: skip
    breaker.state, breaker.failures = "OPEN", 5
    assert entry(readings, "gcs")["state"] == "open"
    assert entry(readings, "gcs")["transitions"]["open"] == 1  # seen at collection
    handle.record_call("rejected")
    assert entry(readings, "gcs")["calls"] == {"success": 0, "failure": 0, "rejected": 1}
    del breaker, handle
    gc.collect()
    assert "gcs" not in health(readings).body["breakers"]  # held weakly


def test_register_breaker_with_a_callable_and_with_a_raising_getter(readings: Readings) -> None:
    status = {"value": "half-open"}
    register_breaker("billing", lambda: status["value"])  # a lambda is held strongly
    gc.collect()
    assert entry(readings, "billing")["state"] == "half_open"

    def broken() -> str:
        raise ConnectionError("redis down")

    register_breaker("flaky", broken)
    register_breaker("weird", lambda: "sideways")
    result = health(readings)
    assert result.body["breakers"]["flaky"]["state"] == "unknown"
    assert result.body["breakers"]["weird"]["state"] == "unknown"
    assert result.body["unknown_count"] == 2
    assert result.status is Status.DEGRADED  # billing is half-open; unknown alone does not degrade
    status["value"] = "closed"
    assert health(readings).status is Status.HEALTHY
    assert unregister_breaker("billing") == 1
    assert "billing" not in health(readings).body["breakers"]
    with pytest.raises(TypeError):
        register_breaker("nothing", 42)


# --- health status ----------------------------------------------------------------------------------------------
def test_health_degraded_while_open_unhealthy_while_a_critical_one_is_open(readings: Readings) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, name="assemblyai")
    assert health(readings).status is Status.HEALTHY
    attempt(breaker.call, boom)
    result = health(readings)
    assert result.status is Status.DEGRADED and result.body["open_count"] == 1
    assert result.summary["open"] == ["assemblyai"]
    critical = health(readings, critical_breakers="gemini,assemblyai")
    assert critical.status is Status.UNHEALTHY and critical.body["critical_open"] == ["assemblyai"]
    breaker.close()
    assert health(readings, critical_breakers="assemblyai").status is Status.HEALTHY


def test_prometheus_names_are_exactly_the_contract_names(readings: Readings) -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry, generate_latest

    prometheus = PrometheusMetricReader()
    registry = CollectorRegistry()
    registry.register(prometheus._collector)
    BreakersInstrumentor().uninstrument()
    BreakersInstrumentor().instrument(meter_provider=MeterProvider(metric_readers=[prometheus]))
    breaker = pybreaker.CircuitBreaker(name="named")
    text = generate_latest(registry).decode()
    names = {line.split("{")[0] for line in text.splitlines() if line.startswith("circuit_breaker")}
    assert names == {
        "circuit_breaker_state", "circuit_breaker_calls_total", "circuit_breaker_transitions_total",
        "circuit_breaker_consecutive_failures", "circuit_breaker_failure_threshold",
        "circuit_breaker_reset_timeout_seconds",
    }  # fmt: skip
    del breaker


def _patched_methods() -> dict[tuple[type, str], Any]:
    """Every library method the breaker instrumentor wraps, as the class holds it now."""
    places = [
        *pybreaker_adapter._patched(),
        (circuitbreaker.CircuitBreaker, "__init__"),
        (circuitbreaker.CircuitBreaker, "__exit__"),
        (circuitbreaker.CircuitBreakerError, "__init__"),
        *purgatory_adapter._patched(),
    ]
    return {(cls, name): cls.__dict__[name] for cls, name in places}


def test_uninstrument_restores_the_libraries_and_silences_the_instruments(readings: Readings) -> None:
    wrapped = _patched_methods()
    assert all(is_wrapped(cls, name) for cls, name in wrapped)
    breaker = pybreaker.CircuitBreaker(name="before")
    BreakersInstrumentor().uninstrument()
    restored = _patched_methods()
    # Each class holds the very function it held before instrumentation: the one the wrapper wrapped.
    assert [place for place in restored if is_wrapped(*place)] == []
    assert all(restored[place] is method.__wrapped__ for place, method in wrapped.items())
    assert not breaker.listeners
    assert not readings.snapshot(max_age=0).points("circuit_breaker.state")
    # Nothing is counted any more: a circuitbreaker call and a purgatory call after uninstrument leave no trace.
    cb = circuitbreaker.CircuitBreaker(name="after", failure_threshold=1)
    attempt(cb.call, boom)
    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=1)
    assert attempt(factory("after-p")(boom)) == "Boom"
    assert BREAKERS.lookup(cb) is None and not BREAKERS.tracked("purgatory")
    reinstrument(readings)
    assert all(is_wrapped(cls, name) for cls, name in _patched_methods())
    for library in (pybreaker_adapter, circuitbreaker_adapter, purgatory_adapter):
        library.instrument(BREAKERS)  # again: wraps nothing twice
    assert all(not hasattr(method.__wrapped__, "__wrapped__") for method in _patched_methods().values())


def test_a_circuitbreaker_fallback_is_counted_and_restored(readings: Readings) -> None:
    def fallback() -> str:
        return "cached"

    breaker = circuitbreaker.CircuitBreaker(name="with-fallback", failure_threshold=1, fallback_function=fallback)
    guarded = breaker(boom)
    assert attempt(guarded) == "Boom"
    assert guarded() == "cached"  # refused, served by the fallback: rejected
    assert entry(readings, "with-fallback")["calls"] == {"success": 0, "failure": 1, "rejected": 1}
    assert is_wrapped(breaker, "_fallback_function")
    BreakersInstrumentor().uninstrument()
    assert breaker._fallback_function is fallback
    reinstrument(readings)


# --- HTTP mapping -----------------------------------------------------------------------------------------------
def _app(breaker: pybreaker.CircuitBreaker, own_handler: bool = False) -> FastAPI:
    app = FastAPI()

    @app.get("/call")
    def call() -> str:
        return str(breaker.call(boom))

    if own_handler:

        @app.exception_handler(pybreaker.CircuitBreakerError)
        async def mine(request: Any, exc: Exception) -> JSONResponse:
            return JSONResponse({"mine": True}, status_code=429)

    return app


def test_http_mapping_turns_an_open_breaker_into_503_with_retry_after(readings: Readings) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=30, name="payments")
    client = TestClient(_app(breaker), raise_server_exceptions=False)
    tripped = client.get("/call")  # the call that trips the breaker: CircuitBreakerError too
    assert tripped.status_code == 503 and tripped.headers["retry-after"] in ("29", "30")
    refused = client.get("/call")
    assert refused.status_code == 503 and 28 <= int(refused.headers["retry-after"]) <= 30
    assert refused.json()["error"] | {"message": None} == {
        "code": "dependency_unavailable", "message": None, "retryable": True, "dependency": "payments",
    }  # fmt: skip


def test_http_mapping_yields_to_the_apps_own_handler_and_can_be_switched_off(readings: Readings) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=30, name="payments")
    attempt(breaker.call, boom)
    assert TestClient(_app(breaker, own_handler=True)).get("/call").json() == {"mine": True}

    BreakersInstrumentor().uninstrument()
    config.set_settings(config.load({"OTEL_RELIABILITY_BREAKER_HTTP_MAPPING": "false"}))
    reinstrument(readings)
    assert TestClient(_app(breaker), raise_server_exceptions=False).get("/call").status_code == 500
