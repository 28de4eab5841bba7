"""Zero-code: each breaker library in a real uvicorn under opentelemetry-instrument.

One full cycle per library (closed -> open -> rejected calls -> half-open after the timeout -> closed after a
success), with ``/metrics`` on the Prometheus port and ``/api/health/circuit-breakers`` compared number for
number at each quiet moment.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support import ROOT, AppProcess, get_json, http, scrape, series_value

pytestmark = pytest.mark.integration

APP_DIR = ROOT / "tests" / "apps" / "breakers"
RESET = 1.5


def _call(app: AppProcess) -> tuple[int, dict[str, str], bytes]:
    return http("GET", app.url + "/call")


def _set(app: AppProcess, mode: str) -> None:
    assert http("POST", f"{app.url}/dependency/{mode}")[0] == 200


def _health(app: AppProcess) -> dict[str, Any]:
    status, body = get_json(app.url + "/api/health/circuit-breakers")
    assert status == 200, body
    return body


def _agree(app: AppProcess, name: str) -> dict[str, Any]:
    """Scrape and health agree on every number of breaker ``name``; returns its health entry."""
    time.sleep(0.25)  # past the Readings' snapshot cache: both read the breakers now
    metrics = scrape(app.metrics_port)
    entry = _health(app)["breakers"][name]
    states = {s: series_value(metrics, "circuit_breaker_state", circuit_breaker_name=name, circuit_breaker_state=s)
              for s in ("closed", "open", "half_open")}  # fmt: skip
    current = [s for s, v in states.items() if v == 1]
    assert entry["state"] == (current[0] if current else "unknown"), (states, entry)
    assert sorted(states.values()) in ([0.0, 0.0, 1.0], [0.0, 0.0, 0.0]), states
    for outcome in ("success", "failure", "rejected"):
        scraped = series_value(metrics, "circuit_breaker_calls_total", circuit_breaker_name=name,
                               circuit_breaker_outcome=outcome)  # fmt: skip
        assert scraped == entry["calls"][outcome], (outcome, scraped, entry)
    for state in ("closed", "open", "half_open"):
        scraped = series_value(metrics, "circuit_breaker_transitions_total", circuit_breaker_name=name,
                               circuit_breaker_state=state)  # fmt: skip
        assert scraped == entry["transitions"][state], (state, scraped, entry)
    pairs = {
        "circuit_breaker_consecutive_failures": "failure_count",
        "circuit_breaker_failure_threshold": "fail_max",
        "circuit_breaker_reset_timeout_seconds": "reset_timeout",
    }
    for metric, key in pairs.items():
        assert series_value(metrics, metric, circuit_breaker_name=name) == entry[key], (metric, entry)
    return entry


def _cycle(app: AppProcess, name: str, *, trip_status: int, on_open: Callable[[], None] = lambda: None) -> None:
    _set(app, "ok")
    assert [_call(app)[0] for _ in range(2)] == [200, 200]
    entry = _agree(app, name)
    assert entry["state"] == "closed" and entry["fail_max"] == 3 and entry["reset_timeout"] == RESET

    _set(app, "fail")
    assert [_call(app)[0] for _ in range(3)] == [502, 502, trip_status]
    for _ in range(2):  # refused while open: 503 + Retry-After + the JSON error, not a 500
        status, headers, body = _call(app)
        assert status == 503, body
        retry_after = {k.lower(): v for k, v in headers.items()}["retry-after"]
        assert 0 <= int(retry_after) <= RESET + 1
        error = json.loads(body)["error"]
        assert error["code"] == "dependency_unavailable" and error["retryable"] is True
        assert error["dependency"] == name
        assert "dependency down" not in body.decode()  # never the exception text
    entry = _agree(app, name)
    assert entry["state"] == "open"
    assert entry["calls"] == {"success": 2, "failure": 3, "rejected": 2}
    assert entry["transitions"] == {"closed": 0, "open": 1, "half_open": 0}
    on_open()

    time.sleep(RESET + 0.3)
    _set(app, "ok")
    assert _call(app)[0] == 200  # the trial call after the timeout succeeds
    entry = _agree(app, name)
    assert entry["state"] == "closed" and entry["failure_count"] == 0
    assert entry["calls"] == {"success": 3, "failure": 3, "rejected": 2}
    assert entry["transitions"] == {"closed": 1, "open": 1, "half_open": 1}


def test_pybreaker_zero_code_cycle_with_critical_breaker(app_factory: Any) -> None:
    app = app_factory("pybreaker_app:app", app_dir=APP_DIR, env={"OTEL_RELIABILITY_CRITICAL_BREAKERS": "payments"})

    def critical_open() -> None:
        status, body = get_json(app.url + "/api/health")
        assert status == 503 and body["status"] == "unhealthy", body
        assert body["checks"]["circuit-breakers"]["critical_open"] == ["payments"]
        status, body = get_json(app.url + "/api/health/ready")
        assert status == 503 and body["failing"] == ["circuit-breakers"], body

    # pybreaker raises CircuitBreakerError from the call that trips it: also a 503.
    _cycle(app, "payments", trip_status=503, on_open=critical_open)
    assert get_json(app.url + "/api/health/ready")[0] == 200

    # register_breaker: a hand-written object, and a getter that raises ("unknown", never a 500).
    breakers = _health(app)["breakers"]
    assert breakers["ledger"]["state"] == "closed" and breakers["ledger"]["fail_max"] == 7
    assert breakers["flaky"]["state"] == "unknown"
    metrics = scrape(app.metrics_port)
    assert [series_value(metrics, "circuit_breaker_state", circuit_breaker_name="flaky", circuit_breaker_state=s)
            for s in ("closed", "open", "half_open")] == [0, 0, 0]  # fmt: skip
    assert "Traceback" not in app.log()


def test_circuitbreaker_zero_code_cycle_degrades_health(app_factory: Any) -> None:
    app = app_factory("circuitbreaker_app:app", app_dir=APP_DIR)

    def degraded() -> None:
        status, body = get_json(app.url + "/api/health")
        assert status == 200 and body["status"] == "degraded", body
        assert body["checks"]["circuit-breakers"]["open"] == ["search"]
        assert get_json(app.url + "/api/health/ready")[0] == 200  # not critical: still ready
        # circuitbreaker computes half-open from the clock: visible without any call.
        time.sleep(RESET + 0.1)
        assert _agree(app, "search")["state"] == "half_open"

    # circuitbreaker re-raises the failure that trips it (502 here); only refused calls raise its error.
    _cycle(app, "search", trip_status=502, on_open=degraded)


def test_purgatory_zero_code_cycle_async_factory(app_factory: Any) -> None:
    app = app_factory("purgatory_app:app", app_dir=APP_DIR)
    _cycle(app, "storage", trip_status=502)
