"""examples/minimal_app.py under opentelemetry-instrument: the error-rate and resources endpoints agree with
the :9464 scrape and with /proc, and health/metrics requests are not counted."""

from __future__ import annotations

import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support import OtlpReceiver, get_json, http, scrape

COUNT = "http_server_request_duration_seconds_count"
# Only the instrumentors these tests are about (others are developed in parallel and tested on their own).
ENV = {
    "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "reliability_breakers,reliability_operations,reliability_pool,"
    "reliability_tempfiles"
}

# path -> how many times; (route template, status) as the app answers them
TRAFFIC = {
    "/items/1": 700,  # 200
    "/items/500": 260,  # 500 raised as HTTPException
    "/items/404": 120,  # 404 on a matched route
    "/crash": 40,  # unhandled RuntimeError -> 500
    "/no/such/path": 60,  # 404, no route
    "/items/abc": 20,  # 422 validation error
}
EXPECTED = {"errors": 260 + 40, "client_errors": 120 + 60 + 20, "successes": 700}


def drive(base: str) -> None:
    paths = [p for p, n in TRAFFIC.items() for _ in range(n)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda p: http("GET", base + p)[0], paths))
    assert statuses.count(500) == EXPECTED["errors"]


def scraped_counts(metrics: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, Any]:
    errors = client = ok = 0
    routes = set()
    for labels, value in metrics.get(COUNT, []):
        routes.add(labels.get("http_route", ""))
        status = int(labels.get("http_response_status_code", "0") or 0)
        if labels.get("error_type") or status >= 500:
            errors += int(value)
        elif 400 <= status < 500:
            client += int(value)
        else:
            ok += int(value)
    return {"errors": errors, "client_errors": client, "successes": ok, "routes": routes}


def spans_exported_to(receiver: OtlpReceiver) -> dict[str, str]:
    """Traces exported by OTLP: the distro then keeps the contrib HTTP layer (issue 17)."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint + "/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
    }


@pytest.mark.parametrize("spans", ["not exported", "exported"])
def test_error_rate_equals_the_scrape_and_skips_health_paths(
    app_factory: Any, tmp_path: Path, receiver: OtlpReceiver, spans: str
) -> None:
    layer_env = spans_exported_to(receiver) if spans == "exported" else {}
    app = app_factory(
        "minimal_app:app",
        env={
            **ENV,
            **layer_env,
            "OTEL_RELIABILITY_SNAPSHOT_INTERVAL": "0.5",
            "OTEL_RELIABILITY_ERROR_SPIKE_THRESHOLD": "10",
        },
    )
    drive(app.url)
    for _ in range(30):  # health and metrics traffic must not count
        assert http("GET", app.url + "/api/health")[0] in (200, 503)
        assert http("GET", app.url + "/api/health/error-rate")[0] == 200
        scrape(app.metrics_port)

    status, body = get_json(app.url + "/api/health/error-rate")
    metrics = scrape(app.metrics_port)
    from_scrape = scraped_counts(metrics)

    assert status == 200
    assert body["error_count"] == from_scrape["errors"] == EXPECTED["errors"]
    assert body["client_error_count"] == from_scrape["client_errors"] == EXPECTED["client_errors"]
    assert body["success_count"] == from_scrape["successes"] == EXPECTED["successes"]
    assert body["total_requests"] == sum(EXPECTED.values()) == sum(TRAFFIC.values())
    assert body["error_rate_percent"] == round(100 * 300 / 1200, 2)
    assert body["window_seconds"] == 300
    assert {r["route"]: r["errors"] for r in body["top_routes"]} == {"/items/{item_id}": 260, "/crash": 40}
    assert any(r["route"] == "(unmatched)" for r in body["top_routes"]) is False  # no errors there
    # health/metrics paths never reached the histogram; no raw path became a label
    assert not any(r.startswith("/api/health") or r == "/metrics" for r in from_scrape["routes"])
    assert "/no/such/path" not in str(metrics.get(COUNT))
    status, aggregate = get_json(app.url + "/api/health")
    assert aggregate["checks"]["error-rate"]["status"] == "degraded"  # 25% > 1% with 1200 requests

    # the spike detector ran in the sampler thread: exactly one ERROR line for this episode
    def spike_lines() -> list[str]:
        return [line for line in app.log().splitlines() if "error spike:" in line]

    deadline = time.monotonic() + 5
    while not spike_lines() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # a few more snapshots of the same episode
    assert len(spike_lines()) == 1, app.log()[-3000:]
    # logged at the first snapshot that saw >= 10 errors, while the traffic was still running
    match = re.search(r"error spike: (\d+) errors in the last 60s .* top routes: (.*)$", spike_lines()[0])
    assert match and 10 <= int(match.group(1)) <= EXPECTED["errors"], spike_lines()
    assert "/items/{item_id} (" in match.group(2) or "/crash (" in match.group(2)


def vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_resources_endpoint_is_fast_and_matches_proc_and_the_scrape(app_factory: Any) -> None:
    app = app_factory("minimal_app:app", env=ENV)
    get_json(app.url + "/api/health/resources")  # first call: routes and views warm
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        status, body = get_json(app.url + "/api/health/resources")
        timings.append(time.perf_counter() - started)
        assert status == 200
    assert statistics.median(timings) < 0.05, timings
    assert max(timings) < 0.5, timings

    rss = vm_rss(app.proc.pid)  # opentelemetry-instrument execs uvicorn: same pid
    assert body["memory_mb"] * 1024 * 1024 == pytest.approx(rss, rel=0.10)
    assert 0 < body["memory_percent"] < 100 and body["memory_limit_mb"] > body["memory_mb"]
    assert body["threads"] >= 1 and body["open_files"] >= 3 and body["cpu_percent"] >= 0

    metrics = scrape(app.metrics_port)
    for name in (
        "process_cpu_utilization",
        "process_memory_usage_bytes",
        "process_memory_limit_bytes",
        "process_unix_file_descriptor_count",
        "process_thread_count",
    ):
        assert name in metrics, sorted(metrics)
    assert "process_cpu_utilization_ratio" not in metrics
    assert metrics["process_memory_limit_bytes"][0][1] / 1024 / 1024 == pytest.approx(body["memory_limit_mb"], abs=0.01)
